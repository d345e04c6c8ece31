# Section "protect" of bench/run.sh (sourced): 4 KiB random writes over
# NBD to a production disk, a raw file, served three ways on 127.0.0.1:
#
#   rewind    rewind serve --nbd (a fresh data directory), then
#             rewind protect prod --primary FILE: the daemon serves FILE as
#             the writable export "prod" and records every write in prod's
#             timeline
#   nbdkit    nbdkit file plugin, file=FILE
#   qemu-nbd  qemu-nbd --format=raw --cache=writeback --shared=16
#             --persistent FILE
#   nbdfile   bench/nbdfile: rewind's NBD server over FILE and nothing
#             else (no timeline): what the server itself reaches here, so
#             that each run shows what recording the writes costs on top
#
#   fio --ioengine=nbd --rw=randwrite --bs=4k --iodepth=QD --runtime=N
#       --time_based [--fsync=16]     IOPS, QD 1 and 32, without and with a
#                                     FLUSH every 16 writes
#
# FILE is a fresh copy of v2.img for every run. The page cache is dropped
# right before fio (for rewind after protect, whose import of FILE is
# untimed). fio's nbd engine sends a FLUSH before it disconnects; every
# figure includes it. After each rewind run (after `rewind unprotect`) the
# section counts the write versions prod recorded (`rewind log --json`)
# against the writes fio completed, since every acknowledged write must be
# one, and divides the growth of prod's stored bytes (`rewind volume list
# --json`, stored_bytes) and of the data directory (`du -sb`), from after
# protect to after unprotect, by the bytes fio wrote.
#
# Then the restart after a crash (prot_crash): one flushed write, SIGKILL,
# and the time until the restarted daemon serves the export again, with
# the bytes of the primary it compared with the timeline; and the same
# with the daemon killed during random writes (prot_crash_busy).

PROT_DEPTHS=(1 32)
PROT_FLUSHES=(0 16) # fio --fsync: 0 none (only the one at disconnect), 16 a FLUSH every 16 writes
PROT_SERVERS=(rewind nbdkit qemu-nbd nbdfile)
PROT_VOL=prod

# prot_data: rewind's data directory for one run; prot_primary: the file.
prot_data() { echo "$W/protect/data"; }
prot_primary() { echo "$W/protect/primary.img"; }

# prot_stored: prod's stored bytes in the running daemon's view.
prot_stored() {
	"$REWIND" --data "$(prot_data)" volume list --json | python3 -c 'import json, sys
for v in json.load(sys.stdin):
    if v["name"] == sys.argv[1]: print(v["stored_bytes"])' "$PROT_VOL"
}

# prot_start SERVER: starts SERVER on a free port serving the primary (for
# rewind: a daemon on a fresh data directory, then protect); sets NBD_PID,
# NBD_URI and, for rewind, PROT_S0 and PROT_D0 (stored bytes after protect).
prot_start() {
	local port primary name=$1
	port=$(free_port) primary=$(prot_primary)
	case $1 in
	rewind)
		rm -rf "$(prot_data)" && mkdir -p "$(prot_data)"
		name=rewind-protect
		start rewind-protect "$REWIND" --data "$(prot_data)" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$port"
		NBD_URI="nbd://127.0.0.1:$port/$PROT_VOL"
		;;
	nbdkit)
		start nbdkit nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" file "file=$primary"
		NBD_URI="nbd://127.0.0.1:$port/"
		;;
	qemu-nbd)
		start qemu-nbd qemu-nbd --format=raw --persistent --shared=16 --cache=writeback \
			--bind=127.0.0.1 --port="$port" --export-name="$VOL" "$primary"
		NBD_URI="nbd://127.0.0.1:$port/$VOL"
		;;
	nbdfile)
		start nbdfile "$W/nbdfile" -listen "127.0.0.1:$port" "$primary"
		NBD_URI="nbd://127.0.0.1:$port/"
		;;
	esac
	NBD_PID=$STARTED
	if [[ $1 == rewind ]] && ! wait_server "$name" "$NBD_PID" test -S "$(prot_data)/rewind.sock"; then
		stop "$NBD_PID"
		return 1
	fi
	if ! wait_server "$name" "$NBD_PID" tcp_open 127.0.0.1 "$port"; then
		stop "$NBD_PID"
		return 1
	fi
	[[ $1 == rewind ]] || return 0
	if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$(prot_data)" protect "$PROT_VOL" --primary "$primary"; then
		WHY="rewind protect failed: $(lasterr)"
		stop "$NBD_PID"
		return 1
	fi
	PROT_S0=$(prot_stored) PROT_D0=$(dusb "$(prot_data)")
}

