package timeline

import (
	"fmt"
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
	vs.writeMu.Lock()
	defer vs.writeMu.Unlock()
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
	v.s.mu.Lock()
	t := v.s.nextTimeLocked(0)
	v.s.mu.Unlock()
	w := v.s.newVersionWriter(m.clone(), t, kind)
	bs := m.BlockSize
	buf := make([]byte, bs)
	for b := off / bs; b*bs < off+n; b++ {
		start := b * bs
		blen := min(bs, m.Size-start)
		blk := buf[:blen]
		lo, hi := max(start, off), min(start+blen, off+n)
		if lo > start || hi < start+blen {
			// Partial block: read, modify, write.
			if err := v.s.readAt(m, m.Last, blk, start, nil, true); err != nil {
				w.abort()
				return fmt.Errorf("read before write: %w", err)
			}
		}
		fill(blk[lo-start:hi-start], lo)
		if err := w.put(uint64(b), blk); err != nil {
			w.abort()
			return err
		}
	}
	return w.commit(false)
}

// Flush makes every write acknowledged so far durable.
func (v *View) Flush() error {
	if v.closed.Load() {
		return ErrClosed
	}
	return v.s.Flush()
}
