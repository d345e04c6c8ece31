# Section "integrity" of bench/run.sh (sourced): what Reed-Solomon
# parity costs and how fast the store is scrubbed, on v2.img imported
# alone into a data directory of the section's own ($W/integrity/data).
#
#   import  rewind import of v2.img into a fresh data directory, page
#           cache dropped, with parity (the default; the command returns
#           once every pack's parity file is written, as the store closes)
#           and with `rewind --no-parity` (REWIND_NO_PARITY=1): seconds
#           of wall time and of CPU (user + system), the two taking
#           turns, median of INT_REPEAT
#   bytes   the parity files' bytes over the packs' (expected: 1/8)
#   scrub   rewind --json verify, no daemon (the CLI opens the store):
#           MiB/s of pack bytes checked (the JSON's "bytes"), cold (page
#           cache dropped) then warm; with parity (units against their
#           CRC-32C in the parity file) and with the parity files moved
#           aside and --no-parity (each record decompressed and hashed),
#           taking turns, median of INT_REPEAT; and the time to open
#           the store (rewind volume list --json), the scrub's fixed cost
#   reads   nbdcopy nbd://127.0.0.1:PORT/bench null: from rewind serve,
#           cold (fresh daemon, page cache dropped) then warm, with the
#           parity files in place and with them moved aside (the daemon
#           run with --no-parity, so that it does not write them again),
#           and from qemu-nbd serving v2.img for scale; the three take
#           turns, median of INT_REPEAT; and the server's CPU time for
#           the two reads (/proc/PID/stat). Healthy reads never open a parity
#           file: the two rewind figures are the same code path, and
#           should differ only by noise.
INT_REPEAT=${BENCH_INTEGRITY_REPEAT:-3}

int_dir() { echo "$W/integrity"; }
int_data() { echo "$W/integrity/data"; }

# int_sum EXT: the bytes of the data directory's *.EXT files.
int_sum() {
	find "$(int_data)/packs" -maxdepth 1 -name "*.$1" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# int_parity_aside / int_parity_back: move the parity files out of the
# packs directory and back.
int_parity_aside() {
	mkdir -p "$(int_dir)/par-aside"
	find "$(int_data)/packs" -maxdepth 1 -name '*.par' -exec mv -t "$(int_dir)/par-aside" {} +
}
int_parity_back() {
	find "$(int_dir)/par-aside" -maxdepth 1 -name '*.par' -exec mv -t "$(int_data)/packs" {} +
}

# int_import MODE: one timed import of v2.img into a fresh data
# directory, with parity (on) or without (off); appends to INT_IMP[MODE].
# The last import with parity stays as the section's data.
int_import() {
	local mode=$1 d t
	d=$(int_dir)/import-$mode
	rm -rf "$d"
	local env=()
	[[ $mode == off ]] && env=(env REWIND_NO_PARITY=1)
	drop_caches
	# The CPU time too (user + system, of the command and what it ran):
	# on a busy machine it moves less than the wall time.
	local TIMEFORMAT='%3U %3S'
	if ! { time timed t "$STEP_TIMEOUT" "${env[@]}" "$REWIND" --data "$d" import "$VOL" "$W/img/v2.img"; } 2>"$W/cpu.txt"; then
		WHY="rewind import failed: $(lasterr)"
		return 1
	fi
	INT_IMP[$mode]+=" $t"
	INT_CPU[$mode]+=" $(awk '{ printf "%.3f", $1 + $2 }' "$W/cpu.txt")"
	if [[ $mode == on ]]; then
		rm -rf "$(int_data)"
		mv "$d" "$(int_data)"
	else
		rm -rf "$d"
	fi
}

# int_scrub_once: one timed rewind verify --json; prints "MiB/s bytes
# with_parity packs" or "failed".
int_scrub_once() {
	local t
	if timed t "$STEP_TIMEOUT" "$@" "$REWIND" --data "$(int_data)" --json verify; then
		python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print("%.1f %d %d %d" % (r["bytes"] / 1048576 / float(sys.argv[2]), r["bytes"], r["with_parity"], r["packs"]))' "$W/last.out" "$t"
	else
		echo failed
	fi
}

# int_scrub MODE: a scrub cold, then warm, into INT_SCRUB[MODE,CACHE].
int_scrub() {
	local mode=$1 v c env=()
	[[ $mode == off ]] && { int_parity_aside; env=(env REWIND_NO_PARITY=1); }
	for c in cold warm; do
		[[ $c == cold ]] && drop_caches
		v=$(int_scrub_once "${env[@]}")
		INT_SCRUB[$mode,$c]+=" ${v%% *}"
		[[ $v == failed ]] || INT_SCRUB_LAST[$mode]=${v#* }
	done
	[[ $mode == off ]] && int_parity_back
	local t
	if [[ $mode == on ]] && timed t "$STEP_TIMEOUT" "$REWIND" --data "$(int_data)" --json volume list; then
		INT_OPEN+=" $t"
	fi
	[[ $v != failed ]] || { WHY="rewind verify failed: $(lasterr)"; return 1; }
}

# int_start SERVER: rewind with parity (on), without (off), or qemu-nbd;
# sets NBD_PID and NBD_URI.
int_start() {
	local port name=rewind-integrity
	port=$(free_port)
	case $1 in
	on | off)
		local env=()
		[[ $1 == off ]] && env=(env REWIND_NO_PARITY=1)
		start rewind-integrity "${env[@]}" "$REWIND" --data "$(int_data)" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$port"
		NBD_URI="nbd://127.0.0.1:$port/$VOL"
		NBD_PID=$STARTED
		wait_server rewind-integrity "$NBD_PID" test -S "$(int_data)/rewind.sock" || { stop "$NBD_PID"; return 1; }
		;;
	qemu-nbd)
		start qemu-nbd qemu-nbd --read-only --format=raw --persistent --shared=16 \
			--bind=127.0.0.1 --port="$port" --export-name="$VOL" "$W/img/v2.img"
		NBD_URI="nbd://127.0.0.1:$port/$VOL"
		NBD_PID=$STARTED
		name=qemu-nbd
		;;
	esac
	wait_server "$name" "$NBD_PID" tcp_open 127.0.0.1 "$port" || { stop "$NBD_PID"; return 1; }
}

