# Section "scale" of bench/run.sh (sourced): reads and opens of past
# instants as a volume's history grows to BENCH_SCALE_WRITES recorded
# writes (default 1, 10,000 and 1,000,000).
#
# A small ext4 image (BENCH_SCALE_SIZE, 256M, mkimage.sh mixed) is
# imported into a data directory of its own ($W/scale/rewind, made anew
# each run) and cloned; fio writes 4 KiB at random offsets into the
# clone's writable export (QD BENCH_SCALE_QD, 32), each write one version.
# The history is built up on that one clone: the first count, then the
# difference to the next, measuring after each step:
#
#   history     versions recorded (rewind log --json) against writes fio
#               completed; Pebble's directory and the packs, bytes per
#               recorded write (growth since the clone over the writes)
#   reads       at the oldest instant (the first write's time) and at the
#               newest (the last write's): nbdcopy URI null:, cold (fresh
#               server, page cache dropped) then warm, median of
#               BENCH_SCALE_REPEAT (3) rounds; then, warm, fio
#               --ioengine=nbd --rw=randread --bs=4k --iodepth=32
#   open        bench/nbdopen.py on a fresh server (page cache dropped):
#               connect, NBD_OPT_GO, one 4 KiB read, disconnect,
#               BENCH_SCALE_OPENS (20) times at the oldest, the middle and
#               the newest instant: the first open and the median
#   contents    the newest instant reads exactly as the writable clone,
#               the oldest differs from the image in at most 4 KiB
#
# The history takes disk space while the section runs (13-26 KiB of
# packs a write in 2026-12, growing with the writes each block took: at
# least 25 GiB at 1,000,000 writes); a step that would probably not fit
# is not started (scale_room). The data directory is removed at the end,
# the image kept for the next run.
#
# Ratios are against the first count's row at the same instant: how many
# times slower (the target is at most 1.5).

SCALE_SIZE=${BENCH_SCALE_SIZE:-256M}
SCALE_WRITES=${BENCH_SCALE_WRITES:-1 10000 1000000}
SCALE_QD=${BENCH_SCALE_QD:-32}         # depth of the writes that build the history
SCALE_REPEAT=${BENCH_SCALE_REPEAT:-3}  # rounds of nbdcopy per instant
SCALE_OPENS=${BENCH_SCALE_OPENS:-20}   # opens per instant
SCALE_VOL=scale                        # the imported volume
SCALE_CLONE=scale-clone                # the clone that takes the writes