# prot_fio DEPTH FSYNC: one timed fio run against NBD_URI; prints IOPS,
# the writes fio completed, the bytes it wrote and the FLUSHes it sent (or
# "failed" four times).
prot_fio() {
	local t sync=()
	((${2} == 0)) || sync=(--fsync="$2")
	if timed t $((FIO_RUNTIME + 120)) fio --name=randwrite --ioengine=nbd --uri="$NBD_URI" --rw=randwrite \
		--bs=4k --iodepth="$1" "${sync[@]}" --runtime="$FIO_RUNTIME" --time_based --size="$(image_bytes)" \
		--output-format=json --output="$W/fio-protect.json"; then
		python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
w = j["write"]
print("%.0f %d %d %d" % (w["iops"], w["total_ios"], w["io_bytes"], j.get("sync", {}).get("total_ios", 0)))' "$W/fio-protect.json"
	else
		echo "failed failed failed failed"
	fi
}

# prot_run SERVER DEPTH FSYNC: one measurement into PR[SERVER,DEPTH,FSYNC]
# and a line of details into PROT_ROWS.
prot_run() {
	local s=$1 d=$2 f=$3 v iops n bytes syncs rec=- sg=- sr=- dg=- dr=- s1 d1
	cp --sparse=always "$W/img/v2.img" "$(prot_primary)"
	prot_start "$s" || return 1
	drop_caches
	v=$(prot_fio "$d" "$f")
	read -r iops n bytes syncs <<<"$v"
	if [[ $s == rewind ]]; then
		if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$(prot_data)" unprotect "$PROT_VOL"; then
			WHY="rewind unprotect failed: $(lasterr)"
			stop "$NBD_PID"
			return 1
		fi
		s1=$(prot_stored) d1=$(dusb "$(prot_data)")
		rec=$("$REWIND" --data "$(prot_data)" log --json "$PROT_VOL" |
			python3 -c 'import json, sys; print(sum(v["kind"] == "write" for v in json.load(sys.stdin)))')
		if [[ "$bytes $s1 $d1 $PROT_S0 $PROT_D0" =~ ^[0-9]+( [0-9]+){4}$ ]] && ((bytes > 0)); then
			sg=$((s1 - PROT_S0)) dg=$((d1 - PROT_D0))
			sr=$(calc "$sg / $bytes") dr=$(calc "$dg / $bytes")
			sg=$(human "$sg") dg=$(human "$dg")
		fi
	fi
	stop "$NBD_PID"
	[[ $s != rewind ]] || rm -rf "$(prot_data)"
	rm -f "$(prot_primary)"
	PR[$s,$d,$f]=$iops
	PROT_ROWS+=("| $s | $d | $(prot_flush_name "$f") | $iops | $n | $syncs | $rec | $(human "$bytes") | $sg | $sr | $dg | $dr |")
	if [[ $s == rewind && $n =~ ^[0-9]+$ && $rec != "$n" ]]; then
		PROT_LOST+=" QD$d $(prot_flush_name "$f"): $rec versions for $n writes;"
	fi
	return 0
}

prot_flush_name() { ((${1} == 0)) && echo "none" || echo "every $1"; }

