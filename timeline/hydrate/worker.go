package hydrate

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// worker copies dirty ranges until ctx ends or the copy fails.
func (c *Copier) worker(ctx context.Context) error {
	buf := make([]byte, c.opt.MaxRequest)
	c.mu.Lock()
	defer c.mu.Unlock()
	for ctx.Err() == nil {
		r, ok := c.nextLocked()
		if !ok {
			// Caught up: passes that end with a few new writes after an
			// idle moment are not a failure to converge.
			if c.mu.dirty.count == 0 {
				c.mu.stalls, c.mu.passDirty = 0, 0
			}
			if c.flushDueLocked() {
				c.flushLocked()
				continue
			}
			c.convergedLocked()
			if err := c.waitLocked(ctx); err != nil {
				return nil
			}
			continue
		}
		c.mu.Unlock()
		err := c.copySpan(ctx, r, buf)
		c.mu.Lock()
		c.mu.inflight.clearRange(r.lo, r.hi)
		if err != nil {
			c.mu.dirty.setRange(r.lo, r.hi)
			if ctx.Err() == nil {
				c.failLocked(err)
			}
		} else {
			c.mu.writes++
		}
		c.notifyLocked()
	}
	return nil
}

// nextLocked picks the next dirty span not in flight, prioritised spans
// first, clears its dirty bits and marks it in flight.
func (c *Copier) nextLocked() (span, bool) {
	if c.mu.state != StateCopying && c.mu.state != StateConverged {
		return span{}, false
	}
	i, prio := -1, false
	for len(c.mu.prio) > 0 && i < 0 {
		p := c.mu.prio[0]
		if i = c.mu.dirty.nextAndNot(&c.mu.inflight, p.lo, p.hi); i < 0 {
			c.mu.prio = c.mu.prio[1:]
		}
		prio = i >= 0
	}
	if i < 0 {
		i = c.mu.dirty.nextAndNot(&c.mu.inflight, c.mu.cursor, c.n)
	}
	if i < 0 {
		if i = c.mu.dirty.nextAndNot(&c.mu.inflight, 0, c.mu.cursor); i >= 0 {
			c.endPassLocked()
		}
	}
	if i < 0 {
		return span{}, false
	}
	maxG := int(c.opt.MaxRequest / c.gran)
	j := i + 1
	for j < c.n && j-i < maxG && c.mu.dirty.get(j) && !c.mu.inflight.get(j) {
		j++
	}
	c.mu.dirty.clearRange(i, j)
	c.mu.inflight.setRange(i, j)
	if !prio { // a prioritised pick leaves the pass where it was
		c.mu.cursor = j
	}
	if c.mu.state == StateConverged {
		c.mu.state = StateCopying
	}
	return span{i, j}, true
}

// endPassLocked counts a wrap of the cursor and switches to
// write-blocking mode once the dirty count stops shrinking.
func (c *Copier) endPassLocked() {
	c.mu.passes++
	d := c.mu.dirty.count
	if d >= c.mu.passDirty {
		c.mu.stalls++
	} else {
		c.mu.stalls = 0
	}
	c.mu.passDirty = d
	if c.opt.StallPasses > 0 && c.mu.stalls >= c.opt.StallPasses && c.mu.mode == ModeBackground {
		c.mu.mode = ModeWriteBlocking
		c.opt.Logger.Info("hydrate: not converging, switching to write-blocking mode",
			"passes", c.mu.passes, "dirty_granules", d)
	}
}

// flushDueLocked reports whether all is copied but not flushed.
func (c *Copier) flushDueLocked() bool {
	return c.mu.dirty.count == 0 && c.mu.inflight.count == 0 &&
		c.mu.writes != c.mu.flushed && !c.mu.flushing &&
		(c.mu.state == StateCopying || c.mu.state == StateConverged)
}

