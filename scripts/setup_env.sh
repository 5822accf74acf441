#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Create ./.venv (if missing) and install into it; prints the python to use.
#   PY=$(sh scripts/setup_env.sh)       requirements.txt: what training, evaluation and the quickstart need
#   PY=$(sh scripts/setup_env.sh dev)   requirements-dev.txt as well: tests, linters, figures, DALI (test.sh)
# PYTHON=python3.12 sh scripts/setup_env.sh picks the interpreter the venv is made from. Installs again
# only when a requirements*.txt file changed or more is asked than the venv has (both stamped in .venv):
# a base venv becomes a dev one on the first `dev` call; a dev venv already has everything.
set -eu
cd "$(dirname "$0")/.."
case ${1:-base} in
    base) level=base file=requirements.txt ;;
    dev) level=dev file=requirements-dev.txt ;;
    *)
        echo "setup_env.sh: unknown level '$1'; use: sh scripts/setup_env.sh [base|dev]" >&2
        exit 2
        ;;
esac
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv >&2
fi
stamp=.venv/.requirements.stamp
sums=$(cksum requirements*.txt)  # cksum: POSIX, also on macOS (which has no sha256sum)
stamped_level=$(sed -n 1p "$stamp" 2>/dev/null || true)
stamped_sums=$(sed 1d "$stamp" 2>/dev/null || true)
if [ "$stamped_sums" != "$sums" ] || { [ "$level" = dev ] && [ "$stamped_level" != dev ]; }; then
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -r "$file" >&2
    printf '%s\n%s\n' "$level" "$sums" > "$stamp"
fi
echo "$(pwd)/.venv/bin/python"