# int_read SERVER: one sequential read cold, then warm, into
# INT_READ[SERVER,CACHE].
int_read() {
	local s=$1 c t
	[[ $s == off ]] && int_parity_aside
	drop_caches
	if ! int_start "$s"; then
		[[ $s == off ]] && int_parity_back
		return 1
	fi
	for c in cold warm; do
		if timed t "$STEP_TIMEOUT" nbdcopy "$NBD_URI" null:; then
			INT_READ[$s,$c]+=" $(mbps "$(image_bytes)" "$t")"
		else
			INT_READ[$s,$c]+=" failed"
		fi
	done
	# The server's CPU time for both reads, its start included: on a busy
	# machine it moves less than the wall time.
	INT_READ[$s,cpu]+=" $(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$NBD_PID/stat" 2>/dev/null || echo failed)"
	stop "$NBD_PID"
	[[ $s == off ]] && int_parity_back
	return 0
}

# int_same: whether the export (parity on) holds exactly v2's bytes.
int_same() {
	int_start on || return 1
	if nbdcopy "$NBD_URI" - 2>/dev/null | cmp -s - "$W/img/v2.img"; then
		INT_SAME=yes
	else
		INT_SAME="NO: the export differs from v2.img"
	fi
	stop "$NBD_PID"
}

