# The Eagle Eye image the Helm chart runs (hardware monitor and diagnosis service). Build from the repository root:
#   docker build -f deploy/helm/images/eagle-eye.Dockerfile -t registry.example.com/ai-platform/eagle-eye:0.1.0 .
# Debian slim, because the hardware monitor's kernel-log fallback runs util-linux's `dmesg`, and NVML (pynvml) and
# DCMI are loaded with the C library's dynamic loader from the driver files the node's runtime provides.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY eagleeye_otel /src/eagleeye_otel
COPY instrumentation /src/instrumentation
COPY receivers /src/receivers
COPY exporters /src/exporters
# Not editable: the image holds an installed package, and the source goes away.
RUN pip install "/src[nvidia]" && rm -rf /src \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin eagle-eye

# The chart runs every container with a read-only root filesystem and an emptyDir on /tmp.
USER 65532:65532
ENTRYPOINT ["eagle-eye"]
CMD ["--help"]
