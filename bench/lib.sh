# Helpers for bench/run.sh: timing, caches, background servers, images and
# result tables. Sourced, not run. Every wait has a deadline and every
# measured command a timeout.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin

W=${BENCH_WORK:-$ROOT/tmp/bench}          # images, repositories, mounts
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results}
SIZE=${BENCH_SIZE:-1G}                    # the mixed image
SEED=${BENCH_SEED:-1}
PCT=${BENCH_CHANGE_PCT:-5}                # share of file data changed in v2
FIO_RUNTIME=${BENCH_FIO_RUNTIME:-10}      # seconds per fio run
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-1200}  # seconds, any one measured command
QB_TIMEOUT=${BENCH_QB_TIMEOUT:-60}        # seconds, one qemu-img bench run
REWIND=${BENCH_REWIND:-$ROOT/bin/rewind} # another build to compare
read -r -a SERVE_ARGS <<<"${BENCH_SERVE_ARGS:-}" # more flags for every rewind serve
REPEAT=${BENCH_REPEAT:-3}                 # runs of each whole-image read; the median is reported
VOL=bench
T1=2026-01-01T00:00:00Z # v1's instant in rewind
T2=2026-01-02T00:00:00Z # v2's
T2C=20260102T000000Z    # v2's, compact (for paths)

# restic's repository, password and cache (section ingest makes them).
RESTIC=(restic --repo "$W/restic" --password-file "$W/restic.pw" --cache-dir "$W/restic-cache")

PIDS=()   # background processes this run started
MOUNTS=() # FUSE mounts this run made

log() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# timed VAR LIMIT CMD...: runs CMD with a timeout of LIMIT seconds and sets
# VAR to its wall time in seconds. Output goes to $W/last.out and
# $W/last.err. Returns CMD's status.
timed() {
	local var=$1 limit=$2 t0 t1 rc=0
	shift 2
	t0=$(date +%s.%N)
	timeout --kill-after=10 "$limit" "$@" >"$W/last.out" 2>"$W/last.err" || rc=$?
	t1=$(date +%s.%N)
	printf -v "$var" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
	return "$rc"
}

# lasterr: the last line a failed command wrote to stderr, for a reason.
lasterr() { grep -v '^\s*$' "$W/last.err" 2>/dev/null | tail -n 1 | cut -c1-160; }

# drop_caches empties the page cache so the next read is cold. Without
# root it cannot: COLD says whether cold figures are really cold.
COLD=yes
drop_caches() {
	sync
	if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
		[[ $COLD == no ]] || log "cannot drop the page cache (needs root): cold figures are warm"
		COLD=no
	fi
}

