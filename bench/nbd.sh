# Section "nbd" of bench/run.sh (sourced): reads of v2 over NBD from
# rewind serve (export bench@T2), nbdkit's file plugin and qemu-nbd (both
# serving v2.img read-only), each on its own port on 127.0.0.1.
#
#   nbdcopy URI null:                                   sequential, MiB/s
#                                                       (median of BENCH_REPEAT, 5)
#   fio --ioengine=nbd --rw=randread --bs=4k --iodepth=32 --runtime=N
#                                                       IOPS and p99 latency
#   qemu-img bench -f raw -c 20000 -d DEPTH -s 4096 URI  seconds, DEPTH 1 2 4
#                                     (stopped after BENCH_QB_TIMEOUT, 60 s)
#
# Cold: the server is restarted and the page cache dropped before the run.
# Warm: right after, once the whole image has been read through the server.
# The servers take turns (see nbd_all).

NBD_SERVERS=(rewind nbdkit qemu-nbd)
NBD_METRICS=(seq fio qb1 qb2 qb4)
NBD_REPEAT=${BENCH_REPEAT:-5} # rounds of the sequential read

# nbd_start SERVER: starts it on a free port; sets NBD_PID and NBD_URI.
nbd_start() {
	local port
	port=$(free_port)
	case $1 in
	rewind)
		start rewind-serve "$REWIND" --data "$W/rewind" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$port"
		NBD_URI="nbd://127.0.0.1:$port/$VOL@$T2C"
		;;
	nbdkit)
		start nbdkit nbdkit --foreground --exit-with-parent --readonly -i 127.0.0.1 -p "$port" file "file=$W/img/v2.img"
		NBD_URI="nbd://127.0.0.1:$port/"
		;;
	qemu-nbd)
		start qemu-nbd qemu-nbd --read-only --format=raw --persistent --shared=16 \
			--bind=127.0.0.1 --port="$port" --export-name="$VOL" "$W/img/v2.img"
		NBD_URI="nbd://127.0.0.1:$port/$VOL"
		;;
	esac
	NBD_PID=$STARTED
	if ! wait_server "$1" "$NBD_PID" tcp_open 127.0.0.1 "$port"; then
		stop "$NBD_PID"
		return 1
	fi
}

# wait_server NAME PID CHECK...: waits up to 60 s for CHECK to succeed
# while PID lives.
wait_server() {
	local name=$1 pid=$2 deadline=$((SECONDS + 60))
	shift 2
	until "$@"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			WHY="$name exited: $(tail -n 1 "$W/$name.log" 2>/dev/null)"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			WHY="$name not ready after 60 s"
			return 1
		fi
		sleep 0.05
	done
}

# nbd_measure METRIC: runs one measurement against NBD_URI and prints its
# figure (or "failed").
nbd_measure() {
	local t
	case $1 in
	seq)
		timed t "$STEP_TIMEOUT" nbdcopy "$NBD_URI" null: && mbps "$(image_bytes)" "$t" || echo failed
		;;
	fio | fio99)
		if timed t $((FIO_RUNTIME + 120)) fio --name=randread --ioengine=nbd --uri="$NBD_URI" --rw=randread \
			--bs=4k --iodepth=32 --runtime="$FIO_RUNTIME" --time_based --size="$(image_bytes)" \
			--output-format=json --output="$W/fio.json"; then
			python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print("%.0f %.0f" % (r["iops"], r["clat_ns"]["percentile"]["99.000000"] / 1000))' "$W/fio.json"
		else
			echo "failed failed"
		fi
		;;
	qb*)
		# qemu's client can stall 40 ms per request at depth 2-4 against
		# some servers (delayed ACKs): 20000 requests would take 800 s.
		local rc=0
		timed t "$QB_TIMEOUT" qemu-img bench -f raw -c 20000 -d "${1#qb}" -s 4096 "$NBD_URI" || rc=$?
		case $rc in
		0) sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' "$W/last.out" ;;
		124 | 137) echo ">$QB_TIMEOUT" ;;
		*) echo failed ;;
		esac
		;;
	esac
}

