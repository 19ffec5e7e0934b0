#!/usr/bin/env bash
# Install everything from scratch (Eagle Eye, test tools, nats-server, Prometheus, a CPU build of vLLM),
# check style and types, then run every test: unit, integration (real nats-server and Prometheus) and
# end-to-end (a real vLLM engine on CPU). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy --strict"
./scripts/typecheck.sh
echo "==> pytest"
exec .venv/bin/pytest "$@"
