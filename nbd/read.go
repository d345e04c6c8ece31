package nbd

import "math"

// Sparse reads: holes of at least holeMin bytes are sent as OFFSET_HOLE
// chunks; smaller ones travel as data. holeMin must be at least the 28
// bytes of an OFFSET_DATA header, which is written into the hole's unused
// space in the read buffer so that every data chunk is one contiguous
// segment. A read whose layout needs more than maxRuns runs is sent as
// one data chunk.
const (
	holeMin = 4096
	maxRuns = 1024
	// dataChunkHeaderLen is an OFFSET_DATA chunk header and its offset.
	dataChunkHeaderLen = chunkHeaderLen + 8
	holeChunkLen       = chunkHeaderLen + 12
	// maxWalk bounds the backend extents looked at for one request.
	maxWalk = 4 * maxExtents
)

// read serves NBD_CMD_READ into a pooled buffer that has room for the
// reply header in front, so that header and data leave in one write.
func (t *transmission) read(j *job) *replyError {
	b := t.s.exp.Backend
	off, n := int64(j.req.offset), int(j.req.length)
	j.buf = t.pools.getBuf(replyHeadroom + n)
	buf := *j.buf
	if !t.s.structured {
		if err := readFull(b, buf[replyHeadroom:], off); err != nil {
			return t.backendError(j, err)
		}
		putSimpleReply(buf[replyHeadroom-simpleReplyLen:], 0, j.req.cookie)
		j.segs = append(j.segs[:0], buf[replyHeadroom-simpleReplyLen:])
		return nil
	}
	if j.req.flags&CmdFlagDF == 0 {
		j.runs = t.layout(j.runs[:0], off, int64(n))
	}
	if len(j.runs) <= 1 && (len(j.runs) == 0 || !j.runs[0].hole) {
		// One data chunk: DF asked for it, or there is no hole worth it.
		if err := readFull(b, buf[replyHeadroom:], off); err != nil {
			return t.backendError(j, err)
		}
		j.segs = append(j.segs[:0], dataChunk(buf, 0, off, int64(n), j.req.cookie, ReplyFlagDone))
		return nil
	}
	return t.sparseRead(j, buf, off)
}

// dataChunk writes an OFFSET_DATA header in front of buf's data at rel and
// returns header and data as one segment.
func dataChunk(buf []byte, rel, off, n int64, cookie uint64, flags uint16) []byte {
	start := replyHeadroom + rel - dataChunkHeaderLen
	h := buf[start:]
	putChunkHeader(h, flags, ReplyTypeOffsetData, cookie, uint32(8+n))
	be.PutUint64(h[chunkHeaderLen:], uint64(off+rel))
	return buf[start : replyHeadroom+rel+n]
}

// sparseRead reads the data runs of j.runs and replies with one chunk per
// run. Nothing is sent before every read succeeded, so the last chunk can
// carry DONE.
func (t *transmission) sparseRead(j *job, buf []byte, off int64) *replyError {
	b := t.s.exp.Backend
	holes := 0
	var rel int64
	for _, r := range j.runs {
		if r.hole {
			holes++
		} else if err := readFull(b, buf[replyHeadroom+rel:replyHeadroom+rel+r.length], off+rel); err != nil {
			return t.backendError(j, err)
		}
		rel += r.length
	}
	// Size scratch first: segments point into it.
	if cap(j.scratch) < holes*holeChunkLen {
		j.scratch = make([]byte, 0, holes*holeChunkLen)
	}
	scratch := j.scratch[:holes*holeChunkLen]
	j.segs = j.segs[:0]
	rel = 0
	for i, r := range j.runs {
		var flags uint16
		if i == len(j.runs)-1 {
			flags = ReplyFlagDone
		}
		if !r.hole {
			j.segs = append(j.segs, dataChunk(buf, rel, off, r.length, j.req.cookie, flags))
		} else {
			h := scratch[:holeChunkLen]
			scratch = scratch[holeChunkLen:]
			putChunkHeader(h, flags, ReplyTypeOffsetHole, j.req.cookie, 12)
			be.PutUint64(h[chunkHeaderLen:], uint64(off+rel))
			be.PutUint32(h[chunkHeaderLen+8:], uint32(r.length))
			j.segs = append(j.segs, h)
		}
		rel += r.length
	}
	return nil
}

