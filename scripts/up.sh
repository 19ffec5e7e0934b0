#!/usr/bin/env bash
# The newcomer's path: install Eagle Eye into .venv and run the local stack (`eagle-eye up`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh --light
exec "${EAGLEEYE_VENV:-.venv}/bin/eagle-eye" up "$@"
