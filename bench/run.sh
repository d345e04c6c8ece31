#!/usr/bin/env bash
# rewind's benchmarks, side by side with its peers on the same bytes, in
# one run (`make bench`):
#
#   bench/run.sh [ingest] [nbd] [fuse] [writes] [recover] [protect]
#                [integrity] [scale] [store] [console]  (no argument: all)
#
#   ingest  rewind import vs restic backup vs borg create of a 1 GiB mixed
#           ext4 image and of its second version (5% of file data
#           changed): time and bytes stored; rewind export vs cp
#   nbd     rewind serve vs nbdkit (file plugin) vs qemu-nbd: nbdcopy, fio
#           4 KiB random reads at QD32, qemu-img bench at depth 1, 2, 4
#   fuse    reading the image through rewind serve --mount vs restic mount
#   writes  fio 4 KiB random writes at QD1 and QD32 to a writable clone
#           (rewind serve) vs qemu-nbd serving a copy of the image
#   recover rewind recover: hydration vs nbdcopy of the same export,
#           read latency during the copy vs idle, time to first byte
#   protect fio 4 KiB random writes at QD1 and QD32, with and without a
#           FLUSH every 16 writes, through rewind protect vs nbdkit (file
#           plugin) vs qemu-nbd on a copy of the image; rewind's versions
#           recorded and bytes stored per byte written; the time to serve
#           the export again after SIGKILL
#   integrity  parity's cost and the scrub: rewind import of v2 with
#           parity and with --no-parity (time), the parity files' bytes
#           over the packs', rewind verify --json cold and warm (MiB/s of
#           pack bytes), nbdcopy from rewind serve cold and warm with the
#           parity files in place and moved aside, qemu-nbd for scale
#   scale   a clone's history built up to 1, 10,000 and 1,000,000 writes:
#           nbdcopy and fio random reads at the oldest and the newest
#           instant, time to open an instant, Pebble bytes per write
#   store   rewind with its packs on S3 (--store s3://, one SeaweedFS
#           process on loopback) against its local store and restic on
#           the same SeaweedFS: import of v1 and v2 (time, MiB/s), cold
#           nbdcopy and fio 4 KiB random reads from a fresh rewind serve,
#           rewind replicate to a second bucket against rclone copy of
#           the same packs
#   console the web console in headless Chromium: the volume list with
#           200 volumes and the timeline of a volume with 100,000
#           versions, navigation to data shown (no peer; target < 1 s)
#
# Each section can run alone; it makes what it needs (images, an untimed
# import) when an earlier section did not. A section whose rewind command
# is missing says "not measured: <reason>" and still measures the peers.
# Cold runs drop the page cache (root only). Everything listens on
# 127.0.0.1 only.
#
# Prints each section's table and writes bench/results/SECTION.md and
# bench/results/latest.md (the maintainer copies figures into
# docs/benchmarks.md).
#
# Environment: BENCH_WORK (default tmp/bench, about 6 GiB, and while scale
# runs its history, 25 GiB or more at 1,000,000 writes), BENCH_SIZE
# (1G), BENCH_SEED (1), BENCH_CHANGE_PCT (5), BENCH_FIO_RUNTIME (10 s),
# BENCH_REPEAT (runs of each whole-image read, median reported: 5 over
# NBD, 3 mounts for FUSE; BENCH_WRITE_REPEAT, 1, for writes),
# BENCH_STEP_TIMEOUT (1200 s per measured command), BENCH_QB_TIMEOUT (60 s
# per qemu-img bench), BENCH_REWIND (bin/rewind), BENCH_SERVE_ARGS (more
# flags for every rewind serve, e.g. --no-huge-pages); for scale (see
# bench/scale.sh): BENCH_SCALE_SIZE (256M), BENCH_SCALE_WRITES ("1 10000
# 1000000", increasing), BENCH_SCALE_QD (32), BENCH_SCALE_REPEAT (3),
# BENCH_SCALE_OPENS (20); for integrity: BENCH_INTEGRITY_REPEAT (3); for
# store: BENCH_STORE_REPEAT (3 cold nbdcopy runs per store), BENCH_WEED
# (the SeaweedFS binary, default the one make deps builds).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
. "$here/ingest.sh"
. "$here/nbd.sh"
. "$here/fuse.sh"
. "$here/writes.sh"
. "$here/recover.sh"
. "$here/protect.sh"
. "$here/integrity.sh"
. "$here/scale.sh"
. "$here/store.sh"
. "$here/console.sh"

sections=("$@")
((${#sections[@]})) || sections=(ingest nbd fuse writes recover protect integrity scale store console)
for s in "${sections[@]}"; do
	case $s in
	ingest | nbd | fuse | writes | recover | protect | integrity | store | console) ;;
	scale) scale_check ;;
	*) die "unknown section $s: want ingest, nbd, fuse, writes, recover, protect, integrity, scale, store or console" ;;
	esac
done

for tool in restic borg nbdkit qemu-nbd qemu-img nbdcopy fio fusermount3 python3 mkfs.ext4 debugfs mountpoint rclone curl; do
	command -v "$tool" >/dev/null || die "$tool is missing: run make deps"
done

mkdir -p "$W" "$RESULTS"
echo rewind-bench >"$W/restic.pw"
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in "${sections[@]}"; do
	"section_$s"
done
write_latest "${sections[@]}"
