# Section "recover" of bench/run.sh (sourced): instant recovery of v2
# (bench@T2) into a new file on the same filesystem as the data.
#
#   hydration   rewind recover --to FILE, from the command until
#               `recover cutover` returns (converged, target flushed,
#               export switched), against nbdcopy of the same export
#               (bench@T2) into a new file: MiB/s of the image, both cold
#               (fresh server, page cache dropped); nbdcopy --flush, as
#               converged means flushed. Best of REC_REPEAT.
#   latency     fio 4 KiB random reads at QD1 on the recovering export
#               for REC_FIO_RUNTIME s while the copy runs (at
#               REC_BWLIMIT, so it runs all along), against a recovering
#               export idle (copy converged): p50 and p99 in µs, each on
#               a fresh daemon with the page cache dropped.
#   first byte  from `rewind recover` to the first 4 KiB read answered
#               on the new export (qemu-io), for a volume of 1 GiB of
#               data and an empty 64 GiB one.
REC_REPEAT=${BENCH_REC_REPEAT:-3}
REC_BWLIMIT=${BENCH_REC_BWLIMIT:-50MiB}
REC_FIO_RUNTIME=${BENCH_REC_FIO_RUNTIME:-8}

# rec_serve: starts rewind serve on $W/rewind; sets REC_PID, REC_PORT.
rec_serve() {
	REC_PORT=$(free_port)
	start rewind-recover "$REWIND" --data "$W/rewind" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$REC_PORT"
	REC_PID=$STARTED
	wait_server rewind-recover "$REC_PID" test -S "$W/rewind/rewind.sock" &&
		wait_server rewind-recover "$REC_PID" tcp_open 127.0.0.1 "$REC_PORT"
}

rec_stop() {
	stop "$REC_PID"
	# The recoveries and their clones go, so each run starts alike.
	rm -rf "$W/rewind/recoveries" "$W/rec"
	local v
	for v in $("$REWIND" --data "$W/rewind" volume list --json | python3 -c 'import json, sys
for v in json.load(sys.stdin):
    if v["name"].startswith("rec-"): print(v["name"])'); do
		"$REWIND" --data "$W/rewind" volume rm --force "$v" >/dev/null 2>&1 || true
	done
}

# rec_state NAME: the recovery's state.
rec_state() {
	"$REWIND" --data "$W/rewind" recover status "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["state"])'
}

# rec_wait NAME LIMIT: waits for the copy to converge; fails after LIMIT s.
rec_wait() {
	local deadline=$((SECONDS + $2)) s
	while s=$(rec_state "$1") && [[ $s == copying ]]; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
	[[ $s == converged ]]
}

# rec_hydrate: one timed recovery and one timed nbdcopy, each cold.
rec_hydrate() {
	local t0 t1 t
	mkdir -p "$W/rec"
	drop_caches
	rec_serve || return 1
	t0=$(date +%s.%N)
	# cutover returns once the copy converged (target flushed) and the
	# export switched: one waiting process, no polling.
	"$REWIND" --data "$W/rewind" recover "$VOL@$T2" --to "$W/rec/target.img" --as rec-h >/dev/null &&
		timeout "$STEP_TIMEOUT" "$REWIND" --data "$W/rewind" recover cutover rec-h >/dev/null 2>&1 ||
		{ WHY="recover: $(rec_state rec-h 2>&1)"; rec_stop; return 1; }
	t1=$(date +%s.%N)
	REC_HYD+=" $(mbps "$(image_bytes)" "$(calc "$t1 - $t0" 3)")"
	rec_stop
	mkdir -p "$W/rec"
	drop_caches
	rec_serve || return 1
	timed t "$STEP_TIMEOUT" nbdcopy --flush "nbd://127.0.0.1:$REC_PORT/$VOL@$T2C" "$W/rec/copy.img" &&
		REC_COPY+=" $(mbps "$(image_bytes)" "$t")" || REC_COPY+=" failed"
	rec_stop
}

# rec_fio URI: fio 4 KiB random reads QD1; prints "p50 p99" in µs.
rec_fio() {
	if timed ignored $((REC_FIO_RUNTIME + 120)) fio --name=lat --ioengine=nbd --uri="$1" --rw=randread \
		--bs=4k --iodepth=1 --runtime="$REC_FIO_RUNTIME" --time_based --size="$(image_bytes)" \
		--output-format=json --output="$W/fio-rec.json"; then
		python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))["jobs"][0]["read"]["clat_ns"]["percentile"]
print("%.0f %.0f" % (p["50.000000"] / 1000, p["99.000000"] / 1000))' "$W/fio-rec.json"
	else
		echo "failed failed"
	fi
}

