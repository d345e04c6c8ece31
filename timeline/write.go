package timeline

import (
	"bytes"
	"fmt"

	"github.com/rewind-dev/rewind/blockstore"
)

// Block sizes a volume may have.
const (
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 1 << 20
	DefaultBlockSize = 64 << 10
	// maxBlocksPerVersion bounds one write version; larger zeroing is
	// split into several versions.
	maxBlocksPerVersion = 1 << 16
)

// WriteAt writes p at off as a new version of the clone. A write that
// covers part of a block reads the rest of it first. It returns
// ErrReadOnly on history and ErrNoSpace past the end.
func (v *View) WriteAt(p []byte, off int64) (int, error) {
	err := v.write(off, int64(len(p)), VersionWrite, func(buf []byte, at int64) { copy(buf, p[at-off:]) })
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteZeroes makes [off, off+n) read as zeroes, storing holes.
func (v *View) WriteZeroes(off, n int64) error {
	return v.zero(off, n, VersionZero)
}

// Trim discards [off, off+n): it reads as zeroes afterwards (the NBD and
// FUSE contracts allow any content; zeroes are what a hole costs nothing to
// keep).
func (v *View) Trim(off, n int64) error {
	return v.zero(off, n, VersionTrim)
}

func (v *View) zero(off, n int64, kind VersionKind) error {
	if !v.head {
		return ErrReadOnly
	}
	m, _, err := v.state()
	if err != nil {
		return err
	}
	step := maxBlocksPerVersion * m.BlockSize
	for n > 0 {
		k := min(n, step-off%m.BlockSize)
		if err := v.write(off, k, kind, func(buf []byte, _ int64) { clear(buf) }); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// write makes one version of [off, off+n); fill puts the new bytes of the
// block range starting at absolute offset at into buf.
//
// Writes of one volume run side by side: each holds its volume's writeMu
// shared (an import or a removal holds it alone) and the locks of the
// blocks it covers (see blockLocks) while it reads the rest of a partial
// block, fills and stores its chunks, and takes commitMu only to stamp its
// version and commit it. Writes to a block therefore read what the one
// before committed, and versions commit in the order of their times.
func (v *View) write(off, n int64, kind VersionKind, fill func(buf []byte, at int64)) error {
	if !v.head {
		return ErrReadOnly
	}
	if v.closed.Load() {
		return ErrClosed
	}
	if err := v.s.guard.Err(); err != nil {
		return err
	}
	vs, err := v.s.state(v.vol)
	if err != nil {
		return err
	}
	vs.writeMu.RLock()
	defer vs.writeMu.RUnlock()
	m, _, err := v.state()
	if err != nil {
		return err
	}
	if off < 0 || n < 0 || off > m.Size || n > m.Size-off {
		return ErrNoSpace
	}
	if n == 0 {
		return nil
	}
	bs := m.BlockSize
	b0, b1 := off/bs, (off+n-1)/bs+1
	v.s.fold.lastWrite.Store(monoNow())
	defer vs.blocks.lock(uint64(b0), uint64(b1))()
	// The newest metadata, now that no other writer of these blocks is
	// between its read and its commit.
	if m, _, err = v.state(); err != nil {
		return err
	}
	// Zeroing a block that is a hole already changes nothing: it is not
	// recorded, and a trim of nothing but holes records no version (a
	// guest running fstrim in a loop would grow the index without end).
	var holes []blockRef
	if kind == VersionZero || kind == VersionTrim {
		holes = make([]blockRef, b1-b0)
		if err := v.s.resolve(m, m.Last, uint64(b0), holes); err != nil {
			return err
		}
	}
	w := v.s.newVersionWriter(nil, 0, kind)
	staged := make([]stagedBlock, 0, b1-b0)
	var buf []byte
	for b := b0; b < b1; b++ {
		if holes != nil && holes[b-b0].hole() {
			continue
		}
		start := b * bs
		blen := min(bs, m.Size-start)
		lo, hi := max(start, off), min(start+blen, off+n)
		var sb stagedBlock
		if lo > start || hi < start+blen {
			sb, err = v.writePart(w, vs, m, b, lo-start, hi-lo, fill)
		} else {
			if buf == nil {
				buf = make([]byte, bs)
			}
			blk := buf[:blen]
			fill(blk, lo)
			sb, err = w.store(uint64(b), blk, blockstore.ID{}, nil)
			if err == nil {
				vs.patches.set(uint64(b), 0)
			}
		}
		if err != nil {
			w.abort()
			return err
		}
		staged = append(staged, sb)
	}
	if len(staged) == 0 {
		w.abort()
		return nil
	}
	vs.commitMu.Lock()
	defer vs.commitMu.Unlock()
	if m, _, err = v.state(); err != nil {
		w.abort()
		return err
	}
	v.s.mu.Lock()
	w.t = v.s.nextTimeLocked(0)
	v.s.mu.Unlock()
	w.meta = m.clone()
	for _, sb := range staged {
		if err := w.setStaged(sb); err != nil {
			w.abort()
			return err
		}
	}
	return w.commit(false)
}

// writePart stages the write of n bytes at within in block b: a patch
// of those bytes alone, which reads nothing, while the block's run of
// patches is short; else the whole block, read, modified and stored as
// a new base.
func (v *View) writePart(w *versionWriter, vs *volState, m *Volume, b, within, n int64, fill func(buf []byte, at int64)) (stagedBlock, error) {
	run, err := v.s.patchRun(vs, m, uint64(b))
	if err != nil {
		return stagedBlock{}, fmt.Errorf("read before write: %w", err)
	}
	start := b * m.BlockSize
	if run < maxPatches {
		data := make([]byte, n)
		fill(data, start+within)
		sb, err := w.storePatch(uint64(b), uint32(within), data)
		if err == nil {
			vs.patches.set(uint64(b), uint8(run+1))
			v.s.wrote(v.vol, uint64(b), run+1)
		}
		return sb, err
	}
	blk := make([]byte, min(m.BlockSize, m.Size-start))
	base, old, err := v.s.readBlock(m, b, blk)
	if err != nil {
		return stagedBlock{}, fmt.Errorf("read before write: %w", err)
	}
	fill(blk[within:within+n], start+within)
	sb, err := w.store(uint64(b), blk, base, old)
	if err == nil {
		vs.patches.set(uint64(b), 0)
	}
	return sb, err
}

// readBlock reads block b of m as of its newest version into blk, and
// returns the chunk it held and a copy of its bytes (nil for a hole or a
// patched block): the new chunk is mostly the old one (see
// blockstore.Txn.PutDelta).
func (s *Store) readBlock(m *Volume, b int64, blk []byte) (blockstore.ID, []byte, error) {
	var ref [1]blockRef
	if err := s.resolve(m, m.Last, uint64(b), ref[:]); err != nil {
		return blockstore.ID{}, nil, err
	}
	if !ref[0].plain() {
		if err := s.assemble(&ref[0], blk, true); err != nil {
			return blockstore.ID{}, nil, fmt.Errorf("read %s block %d: %w", m.Name, b, err)
		}
		return blockstore.ID{}, nil, nil
	}
	if ref[0].kind != refChunk {
		clear(blk)
		return blockstore.ID{}, nil, nil
	}
	id := ref[0].id
	var old []byte
	err := s.cache.ReadMany([]blockstore.ID{id}, nil, func(_ int, data []byte) {
		clear(blk[copy(blk, data):])
		old = bytes.Clone(data)
	})
	if err != nil {
		return blockstore.ID{}, nil, fmt.Errorf("read %s block %d: %w", m.Name, b, err)
	}
	return id, old, nil
}

// Flush makes every write acknowledged so far durable.
func (v *View) Flush() error {
	if v.closed.Load() {
		return ErrClosed
	}
	return v.s.Flush()
}