// layout describes [off, off+n) as alternating data and hole runs, holes
// under holeMin folded into data. It returns no runs when the backend
// cannot tell or the layout is too fragmented; the read is then one data
// chunk.
func (t *transmission) layout(runs []run, off, n int64) []run {
	err := walkExtents(t.s.exp.Backend, off, n, func(length int64, hole bool) bool {
		runs = appendRun(runs, length, hole)
		return len(runs) <= maxRuns
	})
	if err != nil {
		t.c.log.Debug("nbd: extents for a read failed; sending data", "err", err)
		return runs[:0]
	}
	var sum int64
	for _, r := range runs {
		sum += r.length
	}
	if len(runs) > maxRuns || sum != n {
		return runs[:0] // too fragmented, or cut short by maxWalk
	}
	// Fold small holes into the data around them.
	folded := runs[:0]
	for _, r := range runs {
		if r.hole && r.length < holeMin && r.length < n {
			r.hole = false
		}
		folded = appendRun(folded, r.length, r.hole)
	}
	return folded
}

// appendRun appends a run, merging it with the last one of the same kind.
func appendRun(runs []run, length int64, hole bool) []run {
	if k := len(runs); k > 0 && runs[k-1].hole == hole {
		runs[k-1].length += length
		return runs
	}
	return append(runs, run{length, hole})
}

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation: one chunk,
// at least one extent, never a zero-length one, none past the request,
// at most one with REQ_ONE and at most maxExtents without.
func (t *transmission) blockStatus(j *job) *replyError {
	off, n := int64(j.req.offset), int64(j.req.length)
	limit := maxExtents
	if j.req.flags&CmdFlagReqOne != 0 {
		limit = 1
	}
	j.scratch = append(j.scratch[:0], make([]byte, chunkHeaderLen+4)...)
	count := 0
	var lastLen int64
	var lastFlags uint32
	flush := func() {
		j.scratch = be.AppendUint32(j.scratch, uint32(lastLen))
		j.scratch = be.AppendUint32(j.scratch, lastFlags)
		count++
	}
	err := walkExtents(t.s.exp.Backend, off, n, func(length int64, hole bool) bool {
		var flags uint32
		if hole {
			flags = StateHole | StateZero
		}
		if lastLen > 0 && flags == lastFlags {
			lastLen += length // cannot pass n, which fits in 32 bits
			return true
		}
		if lastLen > 0 {
			flush()
			if count == limit {
				lastLen = 0
				return false
			}
		}
		lastLen, lastFlags = length, flags
		return true
	})
	if err != nil {
		return t.backendError(j, err)
	}
	if lastLen > 0 {
		flush()
	}
	putChunkHeader(j.scratch, ReplyFlagDone, ReplyTypeBlockStatus, j.req.cookie, uint32(len(j.scratch)-chunkHeaderLen))
	be.PutUint32(j.scratch[chunkHeaderLen:], metaContextID)
	j.segs = append(j.segs[:0], j.scratch)
	return nil
}

// walkExtents calls fn with consecutive, nonzero runs that cover [off,
// off+n) from off on, until fn returns false or the range is covered. It
// trusts the backend for nothing: overlaps are cut, gaps and anything
// unusable are reported as data (status unknown), and lengths are clamped
// to the range.
func walkExtents(b Backend, off, n int64, fn func(length int64, hole bool) bool) error {
	cur, end := off, off+n
	calls := 0
	emit := func(to int64, hole bool) bool {
		length := to - cur
		cur = to
		calls++
		return fn(length, hole) && calls < maxWalk
	}
	for cur < end {
		exts, err := b.Extents(cur, end-cur)
		if err != nil {
			return err
		}
		progress := false
		for _, e := range exts {
			if e.Length <= 0 {
				continue
			}
			eEnd := e.Offset + e.Length
			if e.Offset > math.MaxInt64-e.Length {
				eEnd = math.MaxInt64
			}
			if eEnd <= cur {
				continue
			}
			if e.Offset > cur {
				progress = true
				if !emit(min(e.Offset, end), false) || cur >= end {
					return nil
				}
			}
			progress = true
			if !emit(min(eEnd, end), e.Hole) || cur >= end {
				return nil
			}
		}
		if !progress {
			emit(end, false)
			return nil
		}
	}
	return nil
}
