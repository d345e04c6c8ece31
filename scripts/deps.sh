#!/usr/bin/env bash
# Installs, from Debian's archive, every tool that rewind's tests and
# benchmarks drive: the NBD, FUSE and filesystem clients, the backup tools
# the benchmark compares with, and what the VM fixture boots.
#
# Idempotent and quiet: when everything is already installed it prints
# nothing and does not touch apt. Only when a package is missing does it run
# `apt-get update` and install the missing ones (needs root).
#
# Usage: scripts/deps.sh [--list]   (--list prints the packages and exits)
set -euo pipefail

packages=(
	make              # make test, make bench
	gcc               # go test -race needs cgo
	libc6-dev
	qemu-utils        # qemu-img, qemu-nbd, qemu-io
	libnbd-bin        # nbdinfo, nbdcopy, nbdfuse, nbdsh
	python3-libnbd    # nbdsh's python module
	libnbd-dev
	nbdkit            # reference NBD server for the benchmark
	fuse3             # fusermount3 (and fusermount, which restic mount calls)
	e2fsprogs         # mkfs.ext4 -d, debugfs, e2fsck
	xfsprogs
	gdisk
	parted
	restic            # benchmark peers
	borgbackup
	fio               # with the nbd ioengine
	qemu-system-x86   # the VM fixture
	linux-image-amd64
	busybox-static
	cpio
	kmod
	openssl           # TLS certificates
	curl              # the HTTP API's tests
	util-linux        # setpriv: tests run commands as an unprivileged user
	postgresql        # rewind recover's test runs PostgreSQL from a recovering export
	python3           # the benchmark parses JSON with it
)

if [[ ${1:-} == --list ]]; then
	printf '%s\n' "${packages[@]}"
	exit 0
fi

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "deps: installing ${missing[*]}"
if ((EUID != 0)); then
	echo "deps: these packages are missing and installing them needs root: sudo $0" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/rewind-deps.XXXXXX.log)
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	echo "deps: apt-get failed; full log in $log" >&2
	exit 1
fi
rm -f "$log"
