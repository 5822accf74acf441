#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Download Tiny-ImageNet-200, check it, unpack it and arrange it into class folders for ImageFolder:
#   <dir>/tiny-imagenet-200/{train,val}/<wnid>/<image>.JPEG    (test/ has no labels and is left as it is)
#   sh scripts/get_tinyimagenet.sh [dir]      default dir: data/ of this repository (--data_folder ./data)
# The archive is checked (size, then md5) before it is unpacked. An archive or an unzipped tiny-imagenet-200/
# already in <dir> is used as it is, so offline, put tiny-imagenet-200.zip there and run this again.
# Running it on an arranged folder changes nothing; an interrupted run can be run again.
# Environment: TINYIMAGENET_URL (default cs231n's), TINYIMAGENET_SIZE and TINYIMAGENET_MD5 (the archive's, for
#              a mirror that repackaged it), CONNECT_TIMEOUT (seconds, default 10), PYTHON (default python3:
#              unzips and hashes where unzip or md5sum is missing).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-$(dirname "$HERE")/data}
URL=${TINYIMAGENET_URL:-http://cs231n.stanford.edu/tiny-imagenet-200.zip}
SIZE=${TINYIMAGENET_SIZE:-248100043}
MD5=${TINYIMAGENET_MD5:-90528d7ca1a48142e341f4ef8d21d0de}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-10}
PYTHON=${PYTHON:-python3}
PROG=$(basename "$0")
NAME=tiny-imagenet-200
ZIP=$NAME.zip

die() {  # one line on stderr, exit 1
    echo "$PROG: $*" >&2
    exit 1
}

cleanup() {  # what an interrupted run leaves half-made
    rm -f "$ZIP.part"
    rm -rf "$NAME.unzip"
}

# Download $1 to $2; on failure print why, in one line, on stdout, and return 1.
download() {
    if command -v curl >/dev/null 2>&1; then
        out=$(curl -fsSL --connect-timeout "$CONNECT_TIMEOUT" -y 60 -Y 1024 -o "$2" "$1" 2>&1) && return 0
    elif command -v wget >/dev/null 2>&1; then
        out=$(wget -nv --tries=1 --connect-timeout="$CONNECT_TIMEOUT" --read-timeout=60 -O "$2" "$1" 2>&1) \
            && return 0
    else
        out="neither curl nor wget is installed"
    fi
    printf '%s\n' "$out" | tr '\r' '\n' | sed '/^[[:space:]]*$/d' | tail -n 1
    return 1
}

md5_of() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$1" | cut -d ' ' -f 1
    elif command -v md5 >/dev/null 2>&1; then
        md5 -q "$1"
    else
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.md5(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

# Check the archive $1; $2 says where it came from, for the message. Removes a bad download.
check_zip() {
    size=$(wc -c < "$1" | tr -d ' ')
    if [ "$size" != "$SIZE" ]; then
        why="is $size bytes, expected $SIZE"
    else
        sum=$(md5_of "$1")
        [ "$sum" = "$MD5" ] && return 0
        why="has md5 $sum, expected $MD5"
    fi
    if [ "$2" = downloaded ]; then
        rm -f "$1"
        die "the download of $URL $why (removed); run this again"
    fi
    die "$(pwd)/$1 $why (a partial or different file?); remove it and run this again"
}

unpack() {
    mkdir "$NAME.unzip"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$ZIP" -d "$NAME.unzip" || die "cannot unzip $(pwd)/$ZIP"
    else
        "$PYTHON" -m zipfile -e "$ZIP" "$NAME.unzip" || die "cannot unzip $(pwd)/$ZIP (no unzip; $PYTHON failed)"
    fi
    [ -d "$NAME.unzip/$NAME/train" ] || die "$(pwd)/$ZIP holds no $NAME/train folder"
    mv "$NAME.unzip/$NAME" "$NAME"
    rmdir "$NAME.unzip"
}

# train/<wnid>/images/*.JPEG -> train/<wnid>/*.JPEG (and the bounding-box lists go)
arrange_class() {
    dir=$1
    if [ -d "$dir/images" ]; then
        set -- "$dir/images/"*
        [ -e "$1" ] && mv "$@" "$dir/"
        rmdir "$dir/images"
    fi
    rm -f "$dir/"*_boxes.txt
}

# val/images/*.JPEG -> val/<wnid>/*.JPEG, the classes read from val/val_annotations.txt
arrange_val() {
    val=$NAME/val
    [ -d "$val/images" ] || return 0
    [ -f "$val/val_annotations.txt" ] || die "$(pwd)/$val/images has no val_annotations.txt beside it"
    echo "arranging $val by val_annotations.txt"
    while read -r file wnid _rest; do
        [ -n "$file" ] || continue
        [ -n "$wnid" ] || die "$(pwd)/$val/val_annotations.txt: '$file' has no class"
        [ -d "$NAME/train/$wnid" ] || die "$(pwd)/$val/val_annotations.txt: '$file' has class '$wnid', not in train/"
        [ -d "$val/$wnid" ] || mkdir "$val/$wnid"
        if [ -f "$val/images/$file" ]; then
            mv "$val/images/$file" "$val/$wnid/"
        elif [ ! -f "$val/$wnid/$file" ]; then
            die "$(pwd)/$val/val_annotations.txt lists $file, which is not in $val/images"
        fi
    done < "$val/val_annotations.txt"
    rmdir "$val/images" 2>/dev/null || die "$(pwd)/$val/images holds images that val_annotations.txt does not list"
}

count() {  # files under $1 with the image suffix
    find "$1" -type f -name '*.JPEG' | wc -l | tr -d ' '
}

mkdir -p "$DEST" || die "cannot create $DEST"
cd "$DEST"
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ ! -d "$NAME" ]; then
    from=present
    if [ ! -f "$ZIP" ]; then
        echo "downloading $URL to $(pwd)/$ZIP"
        why=$(download "$URL" "$ZIP.part") \
            || die "download of $URL failed (${why:-no reason given}); put $ZIP (from $URL) in $(pwd)/ and run this again"
        mv "$ZIP.part" "$ZIP"
        from=downloaded
    fi
    check_zip "$ZIP" "$from"
    echo "unpacking $ZIP"
    unpack
fi
[ -d "$NAME/train" ] || die "$(pwd)/$NAME has no train folder; remove it and run this again"
for class_dir in "$NAME"/train/*/; do
    arrange_class "${class_dir%/}"
done
arrange_val
for class_dir in "$NAME"/val/*/; do
    [ -d "$class_dir" ] || continue
    wnid=$(basename "$class_dir")
    [ -d "$NAME/train/$wnid" ] || die "$(pwd)/$NAME/val/$wnid is a class that train/ does not have"
done
classes=$(find "$NAME/train" -mindepth 1 -maxdepth 1 -type d | wc -l | tr -d ' ')
echo "$(pwd)/$NAME: $classes classes, $(count "$NAME/train") train and $(count "$NAME/val") val images"
