package hydrate

// spanOf returns the granules touching [off, off+n), clipped to the
// source; ok is false when none do.
func (c *Copier) spanOf(off, n int64) (span, bool) {
	if n <= 0 || off >= c.size || off+n <= 0 {
		return span{}, false
	}
	off, end := max(off, 0), min(off+n, c.size)
	return span{int(off / c.gran), int((end + c.gran - 1) / c.gran)}, true
}

// MarkDirty records that [off, off+n) of the source changed without
// going through BeginWrite (Write.Finish marks its own range): for
// example when a restarted daemon re-dirties what the clone wrote since
// the saved watermark. What the target holds there is taken as unknown:
// a hole of the source is written as zeroes even on a target that was
// zeroed.
func (c *Copier) MarkDirty(off, n int64) {
	r, ok := c.spanOf(off, n)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.markDirtyLocked(r)
	c.mu.zero.clearRange(r.lo, r.hi)
	c.notifyLocked()
}

func (c *Copier) markDirtyLocked(r span) {
	if c.mu.state == StateCutOver {
		return
	}
	c.mu.dirty.setRange(r.lo, r.hi)
	if c.mu.state == StateConverged {
		c.mu.state = StateCopying
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