prot_table() {
	local d f r k q n best
	out "fio 4 KiB random writes for ${FIO_RUNTIME} s (time based) to a fresh copy of v2.img each run: through \`rewind protect\`, nbdkit's file plugin and qemu-nbd (--cache=writeback), and through rewind's NBD server over the file alone (bench/nbdfile: no timeline, nothing recorded). Flush: FLUSH every 16 writes (fio --fsync=16) or none but the one fio sends before it disconnects. The ratios are IOPS over the faster peer's (nbdkit or qemu-nbd): above 1, faster; rewind protect's with three decimals, against the target of 0.5. The last column is rewind protect's over its own server's alone: what recording every write leaves of the server's speed."
	out ""
	out "| measurement | rewind protect | nbdkit | qemu-nbd | rewind vs faster peer | rewind's server alone | it vs faster peer | protect vs server alone |"
	out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for d in "${PROT_DEPTHS[@]}"; do
		for f in "${PROT_FLUSHES[@]}"; do
			r=${PR[rewind,$d,$f]:--} k=${PR[nbdkit,$d,$f]:--} q=${PR[qemu-nbd,$d,$f]:--} n=${PR[nbdfile,$d,$f]:--}
			best=$(best "$k" "$q")
			out "| 4 KiB random write QD$d, flush $(prot_flush_name "$f") (fio), IOPS | $r | $k | $q | $(ratio "$r" "$best" 3) | $n | $(ratio "$n" "$best") | $(ratio "$r" "$n") |"
		done
	done
	out ""
	out "Each run: writes and FLUSHes fio completed; for rewind, the write versions prod recorded (\`rewind log --json\`) and the growth from after protect to after unprotect of prod's stored bytes (\`rewind volume list --json\`, stored_bytes) and of the data directory (\`du -sb\`), each also per byte fio wrote."
	out ""
	out "| server | QD | flush | IOPS | writes | FLUSHes | versions | bytes written | volume stored + | per byte | data dir + | per byte |"
	out "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for r in "${PROT_ROWS[@]}"; do out "$r"; done
	out ""
	out "Restart after SIGKILL (a fresh copy of v2.img protected, one flushed 64 KiB write, the daemon killed, the page cache dropped): ${PROT_CRASH:--} s from \`rewind serve\` to the export answering \`nbdinfo\`; the start compared $(human "${PROT_COMPARED:--}") of the $(human "$(image_bytes)") primary with the timeline (the regions its write-intent bitmap marks), and the write read back."
	out ""
	out "Restart after SIGKILL during writes (fio 4 KiB random writes at QD32 without flushes to a fresh copy of v2.img, the daemon killed 4 s into them, the page cache dropped): ${PROT_BUSY:--} s from \`rewind serve\` to the export answering (the daemon answered \`rewind protect status\` after ${PROT_BUSY_DAEMON:--} s, the protection resuming meanwhile); the start compared $(human "${PROT_BUSY_COMPARED:--}") of the primary (every region was written) and recorded ${PROT_BUSY_BLOCKS:--} blocks where the primary held writes the timeline had not written out."
	if [[ -n $PROT_LOST ]]; then
		out ""
		out "Versions missing or extra (every acknowledged write must be one version):$PROT_LOST"
		log "protect: versions do not match fio's writes:$PROT_LOST"
	fi
	return 0
}

# prot_restart PORT: after a SIGKILL, drops the page cache, starts the
# daemon again on PORT and waits until NBD_URI answers; sets STARTED (its
# pid), PROT_RESTART (seconds from the start to the answer) and
# PROT_RESTART_DAEMON (seconds until the daemon answered `protect
# status`: it serves everything else while the protection resumes).
prot_restart() {
	local t0 t1 td
	drop_caches
	t0=$(date +%s.%N)
	start rewind-restart "$REWIND" --data "$(prot_data)" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$1"
	if ! wait_server rewind-restart "$STARTED" "$REWIND" --data "$(prot_data)" protect status >/dev/null 2>&1; then
		stop "$STARTED"
		return 1
	fi
	td=$(date +%s.%N)
	if ! wait_server rewind-restart "$STARTED" nbdinfo --size "$NBD_URI"; then
		stop "$STARTED"
		return 1
	fi
	t1=$(date +%s.%N)
	PROT_RESTART=$(calc "$t1 - $t0") PROT_RESTART_DAEMON=$(calc "$td - $t0")
}

# prot_restart_log KEY: the number the restarted daemon logged as KEY=N
# (the comparison's compared_bytes and blocks).
prot_restart_log() { grep -o " $1=[0-9]*" "$W/rewind-restart.log" | head -n 1 | cut -d= -f2; }

