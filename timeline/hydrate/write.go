package hydrate

import (
	"context"
	"fmt"
)

// Write is one write of the export to the clone, from BeginWrite to
// Finish, FinishZeroes or Abort (exactly one of them).
type Write struct {
	c        *Copier
	id       uint64
	off, n   int64
	r        span
	ok       bool // the range touches the source
	blocking bool // write-blocking mode when it began
}

// BeginWrite is called by the export before it writes [off, off+n) to
// the clone. In write-blocking mode it waits for copies and other
// writes in flight over the range, so that neither older data from a
// copy nor an overlapping write lands on the target after this one, and
// holds the range until the write finishes. A Checkpoint taken before
// the write finishes saves the range as dirty.
func (c *Copier) BeginWrite(ctx context.Context, off, n int64) (*Write, error) {
	w := &Write{c: c, off: off, n: n}
	w.r, w.ok = c.spanOf(off, n)
	if !w.ok {
		return w, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.mu.mode == ModeWriteBlocking && c.activeLocked() && c.mu.inflight.anySet(w.r.lo, w.r.hi) {
		if c.onWait != nil {
			c.onWait()
		}
		if err := c.waitLocked(ctx); err != nil {
			return nil, err
		}
	}
	w.id = c.mu.nextWrite
	c.mu.nextWrite++
	c.mu.writing[w.id] = w.r
	if c.mu.state == StateConverged { // not converged until it finishes
		c.mu.state = StateCopying
	}
	if c.mu.mode == ModeWriteBlocking && c.activeLocked() {
		w.blocking = true
		// Granules the write covers whole will be clean once it lands on
		// the target; partly covered ones keep their bit.
		f0, f1 := int((off+c.gran-1)/c.gran), int(min(off+n, c.size)/c.gran)
		if off+n >= c.size {
			f1 = w.r.hi
		}
		if f0 < f1 {
			c.mu.dirty.clearRange(f0, f1)
		}
		c.mu.zero.clearRange(w.r.lo, w.r.hi)
		c.mu.inflight.setRange(w.r.lo, w.r.hi)
	}
	return w, nil
}

// activeLocked reports whether the copy still takes writes to the target.
func (c *Copier) activeLocked() bool {
	return c.mu.state == StateCopying || c.mu.state == StateConverged
}

// Finish is called once the write of p at the offset given to BeginWrite
// has landed in the clone, before the export acknowledges it. In
// background mode it marks the range dirty; in write-blocking mode it
// writes p to the target. On a target error the range is marked dirty,
// the copy fails and the error is returned; the clone holds the data, so
// the export may still acknowledge the write.
func (w *Write) Finish(p []byte) error {
	return w.finish(func() error {
		_, err := w.c.dst.WriteAt(p, w.off)
		return err
	})
}

// FinishZeroes is Finish for a trim or a write of zeroes, after which
// the clone reads zeroes in the range.
func (w *Write) FinishZeroes() error {
	return w.finish(func() error { return w.c.dst.WriteZeroes(w.off, w.n) })
}

// Abort ends a write whose clone write failed; the range is marked dirty
// in case part of it landed.
func (w *Write) Abort() { w.finish(nil) }

func (w *Write) finish(write func() error) error {
	c := w.c
	if !w.ok {
		return nil
	}
	var err error
	if w.blocking && write != nil {
		if err = write(); err != nil {
			err = fmt.Errorf("write through to target at %d+%d: %w", w.off, w.n, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.mu.writing, w.id)
	if w.blocking {
		c.mu.inflight.clearRange(w.r.lo, w.r.hi)
	}
	switch {
	case !w.blocking || write == nil:
		c.markDirtyLocked(w.r)
	case err != nil:
		c.mu.dirty.setRange(w.r.lo, w.r.hi)
		c.failLocked(err)
	default:
		c.mu.writes++
		if c.mu.state == StateConverged {
			c.mu.state = StateCopying
		}
	}
	c.notifyLocked()
	return err
}
