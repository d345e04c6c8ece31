# Section "fuse" of bench/run.sh (sourced): reading v2's whole disk image
# through a FUSE file system, with dd bs=1M, from
#
#   rewind serve --mount DIR      DIR/bench/at/T2/disk.img
#   restic mount DIR              DIR/snapshots/latest/.../disk.img (the
#                                 raw image file backed up with restic)
#
# Cold: the file system is mounted afresh after the page cache is dropped.
# Warm: the same file read again at once. Each is the median of
# BENCH_REPEAT (3) mounts.

# fuse_start WHO: mounts; sets FUSE_PID and FUSE_FILE, or WHY.
fuse_start() {
	local mnt=$W/mnt-$1 name=$1-fuse
	mkdir -p "$mnt"
	unmount "$mnt"
	MOUNTS+=("$mnt")
	case $1 in
	rewind)
		start "$name" "$REWIND" --data "$W/rewind" serve "${SERVE_ARGS[@]}" --nbd "127.0.0.1:$(free_port)" --mount "$mnt"
		FUSE_FILE=$mnt/$VOL/at/$T2C/disk.img
		;;
	restic)
		start "$name" "${RESTIC[@]}" mount "$mnt"
		FUSE_FILE=$mnt/snapshots/latest$W/stage/disk.img
		;;
	esac
	FUSE_PID=$STARTED
	if ! wait_server "$name" "$FUSE_PID" test -f "$FUSE_FILE"; then
		fuse_stop "$1"
		return 1
	fi
}

fuse_stop() {
	local mnt=$W/mnt-$1
	[[ $1 == restic ]] && unmount "$mnt" # restic mount exits once unmounted
	stop "$FUSE_PID"
	if mountpoint -q "$mnt"; then
		log "$1 left $mnt mounted after it exited"
		unmount "$mnt"
	fi
}

# fuse_read WHO: cold and warm MiB/s into FUSER[WHO,CACHE], each the
# median of REPEAT mounts.
fuse_read() {
	local t bytes cache r
	local -A runs=([cold]="" [warm]="")
	bytes=$(image_bytes)
	for ((r = 0; r < REPEAT; r++)); do
		drop_caches
		fuse_start "$1" || return 1
		for cache in cold warm; do
			if timed t "$STEP_TIMEOUT" dd if="$FUSE_FILE" of=/dev/null bs=1M; then
				runs[$cache]+=" $(mbps "$bytes" "$t")"
			else
				runs[$cache]+=" failed"
			fi
		done
		if [[ $1 == rewind && $r == 0 ]]; then
			cmp -s "$FUSE_FILE" "$W/img/v2.img" && FUSE_SAME=yes || FUSE_SAME="NO: the image differs from v2.img"
		fi
		fuse_stop "$1"
	done
	for cache in cold warm; do
		# shellcheck disable=SC2086 # one word per run
		FUSER[$1,$cache]=$(median ${runs[$cache]})
	done
}

# restic_ready: a restic repository whose latest snapshot is v2 at
# $W/stage/disk.img, from the ingest section or made here, untimed.
restic_ready() {
	[[ -f $W/restic.ok ]] && return
	log "backing up v2 with restic (untimed)"
	rm -rf "$W/restic" "$W/restic-cache"
	mkdir -p "$W/stage"
	ln -f "$W/img/v2.img" "$W/stage/disk.img"
	"${RESTIC[@]}" init -q >/dev/null && "${RESTIC[@]}" backup -q --host bench "$W/stage/disk.img" >/dev/null ||
		die "restic backup of v2 failed"
	rm -f "$W/stage/disk.img"
	touch "$W/restic.ok"
}

section_fuse() {
	section_begin fuse "FUSE reads"
	images
	restic_ready
	declare -gA FUSER=()
	FUSE_SAME=
	local why=
	if ! rewind_data_ready || ! rewind_supports serve --mount; then
		why=$WHY
	fi
	log "fuse: restic"
	fuse_read restic || die "restic mount: $WHY"
	if [[ -z $why ]]; then
		log "fuse: rewind"
		fuse_read rewind || why=$WHY
	fi
	local bytes
	bytes=$(image_bytes)
	out "Reading v2's whole disk image ($(human "$bytes")) with dd bs=1M; MiB/s, higher is better."
	out ""
	out "| cache | rewind | restic mount | rewind/restic |"
	out "| --- | ---: | ---: | ---: |"
	for cache in cold warm; do
		out "| $cache | ${FUSER[rewind,$cache]:--} | ${FUSER[restic,$cache]:--} | $(ratio "${FUSER[rewind,$cache]:--}" "${FUSER[restic,$cache]:--}") |"
	done
	out ""
	out "rewind's image holds exactly v2's bytes: ${FUSE_SAME:--}"
	[[ -z $why ]] || not_measured "$why"
	section_end
}
