package blockstore

import "fmt"

// PutDelta is Put for data that is chunk base (whose bytes, old, the
// caller read from this store) with one run of bytes changed: a small
// write into a block of a writable clone. The new chunk is stored as a
// slices record (see CodecSlices): base's bytes, or, when base is a
// slices record itself, base's segments, around the changed run, found by
// comparing data with old. That takes no fingerprint lookups, no second
// read of base and no compression of the whole block. When it does not
// apply (more than a quarter of the block would be literal, or base's
// sources cannot be referenced) it is Put.
func (t *Txn) PutDelta(data []byte, base ID, old []byte) (PutResult, error) {
	id := Sum(data)
	if len(data) != len(old) || len(data) < minSlicedBlock || id == base {
		return t.PutID(id, data)
	}
	lo, hi := 0, len(data)
	for lo < hi && data[lo] == old[lo] {
		lo++
	}
	for hi > lo && data[hi-1] == old[hi-1] {
		hi--
	}
	// Runs shorter than minRun are not worth a reference.
	if lo < minRun {
		lo = 0
	}
	if len(data)-hi < minRun {
		hi = len(data)
	}
	if hi-lo > len(data)/maxDeltaShare {
		return t.PutID(id, data)
	}
	segs, ok := t.s.deltaSegments(t, base, len(data), lo, hi)
	if !ok {
		return t.PutID(id, data)
	}
	t.mu.Lock()
	seen := t.mu.added[id]
	t.mu.Unlock()
	if seen {
		return t.placed(id), nil
	}
	if ok, loc, err := t.s.hasAt(t, id); err != nil || ok {
		return PutResult{ID: id, Place: Place{loc: loc, ok: ok}}, err
	}
	// The literal bytes are a few kilobytes that a guest just wrote: s2
	// compresses them at a fraction of zstd's cost, on the writer's path.
	lc := t.s.codec
	if lc == CodecZstd {
		lc = CodecS2
	}
	payload := t.s.codecs.encodeSlices(lc, data, segs)
	r := newRun()
	defer r.release()
	at, loc := r.add(id, len(data), payload, CodecSlices, false)
	pack, off, err := t.s.write(r, t)
	if err != nil {
		return PutResult{}, err
	}
	t.s.locs.forget(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.added[id] {
		// Another goroutine's entry wins; ours is garbage.
		return PutResult{ID: id, Place: Place{loc: t.mu.locs[id], ok: true}}, nil
	}
	loc.pack, loc.offset = pack, off+at
	t.addedLocked(id, loc)
	return PutResult{ID: id, New: true, Stored: loc.size(), Place: Place{loc: loc, ok: true}}, nil
}

// PutDelta stores a slices record when at most 1/maxDeltaShare of the
// block is literal bytes (compressing the block whole rarely saves more),
// in at most maxDeltaSegments segments.
const (
	maxDeltaShare    = 4
	maxDeltaSegments = 64
)

// deltaSegments returns the segments of a chunk of n bytes that holds the
// bytes of chunk base but for [lo, hi), which are literal: base's own
// bytes where base is stored whole, else, where base is a slices record,
// its segments with [lo, hi) cut out. ok is false when base may not be
// used that way, or the result has too many literal bytes or segments.
func (s *Store) deltaSegments(t *Txn, base ID, n, lo, hi int) ([]segment, bool) {
	gen := s.sweepGen.Load()
	loc, err := s.locate(base)
	if err != nil || !s.usableSource(t, base, loc, gen) {
		return nil, false
	}
	old := []segment{{length: uint32(n), ref: true, src: base}}
	if loc.codec == CodecSlices {
		if old, err = s.slicesOf(base, loc); err != nil {
			return nil, false
		}
		for _, sg := range old {
			if sg.ref {
				if sloc, err := s.locate(sg.src); err != nil || sloc.codec == CodecSlices || !s.usableSource(t, sg.src, sloc, gen) {
					return nil, false
				}
			}
		}
	} else if int(loc.decodedLen) != n {
		return nil, false
	}
	var out []segment
	lits := 0
	add := func(sg segment) {
		if sg.length == 0 {
			return
		}
		if !sg.ref {
			lits += int(sg.length)
			if k := len(out) - 1; k >= 0 && !out[k].ref {
				out[k].length += sg.length
				return
			}
		}
		out = append(out, sg)
	}
	at := 0
	for _, sg := range old {
		end := at + int(sg.length)
		// The parts of sg before, inside and after [lo, hi).
		for _, cut := range [3][2]int{{at, min(end, lo)}, {max(at, lo), min(end, hi)}, {max(at, hi), end}} {
			a, b := cut[0], cut[1]
			if a >= b {
				continue
			}
			piece := segment{length: uint32(b - a)}
			if sg.ref && (b <= lo || a >= hi) {
				piece.ref, piece.src, piece.offset = true, sg.src, sg.offset+uint32(a-at)
			}
			add(piece)
		}
		at = end
	}
	if at != n || lits > n/maxDeltaShare || len(out) > maxDeltaSegments {
		return nil, false
	}
	return out, true
}

// slicesOf reads the segments of slices chunk id.
func (s *Store) slicesOf(id ID, loc location) ([]segment, error) {
	f, err := s.file(loc.pack)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, loc.size())
	if n, err := f.ReadAt(buf, loc.offset); n != len(buf) {
		return nil, fmt.Errorf("chunk %s: %w: pack %d truncated at %d: %v", id, ErrCorrupt, loc.pack, loc.offset, err)
	}
	if err := checkRecord(id, loc, buf[:recordHeaderSize], buf[recordHeaderSize:]); err != nil {
		return nil, err
	}
	segs, _, _, err := s.codecs.parseSlices(buf[recordHeaderSize:], int(loc.decodedLen))
	return segs, err
}

// usableSource reports whether chunk id, at loc, may be referenced by
// what t stores: its record is within its pack and not in another
// import's discardable region (see has), and no collection swept
// anything since gen or is sweeping it (see gc.go). A usable source is
// recorded as relied on.
func (s *Store) usableSource(t *Txn, id ID, loc location, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.mu.gc; g != nil && g.doomed[id] || s.sweepGen.Load() != gen {
		return false
	}
	ok := loc.offset+loc.size() <= s.packEndLocked(loc.pack) && !s.inLiveRegionLocked(t, loc)
	if ok {
		s.useLocked(t, id)
	}
	return ok
}
