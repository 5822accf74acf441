#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; no pipeline's status decides anything.
# Fetch RepDistiller's published CIFAR-100 teachers to save/models/<name>_vanilla/ckpt_epoch_240.pth
# (relative to the current directory, as RD's script: run it from the repository root).
#   sh scripts/fetch_pretrained_teachers.sh [name ...]   default: all six published teachers
# Sources, in order: RepDistiller's own URL (its host has been down since 2022), then mdistiller's release of
# the same files, cifar_teachers.tar (cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth inside), downloaded
# once into save/downloads/ and only the asked teachers taken out of it.
# The name tinyimagenet fetches mdistiller's Tiny-ImageNet teacher (its ResNet18, our ResNet18_cifar, 200
# classes) from the same release, tiny_imagenet_teachers.tar (tiny_imagenet_teachers/ResNet18_vanilla/ti_res18
# inside, as mdistiller's model table names it), to save/models/ResNet18_cifar_tinyimagenet_vanilla/ti_res18.
# A file already present is not fetched again. Every file, downloaded or present, is checked to load strictly
# into its architecture (scripts/check_teacher.py) before it gets its name (downloads go to a temporary name
# first); a download that does not load is removed, a file is never removed because the check could not run.
# One line per teacher: where it came from, or why it could not be fetched (then exit 1).
# Environment: TEACHER_URL (RD-style base URL), TEACHER_TAR_URL (a tar laid out as mdistiller's): setting
#   either uses only the source(s) set; TINYIMAGENET_TAR_URL (the Tiny-ImageNet tar); SAVE_DIR (default save/models), TEACHER_CACHE (default save/downloads),
#   PYTHON (default: the project's .venv/bin/python, else python3), CONNECT_TIMEOUT (seconds, default 10).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RD_URL=http://shape2prog.csail.mit.edu/repo
MDISTILLER=https://github.com/megvii-research/mdistiller/releases/download/checkpoints
MDISTILLER_TAR=$MDISTILLER/cifar_teachers.tar
TINY_TAR_URL=${TINYIMAGENET_TAR_URL:-$MDISTILLER/tiny_imagenet_teachers.tar}
if [ -n "${TEACHER_URL:-}${TEACHER_TAR_URL:-}" ]; then
    BASE_URL=${TEACHER_URL:-}
    TAR_URL=${TEACHER_TAR_URL:-}
else
    BASE_URL=$RD_URL
    TAR_URL=$MDISTILLER_TAR
fi
SAVE_DIR=${SAVE_DIR:-save/models}
CACHE_DIR=${TEACHER_CACHE:-save/downloads}
if [ -z "${PYTHON:-}" ]; then  # the project's venv (setup_env.sh) when there is one: PATH's python may lack torch
    if [ -x "$ROOT/.venv/bin/python" ]; then
        PYTHON=$ROOT/.venv/bin/python
    elif command -v python3 >/dev/null 2>&1; then
        PYTHON=python3
    else
        PYTHON=python
    fi
fi
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-10}
PUBLISHED="wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50"
PROG=$(basename "$0")
CHECKER=unknown  # ready or broken once asked; CHECKER_WHY says why broken
# Per tar (cifar, tiny): TAR_STATE_<tar> unknown, ready or broken; TAR_FILE_<tar> the cached tar; TAR_WHY_<tar>.
# shellcheck disable=SC2034  # read through eval, in tar_ready
TAR_STATE_cifar=unknown TAR_STATE_tiny=unknown

# What teacher $1 is: sets ARCH, CLASSES, DEST, RD_URL_OF (empty: no RD file), TAR (cifar or tiny), TAR_URL_OF
# (empty: no tar source) and MEMBER; returns 1 for a name neither publishes.
teacher_spec() {
    case " $PUBLISHED " in
        *" $1 "*)
            ARCH=$1 CLASSES=100 DEST="$SAVE_DIR/$1_vanilla/ckpt_epoch_240.pth" TAR=cifar TAR_URL_OF=$TAR_URL
            RD_URL_OF=${BASE_URL:+$BASE_URL/$1_vanilla/ckpt_epoch_240.pth}
            MEMBER="cifar_teachers/$1_vanilla/ckpt_epoch_240.pth"
            return 0 ;;
    esac
    [ "$1" = tinyimagenet ] || return 1
    ARCH=ResNet18_cifar CLASSES=200 DEST="$SAVE_DIR/ResNet18_cifar_tinyimagenet_vanilla/ti_res18" TAR=tiny
    RD_URL_OF="" TAR_URL_OF=$TINY_TAR_URL MEMBER="tiny_imagenet_teachers/ResNet18_vanilla/ti_res18"
}

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

# Whether $PYTHON can run the check at all (asked once); sets CHECKER and CHECKER_WHY.
checker_ready() {
    if [ "$CHECKER" = unknown ]; then
        if out=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/check_teacher.py" --ready 2>&1); then
            CHECKER=ready
        else
            CHECKER=broken
            CHECKER_WHY="$(last_line "$out"); set PYTHON to a python with the project's requirements (sh scripts/setup_env.sh makes .venv)"
        fi
    fi
    [ "$CHECKER" = ready ]
}

# Check that $1 loads into architecture $ARCH ($CLASSES classes); print why not, in one line, on stdout.
# Returns 0 when it loads, 1 when it does not, 2 when the check itself could not run (which says nothing
# about the file).
check() {
    out=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/check_teacher.py" "$1" "$ARCH" \
        --num_classes "$CLASSES" 2>&1 >/dev/null)
    status=$?
    [ "$status" -eq 0 ] && return 0
    last_line "$out"
    [ "$status" -eq 1 ] && return 1
    return 2
}

