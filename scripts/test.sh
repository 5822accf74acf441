#!/usr/bin/env bash
# Set up the environment if needed, lint, then run the whole test suite (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup_env.sh)
"$PY" -m ruff check .
"$PY" -m pytest "$@"
