package hydrate

import "fmt"

// Progress returns a snapshot of the copy.
func (c *Copier) Progress() Progress {
	now := c.opt.Clock.Now()
	c.mu.Lock()
	p := Progress{
		State:      c.mu.state,
		Mode:       c.mu.mode,
		Total:      c.size,
		Dirty:      min(int64(c.mu.dirty.count)*c.gran, c.size),
		InFlight:   min(int64(c.mu.inflight.count)*c.gran, c.size),
		Passes:     c.mu.passes,
		Generation: c.mu.gen,
		Started:    c.mu.started,
	}
	if c.mu.reason != nil {
		p.Reason = c.mu.reason.Error()
	}
	c.mu.Unlock()
	p.Done = max(c.size-p.Dirty-p.InFlight, 0)
	p.Copied = c.copied.Load()
	p.Limit = c.lim.Rate()
	if secs := now.Sub(p.Started).Seconds(); !p.Started.IsZero() && secs > 0 {
		p.Rate = float64(p.Copied) / secs
	}
	return p
}

// Checkpoint saves the progress now: the dirty bitmap with every range in
// flight marked dirty, after flushing the target so that everything the
// bitmap calls clean is durable there. Run calls it every SaveInterval
// and when it returns; it does nothing without a Store.
func (c *Copier) Checkpoint() error {
	if c.opt.Store == nil {
		return nil
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	c.mu.gen++
	s := saved{
		gen:   c.mu.gen,
		size:  c.size,
		gran:  c.gran,
		dirty: c.mu.dirty.or(&c.mu.inflight),
		zero:  c.mu.zero.clone(),
	}
	for _, r := range c.mu.writing {
		s.dirty.setRange(r.lo, r.hi)
	}
	if c.opt.Watermark != nil {
		s.watermark = c.opt.Watermark()
	}
	writes := c.mu.writes
	c.mu.Unlock()
	if c.opt.FlushSource != nil {
		if err := c.opt.FlushSource(); err != nil {
			return fmt.Errorf("flush source: %w", err)
		}
	}
	if err := c.dst.Flush(); err != nil {
		return err
	}
	c.mu.Lock()
	c.mu.flushed = max(c.mu.flushed, writes)
	c.convergedLocked()
	c.notifyLocked()
	c.mu.Unlock()
	return c.opt.Store.Save(s.encode())
}
