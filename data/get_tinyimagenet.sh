#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Where the distillers' README has it (sh data/get_tinyimagenet.sh): scripts/get_tinyimagenet.sh, same arguments.
set -eu
exec sh "$(cd "$(dirname "$0")" && pwd)/../scripts/get_tinyimagenet.sh" "$@"
