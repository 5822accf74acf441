#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; no pipeline's status decides anything.
# Fetch RepDistiller's published CIFAR-100 teachers to save/models/<name>_vanilla/ckpt_epoch_240.pth
# (relative to the current directory, as RD's script: run it from the repository root).
#   sh scripts/fetch_pretrained_teachers.sh [name ...]   default: all six published teachers
# A file already present is not downloaded again. Every file, downloaded or present, is checked to load
# strictly into its architecture (scripts/check_teacher.py); a download that fails the check is removed.
# One line per file that could not be fetched or checked, then exit 1.
# Environment: TEACHER_URL (base URL, default RD's), SAVE_DIR (default save/models),
#              PYTHON (default python), CONNECT_TIMEOUT (seconds, default 10).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BASE_URL=${TEACHER_URL:-http://shape2prog.csail.mit.edu/repo}
SAVE_DIR=${SAVE_DIR:-save/models}
PYTHON=${PYTHON:-python}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-10}
PUBLISHED="wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50"
PROG=$(basename "$0")

fail() {  # one line on stderr for one teacher
    echo "$PROG: $1: $2" >&2
}

last_line() {  # the last non-blank line of $1: curl's error, or the exception that ends a traceback
    printf '%s\n' "$1" | tr '\r' '\n' | sed '/^[[:space:]]*$/d' | tail -n 1
}

# Download $1 to $2; on failure print why, in one line, on stdout, and return 1.
download() {
    if command -v curl >/dev/null 2>&1; then
        # abort a transfer that stalls below 1 kB/s for a minute
        if out=$(curl -fsSL --connect-timeout "$CONNECT_TIMEOUT" -y 60 -Y 1024 -o "$2" "$1" 2>&1); then
            return 0
        fi
    elif command -v wget >/dev/null 2>&1; then
        if out=$(wget -nv --tries=1 --connect-timeout="$CONNECT_TIMEOUT" --dns-timeout="$CONNECT_TIMEOUT" \
                --read-timeout=60 -O "$2" "$1" 2>&1); then
            return 0
        fi
    else
        out="neither curl nor wget is installed"
    fi
    last_line "$out"
    return 1
}

# Check that $1 loads into architecture $2; on failure print why, in one line, on stdout, and return 1.
check() {
    if out=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/check_teacher.py" "$1" "$2" 2>&1 >/dev/null)
    then
        return 0
    fi
    last_line "$out"
    return 1
}

# Remove a failed download $1, and its folder $2 when this run created it ($3 = 1) and it is empty.
discard() {
    rm -f "$1"
    if [ "$3" = 1 ]; then
        rmdir "$2" 2>/dev/null
    fi
    return 0
}

fetch_one() {
    name=$1
    dest="$SAVE_DIR/$1_vanilla/ckpt_epoch_240.pth"
    url="$BASE_URL/$1_vanilla/ckpt_epoch_240.pth"
    case " $PUBLISHED " in
        *" $name "*) ;;
        *)
            fail "$name" "not a published teacher; choose from: $PUBLISHED"
            return 1
            ;;
    esac
    if [ -f "$dest" ]; then
        if ! why=$(check "$dest" "$name"); then
            fail "$name" "$dest is present but unusable (${why:-check failed}); remove it and run again"
            return 1
        fi
        echo "$name: $dest already present, loads into $name"
        return 0
    fi
    part="$dest.part"
    dir=$(dirname "$dest")
    made=0
    [ -d "$dir" ] || made=1
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
    mv -f "$part" "$dest" || { fail "$name" "cannot move $part to $dest"; return 1; }
    echo "$name: saved $dest, loads into $name"
}

if [ $# -eq 0 ]; then
    # shellcheck disable=SC2086  # the published names, one argument each
    set -- $PUBLISHED
fi
failed=0
for teacher in "$@"; do
    fetch_one "$teacher" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || exit 1
