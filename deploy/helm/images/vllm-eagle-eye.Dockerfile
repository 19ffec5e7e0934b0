# vLLM with Eagle Eye installed: the chart's vllmExample with eagleEye.install=image. Installing the package is all
# the plugin needs: vLLM loads it from the vllm.stat_logger_plugins entry point, in the API-server process.
#   docker build -f deploy/helm/images/vllm-eagle-eye.Dockerfile \
#     --build-arg VLLM_IMAGE=vllm/vllm-openai:v0.32.0 --build-arg EAGLE_EYE=eagle-eye==0.1.0 \
#     -t registry.example.com/ai-platform/vllm-eagle-eye:v0.32.0-eagle-eye0.1.0 .
# EAGLE_EYE is any pip requirement: a release from the package index, or a wheel built with `pip wheel .`.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}
ARG EAGLE_EYE=eagle-eye==0.1.0
RUN python3 -m pip install --no-cache-dir "${EAGLE_EYE}" \
    && python3 -c "from importlib.metadata import entry_points; \
assert [e for e in entry_points(group='vllm.stat_logger_plugins') if e.name == 'eagle_eye']"
