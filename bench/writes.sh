# Section "writes" of bench/run.sh (sourced): 4 KiB random writes over NBD
# to a writable clone of bench@T2 served by rewind serve, against qemu-nbd
# serving a copy of v2.img (a raw file of the same size and bytes), each on
# its own port on 127.0.0.1.
#
#   fio --ioengine=nbd --rw=randwrite --bs=4k --iodepth=QD --runtime=N
#       --time_based                                    IOPS, QD 1 and 32
#
# Every run writes to a fresh target: a new clone (rewind clone, untimed)
# or a fresh copy of v2.img. fio's nbd engine sends FLUSH before it
# disconnects; the figures include it. Afterwards the section counts the
# versions each clone recorded (rewind log): every acknowledged write must
# be one.

WRITE_DEPTHS=(1 32)
WRITE_SERVERS=(rewind qemu-nbd)
WRITE_REPEAT=${BENCH_WRITE_REPEAT:-1} # runs of each (server, depth); the median is reported
WRITES_DATA=$W/writes/rewind # the section's own data directory

# writes_data: a fresh data directory holding v2 of the volume (untimed),
# so that figures do not depend on what earlier runs left in $W/rewind
# (every write run leaves its chunks until a collector frees them).
writes_data() {
	rm -rf "$WRITES_DATA" && mkdir -p "$WRITES_DATA"
	log "writes: importing v2 into a fresh data directory (untimed)"
	if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$WRITES_DATA" import "$VOL" "$W/img/v2.img" --at "$T2"; then
		WHY="rewind import failed: $(lasterr)"
		return 1
	fi
}

# writes_start SERVER TARGET: starts SERVER on a free port serving TARGET
# (a clone's name, or a raw file); sets NBD_PID and NBD_URI.
writes_start() {
	local port
	port=$(free_port)
	case $1 in
	rewind)
		start rewind-serve "$REWIND" --data "$WRITES_DATA" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$port"
		NBD_URI="nbd://127.0.0.1:$port/$2"
		;;
	qemu-nbd)
		start qemu-nbd qemu-nbd --format=raw --persistent --shared=16 --cache=writeback \
			--bind=127.0.0.1 --port="$port" --export-name="$VOL" "$2"
		NBD_URI="nbd://127.0.0.1:$port/$VOL"
		;;
	esac
	NBD_PID=$STARTED
	if ! wait_server "$1" "$NBD_PID" tcp_open 127.0.0.1 "$port"; then
		stop "$NBD_PID"
		return 1
	fi
}

# writes_fio DEPTH: one timed fio run against NBD_URI; prints IOPS and the
# number of writes fio completed (or "failed failed").
writes_fio() {
	local t
	if timed t $((FIO_RUNTIME + 120)) fio --name=randwrite --ioengine=nbd --uri="$NBD_URI" --rw=randwrite \
		--bs=4k --iodepth="$1" --runtime="$FIO_RUNTIME" --time_based --size="$(image_bytes)" \
		--output-format=json --output="$W/fio.json"; then
		python3 -c 'import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print("%.0f %d" % (w["iops"], w["total_ios"]))' "$W/fio.json"
	else
		echo "failed failed"
	fi
}

# writes_run SERVER DEPTH ROUND: one measurement into WR[SERVER,DEPTH]
# (appended) and, for rewind, the clone's recorded versions against fio's
# writes into WRV[DEPTH].
writes_run() {
	local s=$1 d=$2 r=$3 target v n
	case $s in
	rewind)
		target=writes-qd$d-$r
		"$REWIND" --data "$WRITES_DATA" volume rm "$target" >/dev/null 2>&1 || true
		if ! timed ignored "$STEP_TIMEOUT" "$REWIND" --data "$WRITES_DATA" clone "$VOL@$T2" "$target"; then
			WHY="rewind clone failed: $(lasterr)"
			return 1
		fi
		;;
	qemu-nbd)
		target=$W/writes.img
		cp --sparse=always "$W/img/v2.img" "$target"
		;;
	esac
	drop_caches
	writes_start "$s" "$target" || return 1
	v=$(writes_fio "$d")
	stop "$NBD_PID"
	WR[$s,$d]+=" ${v%% *}"
	if [[ $s == rewind && ${v#* } =~ ^[0-9]+$ ]]; then
		n=$("$REWIND" --data "$WRITES_DATA" log --json "$target" |
			python3 -c 'import json, sys; print(sum(v["kind"] == "write" for v in json.load(sys.stdin)))')
		WRV[$d]+=" $n/${v#* }"
		"$REWIND" --data "$WRITES_DATA" volume rm "$target" >/dev/null 2>&1 || true
	fi
	return 0
}

writes_table() {
	local d r q
	out "fio 4 KiB random writes for ${FIO_RUNTIME} s (time based) to a writable clone of the volume (rewind) and to a copy of v2.img (qemu-nbd --cache=writeback), median of $WRITE_REPEAT. The last column is rewind's IOPS over qemu-nbd's: above 1, rewind is faster."
	out ""
	out "| measurement | rewind | qemu-nbd | rewind vs qemu-nbd |"
	out "| --- | ---: | ---: | ---: |"
	for d in "${WRITE_DEPTHS[@]}"; do
		# shellcheck disable=SC2086 # a list of figures
		r=$(median ${WR[rewind,$d]:--}) q=$(median ${WR[qemu-nbd,$d]:--})
		[[ -n ${WR[rewind,$d]:-} ]] || r=-
		out "| 4 KiB random write QD$d (fio), IOPS | $r | $q | $(ratio "$r" "$q") |"
	done
	out ""
	for d in "${WRITE_DEPTHS[@]}"; do
		[[ -n ${WRV[$d]:-} ]] && out "Versions the clone recorded / writes fio completed, QD$d:${WRV[$d]}"
	done
	return 0
}

section_writes() {
	section_begin writes "NBD writes to a clone"
	images
	declare -gA WR=() WRV=()
	local why="" r d s
	if ! rewind_supports import --at || ! rewind_supports clone || ! rewind_supports serve --nbd; then
		why=$WHY
	elif ! writes_data; then
		why=$WHY
	fi
	for ((r = 1; r <= WRITE_REPEAT; r++)); do
		for d in "${WRITE_DEPTHS[@]}"; do
			for s in "${WRITE_SERVERS[@]}"; do
				[[ $s == rewind && -n $why ]] && continue
				log "writes: $s: QD$d, round $r of $WRITE_REPEAT"
				if ! writes_run "$s" "$d" "$r"; then
					[[ $s == rewind ]] || die "$s: $WHY"
					why=$WHY
				fi
			done
		done
	done
	rm -f "$W/writes.img"
	rm -rf "$WRITES_DATA"
	writes_table
	[[ -z $why ]] || not_measured "$why"
	section_end
}
