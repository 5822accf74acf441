#!/usr/bin/env bash
# Fetch RepDistiller's published CIFAR-100 teachers to save/models/<name>_vanilla/ckpt_epoch_240.pth
# (relative to the current directory, as RD's script: run it from the repository root).
#   scripts/fetch_pretrained_teachers.sh [name ...]      default: all six published teachers
# A file already present is not downloaded again. Every file, downloaded or present, is checked to load
# strictly into its architecture (scripts/check_teacher.py); a download that fails the check is removed.
# One line per file that could not be fetched or checked, then exit 1.
# Environment: TEACHER_URL (base URL, default RD's), SAVE_DIR (default save/models),
#              PYTHON (default python), CONNECT_TIMEOUT (seconds, default 10).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BASE_URL=${TEACHER_URL:-http://shape2prog.csail.mit.edu/repo}
SAVE_DIR=${SAVE_DIR:-save/models}
PYTHON=${PYTHON:-python}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-10}
PUBLISHED=(wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50)
PROG=$(basename "$0")

fail() {  # one line on stderr for one teacher
    echo "$PROG: $1: $2" >&2
}

last_line() {  # the last non-blank line: curl's error, or the exception that ends a traceback
    tr '\r' '\n' | sed '/^[[:space:]]*$/d' | tail -n 1
}

# Download $1 to $2; on failure print why, in one line, on stdout.
download() {
    local url=$1 out=$2
    if command -v curl >/dev/null; then
        # abort a transfer that stalls below 1 kB/s for a minute
        curl -fsSL --connect-timeout "$CONNECT_TIMEOUT" -y 60 -Y 1024 -o "$out" "$url" 2>&1 | last_line
        return "${PIPESTATUS[0]}"
    elif command -v wget >/dev/null; then
        wget -nv --tries=1 --connect-timeout="$CONNECT_TIMEOUT" --dns-timeout="$CONNECT_TIMEOUT" \
            --read-timeout=60 -O "$out" "$url" 2>&1 | last_line
        return "${PIPESTATUS[0]}"
    fi
    echo "neither curl nor wget is installed"
    return 1
}

# Check that $1 loads into architecture $2; prints why not, in one line, on stdout.
check() {
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/check_teacher.py" "$1" "$2" 2>&1 >/dev/null \
        | last_line
    return "${PIPESTATUS[0]}"
}

# Remove a failed download $1, and its folder $2 when this run created it ($3 = 1) and it is empty.
discard() {
    rm -f "$1"
    if [[ "$3" == 1 ]]; then
        rmdir "$2" 2>/dev/null
    fi
    return 0
}

fetch_one() {
    local name=$1 dest="$SAVE_DIR/$1_vanilla/ckpt_epoch_240.pth" url="$BASE_URL/$1_vanilla/ckpt_epoch_240.pth"
    local why
    if [[ ! " ${PUBLISHED[*]} " == *" $name "* ]]; then
        fail "$name" "not a published teacher; choose from: ${PUBLISHED[*]}"
        return 1
    fi
    if [[ -f "$dest" ]]; then
        if ! why=$(check "$dest" "$name"); then
            fail "$name" "$dest is present but unusable (${why:-check failed}); remove it and run again"
            return 1
        fi
        echo "$name: $dest already present, loads into $name"
        return 0
    fi
    local dir part="$dest.part" made=0
    dir=$(dirname "$dest")
    [[ -d "$dir" ]] || made=1
    mkdir -p "$dir" || { fail "$name" "cannot create $dir"; return 1; }
    if ! why=$(download "$url" "$part"); then
        discard "$part" "$dir" "$made"
        fail "$name" "download of $url failed (${why:-no reason given})"
        return 1
    fi
    if ! why=$(check "$part" "$name"); then
        discard "$part" "$dir" "$made"
        fail "$name" "downloaded $url but it does not load (${why:-check failed}); removed"
        return 1
    fi
    mv -f "$part" "$dest"
    echo "$name: saved $dest, loads into $name"
}

names=("$@")
[[ $# -eq 0 ]] && names=("${PUBLISHED[@]}")
failed=0
for name in "${names[@]}"; do
    fetch_one "$name" || failed=$((failed + 1))
done
if ((failed)); then
    exit 1
fi
