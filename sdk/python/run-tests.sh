#!/usr/bin/env bash
# Runs the Python SDK's tests. They start a real `sandpit serve` (so run this as root) from
# $SP_BIN (default target/debug/sandpit of this repository; a relative path is taken from the current directory).
# Makes sdk/python/.venv on first use and installs the package there (editable) with its test
# dependencies; extra arguments go to pytest, e.g. `run-tests.sh -k exec -x`.
set -euo pipefail

if [ -n "${SP_BIN:-}" ]; then
    SP_BIN="$(realpath -m -- "$SP_BIN")"
    export SP_BIN
fi
cd "$(dirname "$0")"

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Reinstall only when the package's metadata changed (the install is editable).
stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat .venv/.sandpit-installed 2>/dev/null || true)" != "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$stamp" > .venv/.sandpit-installed
fi

exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
