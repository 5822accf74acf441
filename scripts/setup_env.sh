#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Create ./.venv (if missing) with everything the project and its tests need; prints the python to use.
# Usage: PY=$(sh scripts/setup_env.sh)   (PYTHON=python3.12 sh scripts/setup_env.sh picks the interpreter)
# Reinstalls when any requirements*.txt changes (their checksums are stamped in .venv).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv >&2
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements*.txt)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -r requirements-dev.txt >&2
    echo "$want" > "$stamp"
fi
echo "$(pwd)/.venv/bin/python"