# prot_crash: protect a fresh copy of v2.img, one flushed write, SIGKILL
# the daemon, drop the page cache, start it again and time until the
# export answers (nbdinfo): the start compares the primary with the
# timeline where the write-intent bitmap says writes may be unflushed.
# Sets PROT_CRASH (seconds) and PROT_COMPARED (bytes the start compared).
prot_crash() {
	local port pid
	PROT_CRASH=- PROT_COMPARED=-
	cp --sparse=always "$W/img/v2.img" "$(prot_primary)"
	prot_start rewind || return 1
	port=${NBD_URI#nbd://127.0.0.1:} port=${port%%/*}
	if ! timed ignored "$STEP_TIMEOUT" qemu-io -f raw -c "write -P 0x5c 100M 64k" -c flush "$NBD_URI"; then
		WHY="qemu-io write before the crash failed: $(lasterr)"
		stop "$NBD_PID"
		return 1
	fi
	kill -KILL "$NBD_PID" 2>/dev/null
	stop "$NBD_PID"
	prot_restart "$port" || return 1
	pid=$STARTED PROT_CRASH=$PROT_RESTART PROT_COMPARED=$(prot_restart_log compared_bytes)
	if ! timed ignored "$STEP_TIMEOUT" qemu-io -f raw -r -c "read -P 0x5c 100M 64k" "$NBD_URI" || grep -q "Pattern verification failed" "$W/last.out"; then
		WHY="the flushed write did not survive SIGKILL: $(lasterr)"
		stop "$pid"
		return 1
	fi
	stop "$pid"
	rm -rf "$(prot_data)" "$(prot_primary)"
}

# prot_crash_busy: protect a fresh copy of v2.img, fio 4 KiB random writes
# at QD32 without flushes, SIGKILL the daemon 4 s into them, drop the page
# cache, start it again and time until the export answers: the worst case
# for the start, whose bitmap then marks the whole primary. Sets
# PROT_BUSY (seconds), PROT_BUSY_COMPARED (bytes compared) and
# PROT_BUSY_BLOCKS (blocks the start recorded: the writes that the primary
# kept and the timeline had not written out when it was killed).
prot_crash_busy() {
	local port fio_pid
	PROT_BUSY=- PROT_BUSY_DAEMON=- PROT_BUSY_COMPARED=- PROT_BUSY_BLOCKS=-
	cp --sparse=always "$W/img/v2.img" "$(prot_primary)"
	prot_start rewind || return 1
	port=${NBD_URI#nbd://127.0.0.1:} port=${port%%/*}
	fio --name=randwrite --ioengine=nbd --uri="$NBD_URI" --rw=randwrite --bs=4k --iodepth=32 \
		--runtime=30 --time_based --size="$(image_bytes)" --output=/dev/null >/dev/null 2>&1 &
	fio_pid=$!
	sleep 4
	kill -KILL "$NBD_PID" 2>/dev/null
	stop "$NBD_PID"
	wait "$fio_pid" 2>/dev/null
	prot_restart "$port" || return 1
	PROT_BUSY=$PROT_RESTART PROT_BUSY_DAEMON=$PROT_RESTART_DAEMON PROT_BUSY_COMPARED=$(prot_restart_log compared_bytes) PROT_BUSY_BLOCKS=$(prot_restart_log blocks)
	stop "$STARTED"
	rm -rf "$(prot_data)" "$(prot_primary)"
}

section_protect() {
	section_begin protect "Continuous protection: NBD writes through rewind protect"
	images
	declare -gA PR=()
	PROT_ROWS=() PROT_LOST=""
	local why="" d f s
	if ! rewind_supports "protect start" --primary || ! rewind_supports unprotect || ! rewind_supports serve --nbd; then
		why=$WHY
	fi
	mkdir -p "$W/protect"
	(cd "$ROOT" && go build -o "$W/nbdfile" ./bench/nbdfile) || die "cannot build bench/nbdfile"
	for d in "${PROT_DEPTHS[@]}"; do
		for f in "${PROT_FLUSHES[@]}"; do
			for s in "${PROT_SERVERS[@]}"; do
				[[ $s == rewind && -n $why ]] && continue
				log "protect: $s: QD$d, flush $(prot_flush_name "$f")"
				if ! prot_run "$s" "$d" "$f"; then
					[[ $s == rewind ]] || die "$s: $WHY"
					why=$WHY
				fi
			done
		done
	done
	if [[ -z $why ]]; then
		log "protect: restart after SIGKILL"
		prot_crash || why=$WHY
	fi
	if [[ -z $why ]]; then
		log "protect: restart after SIGKILL during writes"
		prot_crash_busy || why=$WHY
	fi
	rm -rf "$W/protect"
	prot_table
	[[ -z $why ]] || not_measured "$why"
	section_end
}