# nbd_metric SERVER METRIC: one metric, cold and warm, into
# NBDR[SERVER,METRIC,CACHE].
nbd_metric() {
	local s=$1 m=$2 v
	drop_caches
	nbd_start "$s" || return 1
	v=$(nbd_measure "$m")
	[[ $m == fio ]] && { NBDR[$s,fio99,cold]=${v#* }; v=${v%% *}; }
	NBDR[$s,$m,cold]=$v
	if [[ $v == ">"* ]]; then
		NBDR[$s,$m,warm]=$v # stalled cold: it stalls warm too, no need to wait again
		stop "$NBD_PID"
		return 0
	fi
	timed ignored "$STEP_TIMEOUT" nbdcopy "$NBD_URI" null: || true
	v=$(nbd_measure "$m")
	[[ $m == fio ]] && { NBDR[$s,fio99,warm]=${v#* }; v=${v%% *}; }
	NBDR[$s,$m,warm]=$v
	stop "$NBD_PID"
}

# nbd_seq_round SERVER: one sequential read cold, then warm, with a fresh
# server and an empty page cache, appended to SEQ[SERVER,CACHE].
nbd_seq_round() {
	local s=$1
	drop_caches
	nbd_start "$s" || return 1
	SEQ[$s,cold]+=" $(nbd_measure seq)"
	SEQ[$s,warm]+=" $(nbd_measure seq)"
	stop "$NBD_PID"
}

# nbd_all: every metric of every server. The servers take turns within
# each metric, and within each round of the sequential read, so that a
# machine whose speed drifts during the section (page cache, memory the
# host has taken back, neighbours) drifts for all of them alike. A whole
# image read takes about a second and single runs of it vary by a third
# on a shared machine: it runs NBD_REPEAT times, and the medians go into
# NBDR.
nbd_all() {
	declare -gA SEQ=()
	local r m s c
	for ((r = 0; r < NBD_REPEAT; r++)); do
		for s in "${NBD_SERVERS[@]}"; do
			nbd_try "$s" "seq, round $((r + 1)) of $NBD_REPEAT" nbd_seq_round "$s"
		done
	done
	for s in "${NBD_SERVERS[@]}"; do
		for c in cold warm; do
			# shellcheck disable=SC2086 # a list of figures
			[[ -n ${SEQ[$s,$c]:-} ]] && NBDR[$s,seq,$c]=$(median ${SEQ[$s,$c]})
		done
	done
	for m in "${NBD_METRICS[@]}"; do
		[[ $m == seq ]] && continue
		for s in "${NBD_SERVERS[@]}"; do
			nbd_try "$s" "$m" nbd_metric "$s" "$m"
		done
	done
}

# nbd_try SERVER WHAT CMD...: runs CMD unless SERVER failed before; a peer
# that fails ends the benchmark, rewind failing is reported as not
# measured.
nbd_try() {
	local s=$1 what=$2
	shift 2
	[[ $s == rewind && -n $NBD_WHY ]] && return 0
	log "nbd: $s: $what"
	if ! "$@"; then
		[[ $s == rewind ]] || die "$s: $WHY"
		NBD_WHY=$WHY
	fi
}

# nbd_verify: whether rewind's export holds exactly v2's bytes.
nbd_verify() {
	nbd_start rewind || return 1
	if nbdcopy "$NBD_URI" - 2>/dev/null | cmp -s - "$W/img/v2.img"; then
		NBD_SAME=yes
	else
		NBD_SAME="NO: the export differs from v2.img"
	fi
	stop "$NBD_PID"
}

nbd_table() {
	local -A title=(
		[seq]="sequential read (nbdcopy), MiB/s" [fio]="4 KiB random read QD32 (fio), IOPS"
		[fio99]="fio p99 latency, µs" [qb1]="qemu-img bench depth 1, s" [qb2]="qemu-img bench depth 2, s"
		[qb4]="qemu-img bench depth 4, s"
	)
	out "The last column is a speed ratio against the faster of nbdkit and qemu-nbd: above 1, rewind is faster."
	out ""
	out "| measurement | cache | rewind | nbdkit | qemu-nbd | rewind vs faster peer |"
	out "| --- | --- | ---: | ---: | ---: | ---: |"
	local m c r k q peer rel
	for m in seq fio fio99 qb1 qb2 qb4; do
		for c in cold warm; do
			r=${NBDR[rewind,$m,$c]:--} k=${NBDR[nbdkit,$m,$c]:--} q=${NBDR[qemu-nbd,$m,$c]:--}
			case $m in
			seq | fio) peer=$(best "$k" "$q") && rel=$(ratio "$r" "$peer") ;;
			*) peer=$(least "$k" "$q") && rel=$(ratio "$peer" "$r") ;;
			esac
			out "| ${title[$m]} | $c | $r | $k | $q | $rel |"
		done
	done
	out ""
	out "rewind's export holds exactly v2's bytes: ${NBD_SAME:--}"
}

least() {
	printf '%s\n' "$@" | awk '/^[0-9.]+$/ { if (!n++ || $1 < m) m = $1 } END { if (n) print m; else print "-" }'
}

section_nbd() {
	section_begin nbd "NBD reads"
	images
	declare -gA NBDR=()
	NBD_SAME=
	NBD_WHY=
	if ! rewind_data_ready || ! rewind_supports serve --nbd; then
		NBD_WHY=$WHY
	fi
	nbd_all
	[[ -n $NBD_WHY ]] || nbd_verify || NBD_WHY=$WHY
	nbd_table
	[[ -z $NBD_WHY ]] || not_measured "$NBD_WHY"
	section_end
}