int_table() {
	local c on off q
	out "Data: v2 of the $SIZE image, imported alone into a fresh data directory. Medians of $INT_REPEAT runs; the modes take turns, in the opposite order every other round. Cold: page cache dropped (and, for reads, a fresh server)."
	out ""
	out "| measurement | cache | parity on | parity off | off / on | qemu-nbd (raw image) |"
	out "| --- | --- | ---: | ---: | ---: | ---: |"
	# shellcheck disable=SC2086 # lists of figures
	on=$(median ${INT_IMP[on]}) off=$(median ${INT_IMP[off]})
	out "| rewind import of v2.img into a fresh data directory, s | cold | $on | $off | $(ratio "$on" "$off") | - |"
	# shellcheck disable=SC2086
	on=$(median ${INT_CPU[on]}) off=$(median ${INT_CPU[off]})
	out "| the same import's CPU time (user + system), s | cold | $on | $off | $(ratio "$on" "$off") | - |"
	for c in cold warm; do
		# shellcheck disable=SC2086
		on=$(median ${INT_SCRUB[on,$c]}) off=$(median ${INT_SCRUB[off,$c]})
		out "| scrub (rewind verify --json), MiB/s of pack bytes checked (off: record by record) | $c | $on | $off | $(ratio "$off" "$on") | - |"
	done
	# shellcheck disable=SC2086
	out "| of which: opening the store (rewind volume list --json), s | warm | $(median ${INT_OPEN}) | - | - | - |"
	for c in cold warm; do
		# shellcheck disable=SC2086
		on=$(median ${INT_READ[on,$c]}) off=$(median ${INT_READ[off,$c]}) q=$(median ${INT_READ[qemu-nbd,$c]})
		out "| sequential read (nbdcopy of $VOL), MiB/s | $c | $on | $off | $(ratio "$off" "$on") | $q |"
	done
	# shellcheck disable=SC2086
	on=$(median ${INT_READ[on,cpu]}) off=$(median ${INT_READ[off,cpu]}) q=$(median ${INT_READ[qemu-nbd,cpu]})
	out "| the server's CPU time (user + system) for both reads, its start included, s | - | $on | $off | $(ratio "$on" "$off") | $q |"
	local pack par
	pack=$(int_sum pack) par=$(int_sum par)
	out ""
	out "Bytes: packs $(human "$pack"), parity files $(human "$par"): parity adds $(calc "100 * $par / $pack" 1)% ($(ratio "$par" "$pack") of the packs; 2 parity units per 16 data units is 0.125)."
	# shellcheck disable=SC2206 # "bytes with_parity packs"
	local s_on=(${INT_SCRUB_LAST[on]:-- - -}) s_off=(${INT_SCRUB_LAST[off]:-- - -})
	out "Scrub checked $(human "${s_on[0]}") in ${s_on[2]} packs, ${s_on[1]} with parity; with the parity files aside, $(human "${s_off[0]}") in ${s_off[2]} packs, ${s_off[1]} with parity."
	out "Runs: import on:${INT_IMP[on]}; off:${INT_IMP[off]}; CPU on:${INT_CPU[on]}; off:${INT_CPU[off]}. Scrub cold on:${INT_SCRUB[on,cold]}; off:${INT_SCRUB[off,cold]}; warm on:${INT_SCRUB[on,warm]}; off:${INT_SCRUB[off,warm]}. Read cold on:${INT_READ[on,cold]}; off:${INT_READ[off,cold]}; warm on:${INT_READ[on,warm]}; off:${INT_READ[off,warm]}; server CPU on:${INT_READ[on,cpu]}; off:${INT_READ[off,cpu]}."
	out ""
	out "rewind's export holds exactly v2's bytes: ${INT_SAME:--}"
	out ""
	out "off / on: above 1, turning parity off makes it faster (import and CPU: seconds on / off, the same). For reads the target is no measurable cost (about 1, within the runs' spread). Scrub times are the whole command, the store's opening included."
}

# int_order ROUND A B: A B in even rounds, B A in odd ones.
int_order() {
	if (($1 % 2)); then echo "$3 $2"; else echo "$2 $3"; fi
}

section_integrity() {
	WHY=""
	images
	section_begin integrity "Integrity: parity's cost, scrub throughput"
	local help
	if ! rewind_supports verify --repair || ! rewind_supports import || ! help=$("$REWIND" --help 2>&1) ||
		! grep -q -- --no-parity <<<"$help"; then
		[[ -n $WHY ]] || WHY="rewind has no --no-parity yet"
		not_measured "$WHY"
		section_end
		return
	fi
	declare -gA INT_IMP=() INT_CPU=() INT_SCRUB=() INT_SCRUB_LAST=() INT_READ=()
	INT_SAME= INT_OPEN=
	mkdir -p "$(int_dir)"
	# The modes take turns, and swap places every round: a process started
	# right after another one exits pays for the memory that one gave
	# back (see "Fresh memory"), so the order alone would favour one.
	local r m
	for ((r = 0; r < INT_REPEAT; r++)); do
		for m in $(int_order "$r" off on); do
			log "integrity: import, parity $m, round $((r + 1)) of $INT_REPEAT"
			int_import "$m" || { not_measured "$WHY"; section_end; return; }
		done
	done
	for ((r = 0; r < INT_REPEAT; r++)); do
		for m in $(int_order "$r" on off); do
			log "integrity: scrub, parity $m, round $((r + 1)) of $INT_REPEAT"
			int_scrub "$m" || { not_measured "$WHY"; section_end; return; }
		done
	done
	for ((r = 0; r < INT_REPEAT; r++)); do
		for m in $(int_order "$r" on off) qemu-nbd; do
			log "integrity: read, $m, round $((r + 1)) of $INT_REPEAT"
			if ! int_read "$m"; then
				[[ $m == qemu-nbd ]] && die "qemu-nbd: $WHY"
				not_measured "$WHY"
				section_end
				return
			fi
		done
	done
	int_same || { not_measured "$WHY"; section_end; return; }
	int_table
	section_end
}