// flushLocked flushes the target without holding the lock.
func (c *Copier) flushLocked() {
	c.mu.flushing = true
	w := c.mu.writes
	c.mu.Unlock()
	err := c.dst.Flush()
	c.mu.Lock()
	c.mu.flushing = false
	if err != nil {
		c.failLocked(fmt.Errorf("flush target: %w", err))
		return
	}
	c.mu.flushed = max(c.mu.flushed, w)
	c.notifyLocked()
}

// isConvergedLocked: nothing dirty, nothing in flight, no write of the
// export between BeginWrite and Finish, target flushed.
func (c *Copier) isConvergedLocked() bool {
	return c.mu.dirty.count == 0 && c.mu.inflight.count == 0 && len(c.mu.writing) == 0 &&
		c.mu.writes == c.mu.flushed && !c.mu.flushing
}

// convergedLocked moves a copying job to converged when it is.
func (c *Copier) convergedLocked() {
	if c.mu.state == StateCopying && c.isConvergedLocked() {
		c.mu.state = StateConverged
		c.notifyLocked()
	}
}

// copySpan copies granules [r.lo, r.hi) from the source to the target.
func (c *Copier) copySpan(ctx context.Context, r span, buf []byte) error {
	off := int64(r.lo) * c.gran
	end := min(int64(r.hi)*c.gran, c.size)
	for off < end {
		exts, err := c.src.Extents(off, end-off)
		if err != nil {
			return fmt.Errorf("extents of source at %d: %w", off, err)
		}
		if len(exts) == 0 {
			return fmt.Errorf("extents of source at %d: none reported", off)
		}
		for _, e := range exts {
			lo, hi := max(e.Offset, off), min(e.Offset+e.Length, end)
			if lo >= hi {
				continue
			}
			if e.Hole {
				err = c.zeroRange(lo, hi)
			} else {
				err = c.copyData(ctx, lo, hi, buf)
			}
			if err != nil {
				return err
			}
			off = hi
		}
	}
	return nil
}

// zeroRange makes [lo, hi) zero on the target unless it is known zero.
func (c *Copier) zeroRange(lo, hi int64) error {
	g0, g1 := int(lo/c.gran), int((hi+c.gran-1)/c.gran)
	c.mu.Lock()
	known := c.mu.zero.allSet(g0, g1)
	c.mu.Unlock()
	if known {
		return nil
	}
	if err := c.dst.WriteZeroes(lo, hi-lo); err != nil {
		return fmt.Errorf("zero target at %d+%d: %w", lo, hi-lo, err)
	}
	c.copied.Add(hi - lo)
	// Only granules wholly inside [lo, hi) are now known zero.
	f0, f1 := int((lo+c.gran-1)/c.gran), int(hi/c.gran)
	if hi == c.size {
		f1 = g1
	}
	c.mu.Lock()
	if f0 < f1 {
		c.mu.zero.setRange(f0, f1)
	}
	c.mu.Unlock()
	return nil
}

// copyData copies [lo, hi), all data, in pieces of len(buf).
func (c *Copier) copyData(ctx context.Context, lo, hi int64, buf []byte) error {
	g0, g1 := int(lo/c.gran), int((hi+c.gran-1)/c.gran)
	c.mu.Lock()
	c.mu.zero.clearRange(g0, g1)
	c.mu.Unlock()
	for lo < hi {
		p := buf[:min(hi-lo, int64(len(buf)))]
		if err := c.lim.Wait(ctx, int64(len(p))); err != nil {
			return err
		}
		var n int
		var err error
		if sr, ok := c.src.(ScanReader); ok {
			n, err = sr.ReadAtScan(p, lo)
		} else {
			n, err = c.src.ReadAt(p, lo)
		}
		if err != nil && !(errors.Is(err, io.EOF) && n == len(p)) {
			return fmt.Errorf("read source at %d+%d: %w", lo, len(p), err)
		}
		if _, err := c.dst.WriteAt(p, lo); err != nil {
			return fmt.Errorf("write target at %d+%d: %w", lo, len(p), err)
		}
		c.copied.Add(int64(len(p)))
		lo += int64(len(p))
	}
	return nil
}
