# Section "ingest" of bench/run.sh (sourced): backing up the mixed image
# and then its second version with rewind, restic and borg, time and bytes
# stored; then a full restore with `rewind export` against `cp`.
#
#   rewind --data D import bench v1.img --at T1; ... v2.img --at T2
#   restic --repo R --password-file P backup disk.img   (repository v2,
#       default compression "auto")
#   borg init -e none R; borg create R::v1 disk.img      (default lz4)
#
# restic and borg back up one path, $W/stage/disk.img, a hard link to v1
# and then to v2, as they would back up a disk image file that changes.
# The page cache is dropped before every timed step.

ingest_rewind() {
	RW=([t1]=- [b1]=- [t2]=- [b2]=-)
	rm -rf "$W/rewind" "$W/rewind.ok"
	if ! rewind_supports import --at; then
		not_measured "$WHY"
		return
	fi
	mkdir -p "$W/rewind"
	local v t
	for v in 1 2; do
		t=T$v
		drop_caches
		if ! timed "RW[t$v]" "$STEP_TIMEOUT" "$REWIND" --data "$W/rewind" import "$VOL" "$W/img/v$v.img" --at "${!t}"; then
			not_measured "rewind import of v$v failed: $(lasterr)"
			RW=([t1]=- [b1]=- [t2]=- [b2]=-)
			return
		fi
		RW[b$v]=$(dusb "$W/rewind")
	done
	touch "$W/rewind.ok"
}

ingest_restic() {
	RS=([t1]=- [b1]=- [t2]=- [b2]=-)
	rm -rf "$W/restic" "$W/restic.ok" "$W/restic-cache"
	"${RESTIC[@]}" init -q >/dev/null || die "restic init failed"
	local v
	for v in 1 2; do
		ln -f "$W/img/v$v.img" "$W/stage/disk.img"
		drop_caches
		if ! timed "RS[t$v]" "$STEP_TIMEOUT" "${RESTIC[@]}" backup -q --host bench "$W/stage/disk.img"; then
			RS[t$v]="failed: $(lasterr)"
			return
		fi
		RS[b$v]=$(dusb "$W/restic")
	done
	touch "$W/restic.ok"
}

ingest_borg() {
	BG=([t1]=- [b1]=- [t2]=- [b2]=-)
	rm -rf "$W/borg" "$W/borg-home"
	export BORG_BASE_DIR=$W/borg-home BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
	borg init -e none "$W/borg" || die "borg init failed"
	local v
	for v in 1 2; do
		ln -f "$W/img/v$v.img" "$W/stage/disk.img"
		drop_caches
		if ! timed "BG[t$v]" "$STEP_TIMEOUT" borg create "$W/borg::v$v" "$W/stage/disk.img"; then
			BG[t$v]="failed: $(lasterr)"
			return
		fi
		BG[b$v]=$(dusb "$W/borg")
	done
}

# added A B: bytes stored by the second backup.
added() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && echo $(($2 - $1)) || echo -; }

ingest_table() {
	local -A a=([rewind]=$(added "${RW[b1]}" "${RW[b2]}") [restic]=$(added "${RS[b1]}" "${RS[b2]}") [borg]=$(added "${BG[b1]}" "${BG[b2]}"))
	out "Lower is better in every column; ratios below 1 favour rewind."
	out ""
	out "| step | rewind | restic | borg | rewind/restic | rewind/borg |"
	out "| --- | ---: | ---: | ---: | ---: | ---: |"
	out "| v1 backup, s | ${RW[t1]} | ${RS[t1]} | ${BG[t1]} | $(ratio "${RW[t1]}" "${RS[t1]}") | $(ratio "${RW[t1]}" "${BG[t1]}") |"
	out "| v1 stored | $(human "${RW[b1]}") | $(human "${RS[b1]}") | $(human "${BG[b1]}") | $(ratio "${RW[b1]}" "${RS[b1]}") | $(ratio "${RW[b1]}" "${BG[b1]}") |"
	out "| v2 backup, s | ${RW[t2]} | ${RS[t2]} | ${BG[t2]} | $(ratio "${RW[t2]}" "${RS[t2]}") | $(ratio "${RW[t2]}" "${BG[t2]}") |"
	out "| v2 added | $(human "${a[rewind]}") | $(human "${a[restic]}") | $(human "${a[borg]}") | $(ratio "${a[rewind]}" "${a[restic]}") | $(ratio "${a[rewind]}" "${a[borg]}") |"
	out "| stored after v2 | $(human "${RW[b2]}") | $(human "${RS[b2]}") | $(human "${BG[b2]}") | $(ratio "${RW[b2]}" "${RS[b2]}") | $(ratio "${RW[b2]}" "${BG[b2]}") |"
}

# export_bench: `rewind export bench@T2 F` against `cp v2.img F`, both
# followed by sync, cold and warm.
export_bench() {
	local bytes dst=$W/export.img cache
	bytes=$(image_bytes)
	local -A cp_t=() rw_t=() rw_ok=()
	for cache in cold warm; do
		rm -f "$dst"
		[[ $cache == cold ]] && drop_caches
		timed "cp_t[$cache]" "$STEP_TIMEOUT" sh -c 'cp "$0" "$1" && sync' "$W/img/v2.img" "$dst" || die "cp failed: $(lasterr)"
	done
	local why=
	if [[ ! -f $W/rewind.ok ]]; then
		why="no rewind data: rewind import was not measured"
	elif ! rewind_supports export; then
		why=$WHY
	fi
	for cache in cold warm; do
		[[ -z $why ]] || break
		rm -f "$dst"
		[[ $cache == cold ]] && drop_caches
		if ! timed "rw_t[$cache]" "$STEP_TIMEOUT" sh -c '"$0" --data "$1" export "$2" "$3" && sync' \
			"$REWIND" "$W/rewind" "$VOL@$T2" "$dst"; then
			why="rewind export failed: $(lasterr)"
			break
		fi
		cmp -s "$dst" "$W/img/v2.img" && rw_ok[$cache]=yes || rw_ok[$cache]="NO: the export differs from v2.img"
	done
	rm -f "$dst"
	out ""
	out "Full restore of v2 ($(human "$bytes")), then sync; MiB/s, higher is better."
	out ""
	out "| cache | rewind export | cp | rewind/cp | bytes identical |"
	out "| --- | ---: | ---: | ---: | --- |"
	for cache in cold warm; do
		local r=- c
		c=$(mbps "$bytes" "${cp_t[$cache]}")
		[[ -n ${rw_t[$cache]:-} && -n ${rw_ok[$cache]:-} ]] && r=$(mbps "$bytes" "${rw_t[$cache]}")
		out "| $cache | $r | $c | $(ratio "$r" "$c") | ${rw_ok[$cache]:--} |"
	done
	[[ -z $why ]] || not_measured "$why"
}

section_ingest() {
	section_begin ingest "Ingest and restore"
	images
	mkdir -p "$W/stage"
	declare -gA RW RS BG
	ingest_rewind
	ingest_restic
	ingest_borg
	rm -f "$W/stage/disk.img"
	ingest_table
	export_bench
	section_end
}
