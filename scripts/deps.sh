#!/usr/bin/env bash
# Installs, from Debian's archive, every tool that rewind's tests and
# benchmarks drive: the NBD, FUSE and filesystem clients, the backup tools
# the benchmark compares with, and what the VM fixture boots. Then builds
# SeaweedFS, the S3 object store the tests run, which Debian does not have,
# once into /var/cache/rewind (blockstore/objstore/weed looks for it there).
#
# Idempotent and quiet: when everything is already there it prints nothing
# and does not touch apt. Only when a package is missing does it run
# `apt-get update` and install the missing ones, and only when the weed
# binary is missing does it build it, about 7 minutes (both need root).
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
	rclone            # the store section's peer for replication between buckets
	borgbackup
	fio               # with the nbd ioengine
	qemu-system-x86   # the VM fixture
	linux-image-amd64
	busybox-static
	cpio
	kmod
	openssl           # TLS certificates
	curl              # the HTTP API's tests
	chromium          # the web console's tests drive it headless (chromedp)
	util-linux        # setpriv: tests run commands as an unprivileged user
	postgresql        # rewind recover's test runs PostgreSQL from a recovering export
	python3           # the benchmark parses JSON with it
)

if [[ ${1:-} == --list ]]; then
	printf '%s\n' "${packages[@]}"
	exit 0
fi

install_packages() {
	local missing=() p status
	for p in "${packages[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[[ $status == installed ]] || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0

	echo "deps: installing ${missing[*]}"
	if ((EUID != 0)); then
		echo "deps: these packages are missing and installing them needs root: sudo $0" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	local log
	log=$(mktemp /tmp/rewind-deps.XXXXXX.log)
	if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		echo "deps: apt-get failed; full log in $log" >&2
		exit 1
	fi
	rm -f "$log"
}

# SeaweedFS builds from its Go module: `go install` refuses it (its go.mod
# has a replace directive), so build inside a copy of the downloaded module.
weed_version=v0.0.0-20261109003541-7506e5f91cd6
weed_bin=/var/cache/rewind/weed-$weed_version

build_weed() {
	[[ -x $weed_bin ]] && return 0
	echo "deps: building SeaweedFS $weed_version into $weed_bin (about 7 minutes, once)"
	if ! mkdir -p "${weed_bin%/*}" 2>/dev/null || [[ ! -w ${weed_bin%/*} ]]; then
		echo "deps: building SeaweedFS into ${weed_bin%/*} needs root: sudo $0" >&2
		exit 1
	fi
	local work log
	work=$(mktemp -d /tmp/rewind-weed.XXXXXX)
	log=$work.log
	if ! (
		set -e
		cd "$work" # outside any module: the download touches no go.mod
		go mod download github.com/seaweedfs/seaweedfs@$weed_version
		cp -r "$(go env GOMODCACHE)/github.com/seaweedfs/seaweedfs@$weed_version" src
		chmod -R u+w src
		cd src
		go build -ldflags "-s -w" -o "$weed_bin.tmp" ./weed
		mv "$weed_bin.tmp" "$weed_bin"
	) >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		echo "deps: building SeaweedFS failed; full log in $log" >&2
		rm -rf "$work" "$weed_bin.tmp"
		exit 1
	fi
	rm -rf "$work" "$log"
}

install_packages
build_weed