# scale_check: dies with a one-line message when a BENCH_SCALE_ setting
# is not usable (run.sh calls it before it starts anything).
scale_check() {
	local n prev=0 bytes
	for n in $SCALE_WRITES; do
		[[ $n =~ ^[1-9][0-9]*$ ]] && ((n > prev)) ||
			die "BENCH_SCALE_WRITES=\"$SCALE_WRITES\": want increasing counts of writes, e.g. \"1 10000 1000000\""
		prev=$n
	done
	((prev > 0)) || die "BENCH_SCALE_WRITES is empty: want increasing counts of writes, e.g. \"1 10000 1000000\""
	bytes=$(numfmt --from=iec "$SCALE_SIZE" 2>/dev/null) && ((bytes >= 64 << 20)) ||
		die "BENCH_SCALE_SIZE=$SCALE_SIZE: want a size of at least 64M, e.g. 256M"
	for n in SCALE_QD SCALE_REPEAT SCALE_OPENS; do
		[[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$n=${!n}: want a positive whole number"
	done
}

# scale_image: $W/scale/img, rebuilt only when its recipe changes.
scale_image() {
	local key
	key=$(cat "$ROOT/scripts/mkimage.sh" "$ROOT"/bench/mkdata/*.go <(echo "$SCALE_SIZE $SEED") | sha256sum | cut -c1-16)
	[[ -f $W/scale/img.key && $(cat "$W/scale/img.key") == "$key" ]] && return
	log "scale: making the $SCALE_SIZE mixed image (seed $SEED)"
	mkdir -p "$W/scale"
	"$ROOT/scripts/mkimage.sh" mixed "$W/scale/img" "$SCALE_SIZE" "$SEED" >&2
	echo "$key" >"$W/scale/img.key"
}

# scale_pebble: the directory of the data directory's Pebble database
# (the one holding its OPTIONS file).
scale_pebble() {
	find "$W/scale/rewind" -name 'OPTIONS-*' -printf '%h\n' | head -n 1
}

# scale_prepare: a fresh data directory with the image imported and a
# clone of it; sets SC_IDX0 and SC_PACK0, the bytes before any write.
scale_prepare() {
	local dir
	rm -rf "$W/scale/rewind"
	log "scale: importing the image and cloning it (untimed)"
	if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$W/scale/rewind" import "$SCALE_VOL" "$W/scale/img" --at "$T1" ||
		! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$W/scale/rewind" clone "$SCALE_VOL@$T1" "$SCALE_CLONE"; then
		WHY="rewind import or clone failed: $(lasterr)"
		return 1
	fi
	dir=$(scale_pebble)
	[[ -n $dir ]] || { WHY="no Pebble database (OPTIONS-*) under $W/scale/rewind"; return 1; }
	SC_PEBBLE=$dir
	SC_IDX0=$(dusb "$SC_PEBBLE")
	SC_PACK0=$(($(dusb "$W/scale/rewind") - SC_IDX0))
}

# scale_serve: starts rewind serve on the scale data directory; sets
# SC_PID and SC_PORT.
scale_serve() {
	SC_PORT=$(free_port) SC_HTTP=$(free_port)
	start rewind-scale "$REWIND" --data "$W/scale/rewind" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$SC_PORT" --http "127.0.0.1:$SC_HTTP"
	SC_PID=$STARTED
	wait_server rewind-scale "$SC_PID" tcp_open 127.0.0.1 "$SC_PORT" || { stop "$SC_PID"; return 1; }
}

# scale_settle: waits (up to STEP_TIMEOUT) until the daemon has folded
# the runs of patches the writes left (rewind_fold_pending_blocks is 0),
# as a daemon that stays up does while no write comes; prints the wait.
scale_settle() {
	local start=$SECONDS n
	while ((SECONDS - start < STEP_TIMEOUT)); do
		n=$(curl -sf "http://127.0.0.1:$SC_HTTP/metrics" | awk '$1 == "rewind_fold_pending_blocks" { print $2 }')
		[[ -z $n ]] && { echo "-"; return 0; } # a build without folding
		[[ $n == 0 ]] && { echo $((SECONDS - start)); return 0; }
		sleep 0.5
	done
	echo "timeout"
}

uri() { echo "nbd://127.0.0.1:$SC_PORT/$1"; }

# scale_copy EXPORT: one nbdcopy of EXPORT to null:, MiB/s or "failed".
scale_copy() {
	local t
	timed t "$STEP_TIMEOUT" nbdcopy "$(uri "$1")" null: && mbps "$SC_BYTES" "$t" || echo failed
}

# scale_grow ADD TOTAL: ADD more 4 KiB random writes to the clone; sets
# SCR[TOTAL,rate] (writes a second, flush included).
scale_grow() {
	local add=$1 total=$2 t n
	log "scale: writing $add more (to $total) at QD$SCALE_QD"
	scale_serve || return 1
	# fio would stop after one pass over the volume: io_size lets it go
	# round again, number_ios stops it at exactly ADD writes. The seed
	# differs from step to step so each step writes other offsets.
	if ! timed t $((STEP_TIMEOUT + add / 100)) fio --name=grow --ioengine=nbd --uri="$(uri "$SCALE_CLONE")" \
		--rw=randwrite --bs=4k --iodepth="$SCALE_QD" --size="$SC_BYTES" --io_size=$((add * 4096)) \
		--number_ios="$add" --randseed="$total" --output-format=json --output="$W/fio.json"; then
		WHY="fio writing to the clone failed: $(lasterr)"
		stop "$SC_PID"
		return 1
	fi
	SCR[$total,settle]=$(scale_settle)
	log "scale: folding after the writes took ${SCR[$total,settle]} s"
	stop "$SC_PID"
	n=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["total_ios"])' "$W/fio.json")
	if [[ $n != "$add" ]]; then
		WHY="fio made $n writes where $add were asked"
		return 1
	fi
	# A few writes take as long as fio's start: no rate for them.
	SCR[$total,rate]=-
	((add < 1000)) || SCR[$total,rate]=$(calc "$add / $t" 0)
}

# scale_history TOTAL: counts the clone's write versions and sets
# SC_OLD, SC_MID and SC_NEW, the first, middle and last write's times
# (compact UTC, nanoseconds), and the byte figures.
scale_history() {
	local total=$1 idx all n
	if ! "$REWIND" --data "$W/scale/rewind" log --json "$SCALE_CLONE" >"$W/scale/log.json" 2>"$W/last.err"; then
		WHY="rewind log failed: $(lasterr)"
		return 1
	fi
	read -r n SC_OLD SC_MID SC_NEW < <(python3 -c 'import json, sys
t = [v["time"] for v in json.load(open(sys.argv[1])) if v["kind"] == "write"]
c = lambda s: s.replace("-", "").replace(":", "")
print(len(t), *(c(x) for x in (t[0], t[(len(t) - 1) // 2], t[-1])) if t else "- - -")' "$W/scale/log.json")
	rm -f "$W/scale/log.json"
	SCR[$total,versions]=$n
	if [[ $n != "$total" ]]; then
		WHY="the clone recorded $n write versions for $total writes"
		return 1
	fi
	idx=$(dusb "$SC_PEBBLE")
	all=$(dusb "$W/scale/rewind")
	SCR[$total,pebble]=$idx
	SC_ALL=$all
	SCR[$total,pebblew]=$(calc "($idx - $SC_IDX0) / $total" 0)
	SCR[$total,packw]=$(calc "($all - $idx - $SC_PACK0) / $total" 0)
}

# scale_reads TOTAL WHICH INSTANT: nbdcopy cold and warm (median of
# SCALE_REPEAT rounds), then fio, at SCALE_CLONE@INSTANT.
scale_reads() {
	local total=$1 which=$2 name=$SCALE_CLONE@$3 r t cold=() warm=()
	for ((r = 1; r <= SCALE_REPEAT; r++)); do
		log "scale: $total writes: $which instant, nbdcopy round $r of $SCALE_REPEAT"
		drop_caches
		scale_serve || return 1
		cold+=("$(scale_copy "$name")")
		warm+=("$(scale_copy "$name")")
		((r == SCALE_REPEAT)) || stop "$SC_PID"
	done
	SCR[$total,$which,cold]=$(median "${cold[@]}")
	SCR[$total,$which,warm]=$(median "${warm[@]}")
	log "scale: $total writes: $which instant, fio random reads"
	if timed t $((FIO_RUNTIME + 120)) fio --name=randread --ioengine=nbd --uri="$(uri "$name")" --rw=randread \
		--bs=4k --iodepth=32 --runtime="$FIO_RUNTIME" --time_based --size="$SC_BYTES" \
		--output-format=json --output="$W/fio.json"; then
		SCR[$total,$which,fio]=$(python3 -c 'import json, sys
print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' "$W/fio.json")
	else
		SCR[$total,$which,fio]=failed
	fi
	stop "$SC_PID"
}

# scale_opens TOTAL: open times at the three instants on a fresh server,
# then the contents checks.
scale_opens() {
	local total=$1 which name runs lines i=0 first open rd new head
	log "scale: $total writes: opening the oldest, middle and newest instants"
	drop_caches
	scale_serve || return 1
	if ! timed ignored "$STEP_TIMEOUT" python3 "$ROOT/bench/nbdopen.py" 127.0.0.1 "$SC_PORT" "$SCALE_OPENS" \
		"$SCALE_CLONE@$SC_OLD" "$SCALE_CLONE@$SC_MID" "$SCALE_CLONE@$SC_NEW"; then
		WHY="opening an instant failed: $(lasterr)"
		stop "$SC_PID"
		return 1
	fi
	mapfile -t lines <"$W/last.out"
	for which in oldest middle newest; do
		read -r name runs <<<"${lines[i++]}"
		# shellcheck disable=SC2086 # a list of runs
		read -r first open rd < <(python3 -c 'import statistics, sys
r = [tuple(map(float, x.split("/"))) for x in sys.argv[1:]]
print("%.2f %.2f %.2f" % (r[0][0], statistics.median(o for o, _ in r), statistics.median(d for _, d in r)))' $runs)
		SCR[$total,$which,open1]=$first SCR[$total,$which,open]=$open SCR[$total,$which,read]=$rd
	done
	if ! new=$(nbdcopy "$(uri "$SCALE_CLONE@$SC_NEW")" - | sha256sum) ||
		! head=$(nbdcopy "$(uri "$SCALE_CLONE")" - | sha256sum) ||
		! nbdcopy "$(uri "$SCALE_CLONE@$SC_OLD")" "$W/scale/old.img"; then
		WHY="reading the clone for the contents checks failed"
		stop "$SC_PID"
		return 1
	fi
	stop "$SC_PID"
	SCR[$total,head]=no
	[[ $new == "$head" ]] && SCR[$total,head]=yes
	SCR[$total,olddiff]=$( (cmp -l "$W/scale/old.img" "$W/scale/img" || true) | wc -l)
	rm -f "$W/scale/old.img"
}

scale_table() {
	local first=${SC_DONE[0]:-} n w r c f label
	out "A ${SCALE_SIZE} ext4 image (mkimage.sh mixed, seed $SEED), imported, then cloned; fio writes 4 KiB at random offsets into the clone at QD$SCALE_QD, each write one version, the history built up on the one clone. After each count: reads at the oldest instant (the first write's time) and the newest (the last write's): nbdcopy of the whole volume, cold (fresh server, page cache dropped) and warm, median of $SCALE_REPEAT; fio 4 KiB random reads at QD32 for $FIO_RUNTIME s, warm. \"x first\" is how many times slower than the first row (history of $first recorded write(s)) at the same instant: the target is at most 1.5."
	out ""
	out "| recorded writes | instant | nbdcopy cold, MiB/s | x first | nbdcopy warm, MiB/s | x first | fio QD32, IOPS | x first |"
	out "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	for n in "${SC_DONE[@]}"; do
		for w in oldest newest; do
			label="| $n | $w |"
			for c in cold warm fio; do
				r=${SCR[$n,$w,$c]:--} f=${SCR[$first,$w,$c]:--}
				label+=" $r | $(ratio "$f" "$r") |"
			done
			out "$label"
		done
	done
	out ""
	out "Opening an instant (bench/nbdopen.py, on a fresh server with the page cache dropped): connect, NBD_OPT_GO, one 4 KiB read at offset 0, disconnect, $SCALE_OPENS times at each instant in turn; the first open, the median open (connect to GO's ACK) and the median read after it, in ms. The target is an open under 50 ms at 1,000,000 writes."
	out ""
	out "| recorded writes | instant | first open, ms | median open, ms | x first | median first read, ms |"
	out "| ---: | --- | ---: | ---: | ---: | ---: |"
	for n in "${SC_DONE[@]}"; do
		for w in oldest middle newest; do
			r=${SCR[$n,$w,open]:--}
			out "| $n | $w | ${SCR[$n,$w,open1]:--} | $r | $(ratio "$r" "${SCR[$first,$w,open]:--}") | ${SCR[$n,$w,read]:--} |"
		done
	done
	out ""
	out "History: the write versions the clone recorded (rewind log --json), the rate fio wrote them at (QD$SCALE_QD, each step's writes over its time, the closing FLUSH included; none for a step of under 1,000 writes), and the bytes on disk of the data directory's Pebble database ($(basename "${SC_PEBBLE:-index}")/, log and tables) and of the rest (packs) per recorded write: growth since the clone over the writes. The contents checks: the newest instant reads as the writable clone; the oldest differs from the image in at most 4096 bytes (the first write). \"Fold wait\": seconds the daemon took after the writes to fold the runs of patches they left into whole blocks (rewind_fold_pending_blocks down to 0), which every read below comes after."
	out ""
	out "| recorded writes | versions recorded | writes/s | fold wait, s | Pebble bytes | Pebble bytes per write | pack bytes per write | newest = clone | bytes oldest differs from image |"
	out "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
	for n in "${SC_DONE[@]}"; do
		out "| $n | ${SCR[$n,versions]:--} | ${SCR[$n,rate]:--} | ${SCR[$n,settle]:--} | $(human "${SCR[$n,pebble]:--}") | ${SCR[$n,pebblew]:--} | ${SCR[$n,packw]:--} | ${SCR[$n,head]:--} | ${SCR[$n,olddiff]:--} |"
	done
}

# scale_room TOTAL ADD: fails, with WHY, when ADD more writes would
# probably not fit in $W. The cost of a write grows with the writes each
# block already took (4.5 KiB at 1,000 writes on 256 MiB, 26 KiB from
# 10,000 to 100,000 in 2026-12): the estimate is four times the last step's
# bytes a write, and 64 KiB (a whole block) before the first step.
scale_room() {
	local total=$1 add=$2 per need free
	per=65536
	[[ -n ${SC_LAST_ADD:-} ]] && per=$(((SC_ALL - SC_LAST_ALL) / SC_LAST_ADD * 4))
	need=$((add * per))
	free=$(df -B1 --output=avail "$W" | tail -n 1)
	((need < free)) && return 0
	WHY="growing the history to $total writes needs about $(human "$need") of disk ($(human "$per") a write), and $W has $(human "$free") free: lower BENCH_SCALE_WRITES or free space"
	return 1
}

# scale_step TOTAL ADD: one count: grow the history, then measure.
scale_step() {
	local total=$1 add=$2
	scale_room "$total" "$add" || return 1
	SC_LAST_ALL=${SC_ALL:-$(dusb "$W/scale/rewind")}
	scale_grow "$add" "$total" || return 1
	SC_LAST_ADD=$add
	SC_DONE+=("$total")
	scale_history "$total" || return 1
	scale_reads "$total" oldest "$SC_OLD" || return 1
	scale_reads "$total" newest "$SC_NEW" || return 1
	scale_opens "$total" || return 1
	if [[ ${SCR[$total,head]} != yes ]]; then
		WHY="the newest instant does not read as the clone after $total writes"
		return 1
	fi
	if [[ ${SCR[$total,olddiff]} -gt 4096 ]]; then
		WHY="the oldest instant differs from the image in ${SCR[$total,olddiff]} bytes after $total writes"
		return 1
	fi
}

section_scale() {
	section_begin scale "Scale: reading and opening instants of a long history"
	declare -gA SCR=()
	SC_DONE=()
	local why="" n prev=0 counts
	SC_ALL= SC_LAST_ADD=
	scale_check
	scale_image
	SC_BYTES=$(stat -c %s "$W/scale/img")
	read -r -a counts <<<"$SCALE_WRITES"
	if ! rewind_supports import --at || ! rewind_supports clone || ! rewind_supports serve --nbd ||
		! rewind_supports log --json || ! scale_prepare; then
		why=$WHY
	fi
	if [[ -z $why ]]; then
		for n in "${counts[@]}"; do
			if ! scale_step "$n" $((n - prev)); then
				why=$WHY
				break
			fi
			prev=$n
		done
	fi
	scale_table
	[[ -z $why ]] || not_measured "$why"
	# The history takes 13-26 KiB a write: it goes, the image stays.
	rm -rf "$W/scale/rewind"
	section_end
}