# median VALUES...: the middle value (the lower middle of an even count),
# or "failed" when any run failed.
median() {
	local v
	for v in "$@"; do
		[[ $v =~ ^[0-9.]+$ ]] || { echo failed; return; }
	done
	printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# Arithmetic on decimals.
calc() { awk "BEGIN { x = $1; printf \"%.${2:-2}f\", x }"; }
mbps() { calc "$1 / 1048576 / $2" 1; } # bytes seconds -> MiB/s

# ratio A B [DECIMALS]: A/B with two decimals (or DECIMALS), or "-" when
# either is not a number.
ratio() {
	if [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && [[ $(calc "$2 > 0" 0) == 1 ]]; then
		calc "$1 / $2" "${3:-2}"
	else
		echo -
	fi
}

# best of numbers (max), ignoring anything that is not a number.
best() {
	printf '%s\n' "$@" | awk '/^[0-9.]+$/ { if (!n++ || $1 > m) m = $1 } END { if (n) print m; else print "-" }'
}

dusb() { du -sb "$1" | cut -f1; }
human() { [[ $1 =~ ^[0-9]+$ ]] && numfmt --to=iec-i --suffix=B --format=%.1f "$1" || echo "$1"; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# start NAME CMD...: starts CMD in the background, logging to
# $W/NAME.log; sets STARTED to its pid.
start() {
	local name=$1
	shift
	"$@" >"$W/$name.log" 2>&1 &
	STARTED=$!
	PIDS+=("$STARTED")
}

# stop PID: SIGTERM, then SIGKILL if it is still there after 30 s.
stop() {
	local pid=$1 deadline=$((SECONDS + 30))
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local keep=()
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

unmount() {
	local dir=$1
	if mountpoint -q "$dir" 2>/dev/null; then
		fusermount3 -u "$dir" 2>/dev/null || fusermount3 -u -z "$dir" 2>/dev/null || true
	fi
}

cleanup() {
	local pid dir
	for dir in "${MOUNTS[@]}"; do unmount "$dir"; done
	for pid in "${PIDS[@]}"; do stop "$pid"; done
}

# --- rewind ---------------------------------------------------------------

# rewind_supports CMD [FLAG...]: whether bin/rewind has the command and the
# flags; sets WHY when not.
rewind_supports() {
	local cmd=$1 help flag
	shift
	if [[ ! -x $REWIND ]]; then
		WHY="$REWIND is missing (make build)"
		return 1
	fi
	# shellcheck disable=SC2086 # cmd may be two words
	if ! help=$("$REWIND" $cmd --help 2>&1); then
		WHY="rewind $cmd is not implemented yet"
		return 1
	fi
	for flag in "$@"; do
		if ! grep -q -- "$flag" <<<"$help"; then
			WHY="rewind $cmd has no $flag yet"
			return 1
		fi
	done
}

# rewind_data_ready: $W/rewind holds v1 and v2 of the volume (imported by
# the ingest section or here, untimed). Sets WHY when it cannot.
rewind_data_ready() {
	[[ -f $W/rewind.ok ]] && return 0
	rewind_supports import --at || return 1
	rm -rf "$W/rewind" && mkdir -p "$W/rewind"
	log "importing v1 and v2 into rewind (untimed)"
	if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$W/rewind" import "$VOL" "$W/img/v1.img" --at "$T1" ||
		! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$W/rewind" import "$VOL" "$W/img/v2.img" --at "$T2"; then
		WHY="rewind import failed: $(lasterr)"
		return 1
	fi
	touch "$W/rewind.ok"
}

# --- images ---------------------------------------------------------------

# images: $W/img/v1.img (mkimage.sh mixed) and v2.img (v1 with PCT% of its
# file data changed), rebuilt only when their recipe changes.
images() {
	local key
	key=$(cat "$ROOT/scripts/mkimage.sh" "$ROOT"/bench/mkdata/*.go <(echo "$SIZE $SEED $PCT") | sha256sum | cut -c1-16)
	if [[ -f $W/img/key && $(cat "$W/img/key") == "$key" ]]; then
		return
	fi
	log "making the $SIZE mixed image (seed $SEED) and its second version ($PCT% changed)"
	rm -rf "$W/img" "$W/rewind" "$W/rewind.ok" "$W/restic" "$W/restic.ok"
	mkdir -p "$W/img"
	"$ROOT/scripts/mkimage.sh" mixed "$W/img/v1.img" "$SIZE" "$SEED" >&2
	cp --sparse=always "$W/img/v1.img" "$W/img/v2.img"
	"$ROOT/scripts/mkimage.sh" change "$W/img/v2.img" "$PCT" $((SEED + 1)) >&2
	"$ROOT/scripts/mkimage.sh" diff "$W/img/v1.img" "$W/img/v2.img" >"$W/img/diff.txt"
	echo "$key" >"$W/img/key"
}

image_bytes() { stat -c %s "$W/img/v2.img"; }

# --- results --------------------------------------------------------------

# section_begin NAME TITLE: starts $RESULTS/NAME.md.
section_begin() {
	SECTION_FILE=$RESULTS/$1.md
	mkdir -p "$RESULTS"
	printf '## %s\n\n' "$2" >"$SECTION_FILE"
}

out() { printf '%s\n' "$*" >>"$SECTION_FILE"; }

# not_measured REASON: records why rewind's figures are missing.
not_measured() {
	out ""
	out "rewind not measured: $1"
	log "rewind not measured: $1"
}

section_end() {
	[[ $COLD == yes ]] || out "" "Cold figures are warm: the page cache could not be dropped (not root)."
	out ""
	cat "$SECTION_FILE"
}

# write_latest: $RESULTS/latest.md from the sections measured so far.
write_latest() {
	local f=$RESULTS/latest.md s
	{
		echo "# rewind benchmarks: latest run"
		echo
		echo "- command: \`make bench\` (bench/run.sh $*)"
		((${#SERVE_ARGS[@]} == 0)) || echo "- every \`rewind serve\` with: ${SERVE_ARGS[*]} (BENCH_SERVE_ARGS)"
		echo "- date: $(date -u +%FT%TZ); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
		echo "- host: $(nproc) cores, $(awk '/model name/ { sub(/.*: /, ""); print; exit }' /proc/cpuinfo), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "- data: $SIZE ext4 image from \`scripts/mkimage.sh mixed\` (seed $SEED); v2 = \`mkimage.sh change\` $PCT% of file data: $(cat "$W/img/diff.txt" 2>/dev/null || echo '?')"
		echo "- tools: $(restic version | cut -d' ' -f1-2), $(borg --version), $(nbdkit --version), $(qemu-nbd --version | head -n 1 | cut -d' ' -f1-2), $(fio --version), $(nbdcopy --version | head -n 1), $(rclone version 2>/dev/null | head -n 1)"
		echo
		for s in ingest nbd fuse writes recover protect integrity scale store; do
			[[ -f $RESULTS/$s.md ]] && cat "$RESULTS/$s.md"
		done
	} >"$f"
	log "wrote $f"
}
