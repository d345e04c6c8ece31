package hydrate

import (
	"context"
	"fmt"
)

// spanOf returns the granules touching [off, off+n), clipped to the
// source; ok is false when none do.
func (c *Copier) spanOf(off, n int64) (span, bool) {
	if n <= 0 || off >= c.size || off+n <= 0 {
		return span{}, false
	}
	off, end := max(off, 0), min(off+n, c.size)
	return span{int(off / c.gran), int((end + c.gran - 1) / c.gran)}, true
}

// MarkDirty records that [off, off+n) of the source changed. The
// export's write path calls it after a write (or trim, or write of
// zeroes) to the clone has landed, in background mode; WriteThrough
// calls it itself.
func (c *Copier) MarkDirty(off, n int64) {
	r, ok := c.spanOf(off, n)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.state == StateCutOver {
		return
	}
	c.mu.dirty.setRange(r.lo, r.hi)
	if c.mu.state == StateConverged {
		c.mu.state = StateCopying
	}
	c.notifyLocked()
}

// BeginWrite registers a write of [off, off+n) about to land in the
// clone; the export calls the returned end after the write landed and
// after WriteThrough or MarkDirty. A Checkpoint taken in between saves
// the range as dirty, so a crash cannot leave a landed write unrecorded.
func (c *Copier) BeginWrite(off, n int64) (end func()) {
	r, ok := c.spanOf(off, n)
	if !ok {
		return func() {}
	}
	c.mu.Lock()
	id := c.mu.nextWrite
	c.mu.nextWrite++
	c.mu.writing[id] = r
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.mu.writing, id)
		c.mu.Unlock()
	}
}

// maxPrio bounds the queue of prioritised ranges; older ones drop.
const maxPrio = 64

// Prioritize asks for [off, off+n) to be copied before the rest. The
// export's read path calls it for reads of the workload.
func (c *Copier) Prioritize(off, n int64) {
	r, ok := c.spanOf(off, n)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.mu.dirty.anySet(r.lo, r.hi) {
		return
	}
	if len(c.mu.prio) >= maxPrio {
		c.mu.prio = c.mu.prio[1:]
	}
	c.mu.prio = append(c.mu.prio, r)
	c.notifyLocked()
}

// WriteThrough is the export's hook after a write of p at off has landed
// in the clone, before it is acknowledged. In background mode it marks
// the range dirty. In write-blocking mode it waits for copies in flight
// over the range (so none of their older data lands last), then writes p
// to the target. On a target error the range stays dirty, the copy
// fails, and the error is returned; the clone holds the data, so the
// export may still acknowledge the write.
func (c *Copier) WriteThrough(ctx context.Context, off int64, p []byte) error {
	r, ok := c.spanOf(off, int64(len(p)))
	if !ok {
		return nil
	}
	c.mu.Lock()
	for {
		if c.mu.state == StateCutOver {
			c.mu.Unlock()
			return ErrCutOver
		}
		if c.mu.mode != ModeWriteBlocking || c.mu.state == StateFailed || c.mu.state == StateCancelled {
			c.mu.Unlock()
			c.MarkDirty(off, int64(len(p)))
			return nil
		}
		if !c.mu.inflight.anySet(r.lo, r.hi) {
			break
		}
		if c.onWait != nil {
			c.onWait()
		}
		if err := c.waitLocked(ctx); err != nil {
			c.mu.Unlock()
			c.MarkDirty(off, int64(len(p)))
			return err
		}
	}
	// Granules the write covers whole are clean once it lands; a write
	// that lands on the clone meanwhile marks them dirty again.
	f0, f1 := int((off+c.gran-1)/c.gran), int((off+int64(len(p)))/c.gran)
	if off+int64(len(p)) >= c.size {
		f1 = r.hi
	}
	if f0 < f1 {
		c.mu.dirty.clearRange(f0, f1)
	}
	c.mu.zero.clearRange(r.lo, r.hi)
	c.mu.inflight.setRange(r.lo, r.hi)
	c.mu.Unlock()

	_, err := c.dst.WriteAt(p, off)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.inflight.clearRange(r.lo, r.hi)
	if err != nil {
		c.mu.dirty.setRange(r.lo, r.hi)
		err = fmt.Errorf("write through to target at %d+%d: %w", off, len(p), err)
		c.failLocked(err)
		return err
	}
	c.mu.writes++
	if c.mu.state == StateConverged {
		c.mu.state = StateCopying
	}
	c.notifyLocked()
	return nil
}
