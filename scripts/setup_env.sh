#!/usr/bin/env bash
# Create ./.venv (if missing) with everything the project and its tests need; prints the python to use.
# Usage: source <(bash scripts/setup_env.sh)   or   PY=$(bash scripts/setup_env.sh --print-python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv >&2
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -r requirements-dev.txt >&2
    echo "$want" > "$stamp"
fi
echo "$(pwd)/.venv/bin/python"
