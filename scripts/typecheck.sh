#!/usr/bin/env bash
# mypy --strict over the eagleeye_otel package as it is installed: the component folders (instrumentation/,
# receivers/, exporters/) are mapped into eagleeye_otel.* by pyproject's package-dir, which mypy cannot follow
# through an editable install, so check a tree of links laid out like the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/eagleeye_otel"
for entry in eagleeye_otel/*; do
    ln -s "$PWD/$entry" "$tree/eagleeye_otel/"
done
for component in instrumentation receivers exporters; do
    ln -s "$PWD/$component" "$tree/eagleeye_otel/$component"
done
cd "$tree"
"${MYPY:-$root/.venv/bin/mypy}" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p eagleeye_otel
