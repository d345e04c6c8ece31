#!/usr/bin/env bash
# Makes the small disk image that `make run` imports into an empty data
# directory: a 64 MiB ext4 filesystem with a few files, built with
# `mkfs.ext4 -d` (nothing is mounted). The same every time.
#
# Usage: scripts/sample-disk.sh OUT.img
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

(($# == 1)) || {
	echo "usage: $0 OUT.img" >&2
	exit 2
}
out=$1
epoch=1767225600 # 2026-01-01T00:00:00Z
dir=$(mktemp -d)
trap 'rm -rf "$dir" "$out.tmp"' EXIT

mkdir -p "$dir/etc" "$dir/home/admin" "$dir/var/log"
echo sample >"$dir/etc/hostname"
cat >"$dir/home/admin/README.txt" <<'TEXT'
This disk was made by scripts/sample-disk.sh for `make run`.
Change it through a clone, import it again, and look at its history:
  bin/rewind --data var/rewind log sample
  bin/rewind --data var/rewind export sample@latest /tmp/sample.img
TEXT
for i in $(seq 1 200); do
	echo "2026-01-01T00:00:$(printf %02d $((i % 60)))Z sample app[1]: INFO event $i"
done >"$dir/var/log/app.log"
# Deterministic binary data: AES-CTR over zeroes with a fixed key.
head -c 1048576 /dev/zero | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
	-iv 00000000000000000000000000000000 >"$dir/home/admin/data.bin"
find "$dir" -exec touch -h -d "@$epoch" {} +

truncate -s 64M "$out.tmp"
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -F -q -b 4096 -L sample -U 6c1a5a0e-0000-4000-8000-5a3e1ed15c00 \
	-E hash_seed=6c1a5a0e-0000-4000-8000-5a3e1ed15c00,root_owner=0:0 -d "$dir" "$out.tmp"
mv "$out.tmp" "$out"
