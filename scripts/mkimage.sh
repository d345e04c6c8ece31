#!/usr/bin/env bash
# Deterministic ext4 disk images for tests and benchmarks. The same
# arguments give the same image, bit for bit (fixed UUID, hash seed and
# times; contents from seeded generators in bench/mkdata).
#
#   mkimage.sh mixed OUT SIZE [SEED]
#       An ext4 image of SIZE (e.g. 1G, 64M) whose files fill about 75% of
#       it: random data (databases, media) 48%, one duplicate of the largest
#       random file 16%, text 20%, logs 16% (shares of the file bytes).
#       Made with `mkfs.ext4 -F -q -d DIR`, nothing is mounted.
#
#   mkimage.sh change IMG PCT SEED
#       Turns IMG into a later version of itself by changing about PCT% of
#       its file data the way a running system does, on the unmounted
#       filesystem: a database rewrites pages of its *.dat files in place
#       (60% of the change, written straight into the files' blocks), logs
#       are rotated (25%: X.log renamed to X.log.1 with debugfs, a fresh
#       X.log written to newly allocated blocks) and text files are saved
#       edited (the rest: new inode and blocks, old blocks freed but not
#       wiped, as a real disk keeps them). Inode times become epoch + SEED
#       days. Rebuilding the image with mkfs instead would move most files
#       and change far more blocks than a real system does, so it is not
#       used. With 64 KiB blocks, PCT=5 changes about 5% of the blocks
#       that hold data (5.05% of the 1 GiB bench image, seeds 1 and 2);
#       `mkimage.sh diff` says exactly how many.
#
#   mkimage.sh diff A B [BLOCK]
#       How many BLOCK-sized (default 65536) blocks of A and B differ.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
epoch=1767225600 # 2026-01-01T00:00:00Z, as in bench/mkdata

die() {
	echo "mkimage: $*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

mkdata() {
	local bin=$root/bin/mkdata
	(cd "$root" && go build -o "$bin" ./bench/mkdata) || die "cannot build bench/mkdata"
	"$bin" "$@"
}

bytes() {
	local s=${1%B}
	s=${s%i}
	numfmt --from=iec "$s" 2>/dev/null || die "bad size $1: want bytes or e.g. 64M, 1G"
}

# debugfs exits 0 even when a request fails: anything but its banner on
# stderr is an error.
debugfs_w() {
	local img=$1 err
	err=$(E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f - "$img" 2>&1 >/dev/null | grep -v '^debugfs [0-9]' || true)
	[[ -z $err ]] || die "debugfs $img: $err"
}

fsck() {
	e2fsck -fn "$1" >/dev/null 2>&1 || die "$1 fails e2fsck -fn; run it to see why"
}

mixed() {
	(($# == 2 || $# == 3)) || usage
	local out=$1 size seed=${3:-1} uuid
	size=$(bytes "$2")
	((size >= 16 << 20)) || die "SIZE $2: want at least 16M"
	uuid=$(printf '6c1a5a0e-0000-4000-8000-%012x' "$seed")
	tree=$(mktemp -d "$(dirname "$out")/.mkimage-tree.XXXXXX")
	partial=$out.tmp
	mkdata tree -seed "$seed" -bytes $((size * 75 / 100)) "$tree"
	rm -f "$out.tmp"
	truncate -s "$size" "$out.tmp"
	E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -F -q -b 4096 -L mixed -U "$uuid" \
		-E "hash_seed=$uuid,root_owner=0:0" -d "$tree" "$out.tmp"
	# mkfs -d stamps ctime with the real time: make it the fixed one.
	(cd "$tree" && find . -mindepth 1 | sed "s|^\.\(.*\)|sif \1 ctime @$epoch|") | debugfs_w "$out.tmp"
	fsck "$out.tmp"
	mv "$out.tmp" "$out"
	echo "$out: $(numfmt --to=iec "$size") ext4, $(find "$tree" -type f | wc -l) files, $(du -sb --apparent-size "$tree" | cut -f1) bytes of files, sparse size $(du -B1 "$out" | cut -f1)"
}

change() {
	(($# == 3)) || usage
	local img=$1 pct=$2 seed=$3
	[[ -f $img ]] || die "$img: no such image"
	mkdata change -seed "$seed" -pct "$pct" "$img"
	fsck "$img"
}

diffblocks() {
	(($# == 2 || $# == 3)) || usage
	mkdata diff -block "${3:-65536}" "$1" "$2"
}

tree= partial=
trap 'rm -rf "$tree" "$partial"' EXIT

case ${1:-} in
mixed) shift && mixed "$@" ;;
change) shift && change "$@" ;;
diff) shift && diffblocks "$@" ;;
*) usage ;;
esac