# Check the fetched file $1 (described by $2) and give it its name $DEST, or remove it. On failure, print
# why, in one line, on stdout and return 1.
install_checked() {
    why=$(check "$1")
    case $? in
        0) mv -f "$1" "$DEST" && return 0
           echo "cannot move $1 to $DEST"
           return 1 ;;
        1) rm -f "$1"
           echo "$2 does not load (${why:-check failed}); removed"
           return 1 ;;
        *) echo "$2 could not be checked (${why:-check failed}); left unchecked at $1"
           return 1 ;;
    esac
}

# Teacher's tar ($TAR from $TAR_URL_OF) in the cache, downloaded once (to a temporary name, kept only when
# tar reads it whole); sets TAR_FILE and TAR_WHY, and remembers both and the outcome for the next teacher.
tar_ready() {
    eval "state=\$TAR_STATE_$TAR"
    if [ "$state" = unknown ]; then
        TAR_FILE="$CACHE_DIR/$(basename "$TAR_URL_OF")"
        TAR_WHY=""
        state=broken
        if [ -f "$TAR_FILE" ] && tar -tf "$TAR_FILE" >/dev/null 2>&1; then
            state=ready
        elif ! mkdir -p "$CACHE_DIR"; then
            TAR_WHY="cannot create $CACHE_DIR"
        elif ! why=$(download "$TAR_URL_OF" "$TAR_FILE.part"); then
            rm -f "$TAR_FILE.part"
            TAR_WHY="download of $TAR_URL_OF failed (${why:-no reason given})"
        elif ! out=$(tar -tf "$TAR_FILE.part" 2>&1 >/dev/null); then
            rm -f "$TAR_FILE.part"
            TAR_WHY="downloaded $TAR_URL_OF but it is not a whole tar archive ($(last_line "$out")); removed"
        elif mv -f "$TAR_FILE.part" "$TAR_FILE"; then
            state=ready
        else
            TAR_WHY="cannot move $TAR_FILE.part to $TAR_FILE"
        fi
        eval "TAR_STATE_$TAR=\$state TAR_FILE_$TAR=\$TAR_FILE TAR_WHY_$TAR=\$TAR_WHY"
    fi
    eval "TAR_FILE=\$TAR_FILE_$TAR TAR_WHY=\$TAR_WHY_$TAR"
    [ "$state" = ready ]
}

# Teacher $1 from RD's URL into $DEST; prints where it came from, or why not on stdout (return 1).
from_rd() {
    if ! why=$(download "$RD_URL_OF" "$DEST.part"); then
        rm -f "$DEST.part"
        echo "download of $RD_URL_OF failed (${why:-no reason given})"
        return 1
    fi
    install_checked "$DEST.part" "downloaded $RD_URL_OF but it" || return 1
    echo "$1: saved $DEST from $RD_URL_OF (RepDistiller), loads into $ARCH"
}

# Teacher $1 out of mdistiller's tar into $DEST (only its own file is extracted); as from_rd.
from_tar() {
    if ! tar_ready; then
        echo "$TAR_WHY"
        return 1
    fi
    member=$MEMBER
    unpack="$dir/.extract.$$"
    rm -rf "$unpack"
    mkdir "$unpack" || { echo "cannot create $unpack"; return 1; }
    if ! out=$(tar -xf "$TAR_FILE" -C "$unpack" "$member" 2>&1) || [ ! -f "$unpack/$member" ]; then
        rm -rf "$unpack"
        echo "$TAR_FILE has no $member ($(last_line "$out"))"
        return 1
    fi
    if ! why=$(install_checked "$unpack/$member" "$member in $TAR_FILE"); then
        case $why in *"left unchecked"*) ;; *) rm -rf "$unpack" ;; esac
        echo "$why"
        return 1
    fi
    rm -rf "$unpack"
    echo "$1: saved $DEST from $TAR_FILE ($member, mdistiller's release $TAR_URL_OF), loads into $ARCH"
}

fetch_one() {
    name=$1
    if ! teacher_spec "$name"; then
        fail "$name" "not a published teacher; choose from: $PUBLISHED (CIFAR-100), tinyimagenet"
        return 1
    fi
    if ! checker_ready; then
        fail "$name" "cannot check teachers: $CHECKER_WHY"
        return 1
    fi
    if [ -f "$DEST" ]; then
        why=$(check "$DEST")
        case $? in
            0) echo "$name: $DEST already present, loads into $ARCH"
               return 0 ;;
            1) fail "$name" "$DEST is present but unusable (${why:-check failed}); remove it and run again" ;;
            *) fail "$name" "$DEST is present but could not be checked (${why:-check failed}); left as it is" ;;
        esac
        return 1
    fi
    dir=$(dirname "$DEST")
    made=0
    [ -d "$dir" ] || made=1
    mkdir -p "$dir" || { fail "$name" "cannot create $dir"; return 1; }
    reasons=""
    for source in rd tar; do
        case $source in
            rd) [ -n "$RD_URL_OF" ] || continue
                said=$(from_rd "$name") && { echo "$said"; return 0; } ;;
            tar) [ -n "$TAR_URL_OF" ] || continue
                 tar_ready  # in this shell, so that the tar is fetched once for every teacher
                 said=$(from_tar "$name") && { echo "$said"; return 0; } ;;
        esac
        reasons="${reasons:+$reasons; }$said"
    done
    if [ "$made" = 1 ]; then
        rmdir "$dir" 2>/dev/null
    fi
    fail "$name" "$reasons"
    return 1
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
