# Section "store" of bench/run.sh (sourced): rewind with its packs in an
# S3 bucket (--store s3://BUCKET) against its local store and against
# restic on the same object store. The object store is SeaweedFS, one
# `weed server -s3` process on 127.0.0.1 that the section starts (data
# under $W/store/weed) and SIGKILLs at its end.
#
#   import  v1.img, then v2.img (page cache dropped before each), into a
#           fresh data directory with the local store, and with
#           --store s3://rwbench (the command returns once everything is
#           in the bucket); restic backup of the same image file on the
#           same SeaweedFS (restic -r s3:http://127.0.0.1:PORT/restic,
#           repository initialised untimed): seconds and MiB/s of image
#           bytes. Target: rewind on S3 at least 1.5x restic's speed.
#           Bytes in DATA and in the buckets (rclone size), and after v1
#           how much of it is packs kept in segments (packseg/: a pack
#           whose synced ranges hold it in at most 32 objects stays so).
#   reads   from rewind serve, export bench@T2, cold: page cache dropped
#           and a fresh daemon (whose cache of pack blocks starts empty):
#           nbdcopy of the whole image (median of STORE_REPEAT, the two
#           stores taking turns) and fio 4 KiB random reads at QD32 for
#           BENCH_FIO_RUNTIME seconds, local store against S3. Target:
#           cold sequential reads from S3 at least 0.5 of the local
#           store's. For scale, the object store's own read speed:
#           rclone copy of every pack object to the local disk.
#   replicate  rewind replicate --to s3://rwbench-replica (packs and the
#           index) against rclone copy of the same pack objects to
#           another bucket of the same SeaweedFS, through rclone (two
#           remotes, as for two sites, so no server-side copy): MiB/s of
#           bytes that arrived.
STORE_REPEAT=${BENCH_STORE_REPEAT:-5}
STORE_WEED=${BENCH_WEED:-${REWIND_WEED:-/var/cache/rewind/weed-$(sed -n 's/^weed_version=//p' "$ROOT/scripts/deps.sh")}}
S3_KEY=rewindbench
S3_SECRET=rewindbenchsecret
S3_BUCKET=rwbench
S3_REPLICA=rwbench-replica
S3_RCLONE=rclone-replica
S3_RESTIC=restic

st_dir() { echo "$W/store"; }