# rec_latency: fio on the recovering export idle (its copy converged,
# then the daemon restarted), then on a new recovery while it copies.
# Each run starts with a fresh daemon and an empty page cache, so both
# read cold.
rec_latency() {
	mkdir -p "$W/rec"
	rec_serve || return 1
	"$REWIND" --data "$W/rewind" recover "$VOL@$T2" --to "$W/rec/idle.img" --as rec-i >/dev/null &&
		rec_wait rec-i "$STEP_TIMEOUT" || { WHY="the copy did not converge"; rec_stop; return 1; }
	stop "$REC_PID"
	drop_caches
	rec_serve || return 1
	REC_IDLE=$(rec_fio "nbd://127.0.0.1:$REC_PORT/rec-i")
	rec_stop
	mkdir -p "$W/rec"
	drop_caches
	rec_serve || return 1
	"$REWIND" --data "$W/rewind" recover "$VOL@$T2" --to "$W/rec/target.img" --as rec-l --bwlimit "$REC_BWLIMIT" >/dev/null ||
		{ WHY="recover failed"; rec_stop; return 1; }
	REC_BUSY=$(rec_fio "nbd://127.0.0.1:$REC_PORT/rec-l")
	REC_BUSY_STATE=$(rec_state rec-l)
	rec_stop
}

# rec_first_byte VOLUME@WHEN: seconds from recover to the first read.
rec_first_byte() {
	local t0 t1 name=rec-f$RANDOM
	t0=$(date +%s.%N)
	"$REWIND" --data "$W/rewind" recover "$1" --to "$W/rec/$name.img" --as "$name" >/dev/null &&
		qemu-io -f raw -c 'read 0 4k' "nbd://127.0.0.1:$REC_PORT/$name" >/dev/null || { echo failed; return; }
	t1=$(date +%s.%N)
	calc "$t1 - $t0" 3
}

rec_ttfb() {
	mkdir -p "$W/rec"
	"$REWIND" --data "$W/rewind" volume list --json | grep -q '"name": "empty64"' ||
		"$REWIND" --data "$W/rewind" volume create empty64 --size 64GiB >/dev/null
	drop_caches
	rec_serve || return 1
	REC_TTFB1=$(rec_first_byte "$VOL@$T2")
	REC_TTFB64=$(rec_first_byte empty64@latest)
	rec_stop
}

section_recover() {
	WHY=""
	images
	section_begin recover "Instant recovery: hydration, latency during it, first byte"
	if ! rewind_supports "recover start" --bwlimit; then
		not_measured "$WHY"
		section_end
		return
	fi
	rewind_data_ready || { not_measured "$WHY"; section_end; return; }
	REC_HYD="" REC_COPY=""
	local r
	for ((r = 0; r < REC_REPEAT; r++)); do
		log "recover: hydration, round $((r + 1)) of $REC_REPEAT"
		rec_hydrate || { not_measured "$WHY"; section_end; return; }
	done
	log "recover: latency"
	rec_latency || { not_measured "$WHY"; section_end; return; }
	log "recover: first byte"
	rec_ttfb || { not_measured "$WHY"; section_end; return; }
	# shellcheck disable=SC2086 # lists of figures
	local hyd copy
	hyd=$(best $REC_HYD) copy=$(best $REC_COPY)
	out "Data: v2 of the $SIZE image, $VOL@$T2, into a new file on the same filesystem. Cold: fresh server, page cache dropped."
	out ""
	out "| measurement | rewind recover | peer | rewind vs peer |"
	out "| --- | ---: | ---: | ---: |"
	out "| hydration, MiB/s of the image (best of $REC_REPEAT; peer: nbdcopy from the same export) | $hyd | $copy | $(ratio "$hyd" "$copy") |"
	local bp50=${REC_BUSY% *} bp99=${REC_BUSY#* } ip50=${REC_IDLE% *} ip99=${REC_IDLE#* }
	out "| 4 KiB random read QD1 p50 during the copy (limit $REC_BWLIMIT; state after: $REC_BUSY_STATE), µs (peer: same export idle) | $bp50 | $ip50 | $(ratio "$bp50" "$ip50") |"
	out "| 4 KiB random read QD1 p99 during the copy, µs (peer: same export idle) | $bp99 | $ip99 | $(ratio "$bp99" "$ip99") |"
	out "| first byte, 1 GiB volume ($SIZE image), s | $REC_TTFB1 | - | - |"
	out "| first byte, empty 64 GiB volume, s | $REC_TTFB64 | - | - |"
	out ""
	out "Latency rows: the ratio is during/idle (lower is better; the target is at most 2)."
	section_end
}
