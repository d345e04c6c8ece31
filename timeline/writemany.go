package timeline

import (
	"cmp"
	"fmt"
	"iter"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// Write is one write of WriteMany: P at Off.
type Write struct {
	P   []byte
	Off int64
	// At is the write's time, from Store.Stamp, or 0 for the time of its
	// recording. Writes with a time must come in the order of their
	// times, each later than the volume's newest version.
	At int64
	// chunk is P hashed and encoded ahead (see Prepare), or nil.
	chunk *blockstore.Prepared
}

// Prepare returns the Write of p at off for WriteMany, with the work that
// does not wait for other writes done ahead: a write of part of one block
// (kept as a patch) is hashed and encoded here, so that writers waiting
// for their turn do it side by side. p must not change until WriteMany
// returns.
func (v *View) Prepare(p []byte, off int64) Write {
	w := Write{P: p, Off: off}
	m, _, err := v.state()
	if err != nil || !v.head || !v.lonePatch(m, off, int64(len(p))) || isZero(p) {
		return w
	}
	w.chunk = v.s.chunks.Prepare(p)
	return w
}

// Release gives back what Prepare made for w, when w is not given to
// WriteMany after all.
func (w Write) Release() { w.chunk.Release() }

// Prepared reports whether Prepare hashed and encoded the write: a
// small write of part of one block, which WriteMany stores with the
// others' in one pack write.
func (w Write) Prepared() bool { return w.chunk != nil }

// lonePatch reports whether a write of n bytes at off covers part of one
// block of m: a patch unless the block's run of patches is full.
func (v *View) lonePatch(m *Volume, off, n int64) bool {
	bs := m.BlockSize
	if n <= 0 || off < 0 || off > m.Size || n > m.Size-off {
		return false
	}
	b0, b1 := off/bs, (off+n-1)/bs+1
	start := b0 * bs
	return b1 == b0+1 && (off > start || off+n < min(start+bs, m.Size))
}

// WriteMany records writes that arrived together (a protected disk's
// clients at a high queue depth) as WriteAt would record them one after
// the other: each is its own version, with its own time, in the order
// given. What they cost one by one they share: their small writes' bytes
// reach the pack in one write, their records Pebble in one batch and one
// commit. All are recorded or none is. No two may touch the same block
// (the caller orders such writes); such a call records nothing and fails.
// Once they are recorded, the times Stamp handed out for them are
// settled; a call that fails leaves them to the caller (to try again, or
// Unstamp).
func (v *View) WriteMany(ws []Write) error {
	err := v.writeMany(ws)
	if err == nil {
		var ts []int64
		for _, w := range ws {
			if w.At != 0 {
				ts = append(ts, w.At)
			}
		}
		if len(ts) > 0 {
			v.s.Unstamp(ts...)
		}
	}
	return err
}

func (v *View) writeMany(ws []Write) error {
	defer func() { // those not stored yet
		for _, w := range ws {
			w.chunk.Release()
		}
	}()
	if len(ws) == 1 && ws[0].chunk == nil && ws[0].At == 0 {
		_, err := v.WriteAt(ws[0].P, ws[0].Off)
		return err
	}
	vs, m, err := v.writable()
	if err != nil {
		return err
	}
	defer vs.writeMu.RUnlock()
	bs := m.BlockSize
	spans := make([][2]int64, 0, len(ws)) // the blocks [b0, b1) of each write
	for _, w := range ws {
		off, n := w.Off, int64(len(w.P))
		if off < 0 || off > m.Size || n > m.Size-off {
			return ErrNoSpace
		}
		if n > 0 {
			spans = append(spans, [2]int64{off / bs, (off+n-1)/bs + 1})
		}
	}
	if len(spans) == 0 {
		return nil
	}
	slices.SortFunc(spans, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	for i := 1; i < len(spans); i++ {
		if spans[i][0] < spans[i-1][1] {
			return fmt.Errorf("timeline: writes recorded together share block %d", spans[i][0])
		}
	}
	v.s.fold.lastWrite.Store(monoNow())
	defer vs.blocks.lockSpans(spans)()
	// The newest metadata, now that no other writer of these blocks is
	// between its read and its commit.
	if m, _, err = v.state(); err != nil {
		return err
	}
	w := v.s.newVersionWriter(nil, 0, VersionWrite)
	staged, err := v.stageMany(w, vs, m, ws)
	if err != nil {
		w.abort()
		return err
	}
	vs.commitMu.Lock()
	defer vs.commitMu.Unlock()
	if m, _, err = v.state(); err != nil {
		w.abort()
		return err
	}
	meta := m.clone()
	for i := range ws {
		if len(staged[i]) == 0 {
			continue
		}
		vw := &versionWriter{s: v.s, meta: meta, kind: VersionWrite, txn: w.txn, batch: w.batch, lazy: vs}
		if at := ws[i].At; at != 0 {
			if at <= meta.Last {
				w.abort()
				return fmt.Errorf("timeline: a write stamped %s comes after the version of %s", FormatTime(at), FormatTime(meta.Last))
			}
			vw.t = at
		} else {
			v.s.mu.Lock()
			vw.t = v.s.nextTimeLocked(0)
			v.s.mu.Unlock()
		}
		for _, sb := range staged[i] {
			if err := vw.setStaged(sb); err != nil {
				w.abort()
				return err
			}
		}
		if err := vw.prepare(); err != nil {
			w.abort()
			return err
		}
	}
	w.meta = meta
	defer w.batch.Close()
	return w.finish(pebble.NoSync)
}

// stageMany stores the new block versions of ws (see stage) and returns
// each write's. A write of part of one block that keeps a patch (the
// common small write) is stored with the others' in one PutPrepared
// (hashed and encoded by Prepare, or here); any other is staged as write
// stages it.
func (v *View) stageMany(w *versionWriter, vs *volState, m *Volume, ws []Write) ([][]stagedBlock, error) {
	bs := m.BlockSize
	staged := make([][]stagedBlock, len(ws))
	type lone struct {
		i      int
		block  uint64
		within uint32
		run    int
	}
	var (
		chunks []*blockstore.Prepared
		lones  []lone
	)
	for i, wr := range ws {
		off, n := wr.Off, int64(len(wr.P))
		if n == 0 {
			continue
		}
		b0, b1 := off/bs, (off+n-1)/bs+1
		start := b0 * bs
		if v.lonePatch(m, off, n) && (wr.chunk != nil || !isZero(wr.P)) {
			run, err := v.s.patchRun(vs, m, uint64(b0))
			if err != nil {
				return nil, fmt.Errorf("read before write: %w", err)
			}
			if run < maxPatches {
				c := wr.chunk
				if c == nil {
					c = v.s.chunks.Prepare(wr.P)
				}
				chunks = append(chunks, c)
				lones = append(lones, lone{i: i, block: uint64(b0), within: uint32(off - start), run: run})
				continue
			}
		}
		sbs, err := v.stage(w, vs, m, off, n, blockRange(b0, b1), newBytes{p: wr.P, off: off})
		if err != nil {
			return nil, err
		}
		staged[i] = sbs
	}
	if len(chunks) == 0 {
		return staged, nil
	}
	res, err := w.txn.PutPrepared(chunks)
	if err != nil {
		return nil, err
	}
	for k, l := range lones {
		n := uint32(len(chunks[k].Data))
		p := &patch{off: l.within, n: n, id: res[k].ID, place: res[k].Place}
		staged[l.i] = []stagedBlock{{block: l.block, patch: p, logical: int64(n), stored: res[k].Stored}}
		vs.patches.set(l.block, uint8(l.run+1))
		v.s.wrote(v.vol, l.block, l.run+1)
	}
	return staged, nil
}

// blockRange yields the blocks [b0, b1).
func blockRange(b0, b1 int64) iter.Seq[int64] {
	return func(yield func(int64) bool) {
		for b := b0; b < b1; b++ {
			if !yield(b) {
				return
			}
		}
	}
}

// TakesWrites returns why v takes no writes now (it is history, it is
// closed, the store is unwritable), or nil.
func (v *View) TakesWrites() error {
	if !v.head {
		return ErrReadOnly
	}
	if v.closed.Load() {
		return ErrClosed
	}
	return v.s.guard.Err()
}

// Stamp hands out the time of a write of v that WriteMany records later
// (see Store.Stamp).
func (v *View) Stamp() int64 { return v.s.Stamp() }

// Unstamp gives up times Stamp handed out (see Store.Unstamp).
func (v *View) Unstamp(ts ...int64) { v.s.Unstamp(ts...) }