# st_ports N: N ports P, each with P+10000 free too (SeaweedFS's gRPC),
# into PORTS.
st_ports() {
	PORTS=()
	local p tries=0
	while ((${#PORTS[@]} < $1)); do
		((tries++ < 1000)) || die "no free ports with P+10000 free for SeaweedFS"
		p=$(free_port)
		((p + 10000 <= 65535)) || continue
		[[ " ${PORTS[*]} " == *" $p "* || " ${PORTS[*]} " == *" $((p + 10000)) "* ]] && continue
		python3 -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' \
			$((p + 10000)) 2>/dev/null || continue
		PORTS+=("$p")
	done
}

# s3_curl METHOD PATH [CURL ARGS...]: a signed request to SeaweedFS.
s3_curl() {
	local method=$1 path=$2
	shift 2
	curl -fsS -o /dev/null --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$method" "$@" "$S3_ENDPOINT/$path"
}

# weed_ready: whether SeaweedFS takes a PUT (it does only once the filer's
# lock ring has formed, seconds after its ports answer).
weed_ready() {
	s3_curl PUT weed-ready 2>/dev/null || true # exists already after the first try
	s3_curl PUT weed-ready/probe --data-binary ready 2>/dev/null
}

# weed_start: SeaweedFS with an S3 gateway on fresh ports; sets
# WEED_PID, S3_ENDPOINT, and the environments the clients need.
weed_start() {
	local d
	d=$(st_dir)/weed
	rm -rf "$d" && mkdir -p "$d"
	printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
		"$S3_KEY" "$S3_SECRET" >"$d/s3.json"
	st_ports 4
	S3_ENDPOINT=http://127.0.0.1:${PORTS[3]}
	start weed env WEED_MASTER_VOLUME_GROWTH_COPY_1=1 WEED_MASTER_VOLUME_GROWTH_ALLOCATION_DEFERRAL=0s \
		"$STORE_WEED" server -s3 -dir="$d" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-master.port="${PORTS[0]}" -volume.port="${PORTS[1]}" -filer.port="${PORTS[2]}" -s3.port="${PORTS[3]}" \
		-s3.config="$d/s3.json" -master.volumeSizeLimitMB=1024 -volume.max=0 \
		-master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 -debug.port=0 -volume.preStopSeconds=0 \
		-filer.localSocket="$d/f.sock" -s3.localSocket="$d/s3.sock"
	WEED_PID=$STARTED
	local deadline=$((SECONDS + 120)) t0=$SECONDS
	until weed_ready; do
		kill -0 "$WEED_PID" 2>/dev/null || die "weed exited: $(tail -n 3 "$W/weed.log")"
		((SECONDS < deadline)) || die "SeaweedFS took no PUT within 120 s (log: $W/weed.log)"
		sleep 0.25
	done
	log "store: SeaweedFS at $S3_ENDPOINT takes PUTs after $((SECONDS - t0)) s"
	weed_warm
	S3ENV=(env -u REWIND_STORE AWS_ENDPOINT_URL="$S3_ENDPOINT" AWS_ACCESS_KEY_ID="$S3_KEY"
		AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_REGION=us-east-1)
	LOCALENV=(env -u REWIND_STORE)
	# rclone's remotes from the environment: "src" and "dst" are the same
	# endpoint, as two sites would be two: data goes through rclone.
	local r
	for r in SRC DST; do
		export "RCLONE_CONFIG_${r}_TYPE=s3" "RCLONE_CONFIG_${r}_PROVIDER=Other" \
			"RCLONE_CONFIG_${r}_ENDPOINT=$S3_ENDPOINT" "RCLONE_CONFIG_${r}_ACCESS_KEY_ID=$S3_KEY" \
			"RCLONE_CONFIG_${r}_SECRET_ACCESS_KEY=$S3_SECRET" "RCLONE_CONFIG_${r}_REGION=us-east-1"
	done
	export RCLONE_CONFIG=/dev/null
	# rclone 1.60 refuses any AWS_CA_BUNDLE with its own HTTP transport
	# ("LoadCustomCABundleError"); the endpoint is plain HTTP.
	RCLONE=(env -u AWS_CA_BUNDLE rclone)
}

# weed_warm: 512 MiB of PUTs, untimed, 4 at a time, into a bucket of its
# own. The first few hundred MiB that a fresh SeaweedFS takes cost it
# half as much CPU again as later ones (a 1 GiB import that took 6.4-6.7 s
# took 8.9-10.3 s as the first writer); whichever tool ran first paid it.
weed_warm() {
	local f=$W/store-warm.bin t0=$SECONDS
	head -c 8M /dev/urandom >"$f"
	s3_curl PUT weed-warm 2>/dev/null || true
	seq 64 | xargs -P 4 -I{} curl -fsS -o /dev/null --max-time 60 --aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$S3_KEY:$S3_SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT \
		--data-binary "@$f" "$S3_ENDPOINT/weed-warm/{}" || die "SeaweedFS refused the warm-up PUTs"
	rm -f "$f"
	log "store: SeaweedFS warmed with 512 MiB of PUTs in $((SECONDS - t0)) s"
}

# weed_kill: SIGKILL, the data is thrown away.
weed_kill() {
	{ kill -KILL "$WEED_PID" && wait "$WEED_PID"; } 2>/dev/null || true # quiet: no "Killed"
	stop "$WEED_PID"
	rm -rf "$(st_dir)/weed"
}

# s3_bytes BUCKET[/PREFIX]: the bytes of the objects there.
s3_bytes() {
	"${RCLONE[@]}" size --json "src:$1" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])' 2>/dev/null || echo -
}

# pack_bytes BUCKET: the bytes of its packs, sealed whole (packs/) or in
# the segments a pack may stay in (packseg/).
pack_bytes() {
	local a b
	a=$(s3_bytes "$1/packs") b=$(s3_bytes "$1/packseg")
	[[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && echo $((a + b)) || echo -
}

# PACK_FILTER selects a bucket's pack objects, both kinds, for rclone.
PACK_FILTER=(--include "/packs/**" --include "/packseg/**")

# st_rewind KIND: into RW_CMD, bin/rewind on the data directory of KIND
# (local or s3) with its environment.
st_rewind() {
	if [[ $1 == s3 ]]; then
		RW_CMD=("${S3ENV[@]}" "$REWIND" --data "$(st_dir)/$1")
	else
		RW_CMD=("${LOCALENV[@]}" "$REWIND" --data "$(st_dir)/$1")
	fi
}

# st_import KIND: v1 then v2 into a fresh data directory of KIND; into
# ST[imp,KIND,1|2]. Returns non-zero, with WHY, when rewind fails.
st_import() {
	local kind=$1 v t store=()
	rm -rf "$(st_dir)/$kind"
	[[ $kind == s3 ]] && store=(--store "s3://$S3_BUCKET")
	for v in 1 2; do
		t=T$v
		drop_caches
		log "store: rewind import of v$v, $kind store"
		st_rewind "$kind"
		if ! timed "ST[imp,$kind,$v]" "$STEP_TIMEOUT" "${RW_CMD[@]}" "${store[@]}" import "$VOL" "$W/img/v$v.img" --at "${!t}"; then
			WHY="rewind import of v$v ($kind store) failed: $(lasterr)"
			ST[imp,$kind,$v]=-
			return 1
		fi
		store=() # the data directory remembers it
		if [[ $kind == s3 && $v == 1 ]]; then
			ST[bucket1,s3]=$(s3_bytes "$S3_BUCKET") ST[seg1,s3]=$(s3_bytes "$S3_BUCKET/packseg")
		fi
	done
	ST[data,$kind]=$(dusb "$(st_dir)/$kind")
}

st_restic() {
	local d v
	d=$(st_dir)
	RESTIC_S3=(env AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET"
		restic --repo "s3:$S3_ENDPOINT/$S3_RESTIC" --password-file "$W/restic.pw" --cache-dir "$d/restic-cache")
	rm -rf "$d/restic-cache" "$d/stage" && mkdir -p "$d/stage"
	"${RESTIC_S3[@]}" init -q >/dev/null 2>"$W/last.err" || die "restic init on SeaweedFS failed: $(lasterr)"
	for v in 1 2; do
		ln -f "$W/img/v$v.img" "$d/stage/disk.img"
		drop_caches
		log "store: restic backup of v$v to SeaweedFS"
		if ! timed "ST[imp,restic,$v]" "$STEP_TIMEOUT" "${RESTIC_S3[@]}" backup -q --host bench "$d/stage/disk.img"; then
			ST[imp,restic,$v]="failed: $(lasterr)"
			break
		fi
	done
	rm -rf "$d/stage"
	ST[bucket,restic]=$(s3_bytes "$S3_RESTIC")
}

# st_serve KIND: rewind serve on KIND's data directory; sets NBD_PID and
# NBD_URI.
st_serve() {
	local port
	port=$(free_port)
	st_rewind "$1"
	start "rewind-store-$1" "${RW_CMD[@]}" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$port"
	NBD_PID=$STARTED
	NBD_URI="nbd://127.0.0.1:$port/$VOL@$T2C"
	wait_server "rewind-store-$1" "$NBD_PID" test -S "$(st_dir)/$1/rewind.sock" &&
		wait_server "rewind-store-$1" "$NBD_PID" tcp_open 127.0.0.1 "$port" || { stop "$NBD_PID"; return 1; }
}

# st_cold KIND METRIC: a fresh daemon on an empty page cache, one
# measurement (nbd_measure's seq or fio) into COLD_V.
st_cold() {
	drop_caches
	st_serve "$1" || { WHY="rewind serve ($1 store): $WHY"; return 1; }
	COLD_V=$(nbd_measure "$2")
	stop "$NBD_PID"
}

# st_reads: the cold reads, the two stores taking turns.
st_reads() {
	local r k order=(local s3)
	for ((r = 0; r < STORE_REPEAT; r++)); do
		if ((r % 2)); then order=(s3 local); else order=(local s3); fi
		for k in "${order[@]}"; do
			log "store: cold nbdcopy, $k store, round $((r + 1)) of $STORE_REPEAT"
			st_cold "$k" seq || return 1
			ST[seq,$k]+=" $COLD_V"
		done
	done
	for k in local s3; do
		log "store: cold fio random reads, $k store"
		st_cold "$k" fio || return 1
		ST[fio,$k]=${COLD_V%% *} ST[fio99,$k]=${COLD_V#* }
	done
	# For scale: the object store's own read speed, all the packs
	# downloaded by rclone (4 transfers at once) to the local disk.
	local down
	down=$(st_dir)/rclone-down
	rm -rf "$down"
	ST[down,bytes]=$(pack_bytes "$S3_BUCKET")
	drop_caches
	log "store: rclone copy of the packs to the local disk"
	timed "ST[down,t]" "$STEP_TIMEOUT" "${RCLONE[@]}" copy "${PACK_FILTER[@]}" "src:$S3_BUCKET" "$down" || ST[down,t]="failed: $(lasterr)"
	rm -rf "$down"
	# The export from S3 holds v2's bytes (warm: not timed).
	st_serve s3 || return 1
	if nbdcopy "$NBD_URI" - 2>/dev/null | cmp -s - "$W/img/v2.img"; then
		ST[same]=yes
	else
		ST[same]="NO: the export differs from v2.img"
	fi
	stop "$NBD_PID"
}

# st_replicate: rewind replicate to a second bucket against rclone copy
# of the first bucket's packs to a third.
st_replicate() {
	ST[rep,rclone,bytes]=$(pack_bytes "$S3_BUCKET")
	drop_caches
	log "store: rclone copy of the packs"
	if timed "ST[rep,rclone,t]" "$STEP_TIMEOUT" "${RCLONE[@]}" copy "${PACK_FILTER[@]}" "src:$S3_BUCKET" "dst:$S3_RCLONE"; then
		local got
		got=$(pack_bytes "$S3_RCLONE")
		[[ $got == "${ST[rep,rclone,bytes]}" ]] || ST[rep,rclone,t]="failed: $(human "$got") of $(human "${ST[rep,rclone,bytes]}") arrived"
	else
		ST[rep,rclone,t]="failed: $(lasterr)"
	fi
	if ! rewind_supports replicate --to; then
		ST[rep,why]=$WHY
		return
	fi
	drop_caches
	log "store: rewind replicate"
	st_rewind s3
	if ! timed "ST[rep,rewind,t]" "$STEP_TIMEOUT" "${RW_CMD[@]}" replicate --to "s3://$S3_REPLICA"; then
		ST[rep,why]="rewind replicate failed: $(lasterr)"
		ST[rep,rewind,t]=-
		return
	fi
	ST[rep,rewind,bytes]=$(s3_bytes "$S3_REPLICA")
	ST[rep,rewind,packs]=$(pack_bytes "$S3_REPLICA")
	# The replica serves v2 (a reader on it, its own data directory).
	rm -rf "$(st_dir)/replica"
	if "${S3ENV[@]}" "$REWIND" --store "s3://$S3_REPLICA" --read-only --data "$(st_dir)/replica" \
		export "$VOL@$T2" - 2>"$W/last.err" | cmp -s - "$W/img/v2.img"; then
		ST[rep,same]=yes
	else
		ST[rep,same]="NO: $(lasterr)"
	fi
}

# st_speed SECONDS: MiB/s of the image, or "-".
st_speed() { [[ $1 =~ ^[0-9.]+$ ]] && mbps "$(image_bytes)" "$1" || echo -; }

st_table() {
	local v l s r
	out "Command: \`BENCH_SIZE=$SIZE BENCH_STORE_REPEAT=$STORE_REPEAT BENCH_FIO_RUNTIME=$FIO_RUNTIME bench/run.sh store\` ($(nproc) cores, load average $ST_LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; ${STORE_WEED##*/}, $(restic version | cut -d' ' -f1-2), $(rclone version 2>/dev/null | head -n 1))."
	out ""
	out "One SeaweedFS process (\`weed server -s3\`) on 127.0.0.1 holds the buckets, warmed with 512 MiB of PUTs before the first timed step; the page cache is dropped before every step (SeaweedFS's volume files too). Speed ratios: above 1, the first named is faster."
	out ""
	out "| import of the $SIZE image | rewind, local store | rewind, S3 | restic, S3 | rewind S3 / local | rewind S3 / restic S3 (target ≥ 1.5) |"
	out "| --- | ---: | ---: | ---: | ---: | ---: |"
	for v in 1 2; do
		l=${ST[imp,local,$v]:--} s=${ST[imp,s3,$v]:--} r=${ST[imp,restic,$v]:--}
		out "| v$v, s | $l | $s | $r | $(ratio "$l" "$s") | $(ratio "$r" "$s") |"
		l=$(st_speed "$l") s=$(st_speed "$s") r=$(st_speed "$r")
		out "| v$v, MiB/s of image | $l | $s | $r | $(ratio "$s" "$l") | $(ratio "$s" "$r") |"
	done
	out "| in DATA after v2 | $(human "${ST[data,local]:--}") | $(human "${ST[data,s3]:--}") | - | - | - |"
	out "| in the bucket after v1 (of which packs kept in segments, packseg/) | - | $(human "${ST[bucket1,s3]:--}") ($(human "${ST[seg1,s3]:--}")) | - | - | - |"
	out "| in the bucket after v2 | - | $(human "${ST[bucket,s3]:--}") | $(human "${ST[bucket,restic]:--}") | - | $(ratio "${ST[bucket,s3]:--}" "${ST[bucket,restic]:--}") |"
	out ""
	# shellcheck disable=SC2086 # lists of figures
	l=$(median ${ST[seq,local]:--}) s=$(median ${ST[seq,s3]:--})
	out "| cold read of $VOL@T2 from rewind serve (fresh daemon) | local store | S3 | S3 / local |"
	out "| --- | ---: | ---: | ---: |"
	out "| sequential (nbdcopy), MiB/s, median of $STORE_REPEAT (target ≥ 0.5) | $l | $s | $(ratio "$s" "$l") |"
	l=${ST[fio,local]:--} s=${ST[fio,s3]:--}
	out "| 4 KiB random QD32 (fio, ${FIO_RUNTIME} s), IOPS | $l | $s | $(ratio "$s" "$l") |"
	l=${ST[fio99,local]:--} s=${ST[fio99,s3]:--}
	out "| fio p99 latency, µs (ratio: local / S3) | $l | $s | $(ratio "$l" "$s") |"
	s=-
	[[ ${ST[down,t]:-} =~ ^[0-9.]+$ && ${ST[down,bytes]:-} =~ ^[0-9]+$ ]] && s=$(mbps "${ST[down,bytes]}" "${ST[down,t]}")
	out "| for scale: rclone copy of the packs ($(human "${ST[down,bytes]:--}")) from the bucket to the local disk, MiB/s of objects | - | $s | - |"
	out ""
	out "Runs, MiB/s: local${ST[seq,local]:- -}; S3${ST[seq,s3]:- -}. The export from S3 holds exactly v2's bytes: ${ST[same]:--}"
	out ""
	local rt=${ST[rep,rewind,t]:--} ct=${ST[rep,rclone,t]:--} rs=- cs=-
	[[ $rt =~ ^[0-9.]+$ && ${ST[rep,rewind,bytes]:-} =~ ^[0-9]+$ ]] && rs=$(mbps "${ST[rep,rewind,bytes]}" "$rt")
	[[ $ct =~ ^[0-9.]+$ && ${ST[rep,rclone,bytes]:-} =~ ^[0-9]+$ ]] && cs=$(mbps "${ST[rep,rclone,bytes]}" "$ct")
	out "| replication to another bucket | bytes copied | s | MiB/s |"
	out "| --- | ---: | ---: | ---: |"
	out "| rewind replicate --to s3://$S3_REPLICA (packs and index) | $(human "${ST[rep,rewind,bytes]:--}") (packs $(human "${ST[rep,rewind,packs]:--}")) | $rt | $rs |"
	out "| rclone copy of the packs (through rclone) | $(human "${ST[rep,rclone,bytes]:--}") | $ct | $cs |"
	out "| rewind / rclone, MiB/s | - | - | $(ratio "$rs" "$cs") |"
	if [[ -n ${ST[rep,why]:-} ]]; then
		out ""
		out "rewind replicate not measured: ${ST[rep,why]}"
		log "rewind replicate not measured: ${ST[rep,why]}"
	else
		out ""
		out "The replica serves v2 (rewind --store s3://$S3_REPLICA --read-only export, compared): ${ST[rep,same]:--}"
	fi
}

section_store() {
	section_begin store "Storage beyond one machine: S3 (SeaweedFS)"
	images
	[[ -x $STORE_WEED ]] || die "no SeaweedFS binary at $STORE_WEED: run make deps"
	declare -gA ST=()
	ST_LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
	mkdir -p "$(st_dir)"
	weed_start
	local why= help
	if ! rewind_supports import --at; then
		why=$WHY
	elif ! help=$("$REWIND" --help 2>&1) || ! grep -q -- --store <<<"$help"; then
		why="rewind has no --store yet"
	fi
	if [[ -z $why ]]; then
		st_import local || why=$WHY
	fi
	if [[ -z $why ]]; then
		st_import s3 || why=$WHY
		ST[bucket,s3]=$(s3_bytes "$S3_BUCKET")
	fi
	st_restic
	if [[ -z $why ]]; then
		st_reads || why=$WHY
	fi
	[[ -n $why ]] && ST[rep,why]="no rewind data on S3: $why" || st_replicate
	weed_kill
	st_table
	[[ -z $why ]] || not_measured "$why"
	section_end
}
