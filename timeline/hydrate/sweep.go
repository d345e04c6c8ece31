package hydrate

import (
	"context"
	"fmt"
)

// sweepSpan is how many granules the hole sweep takes at a time.
const sweepSpan = 1 << 14

// sweepHoles clears, before the workers start, the dirty bits of
// granules that are holes of the source on a target known to read zeroes
// there: they need no copy, and finding that out one request at a time
// (MaxRequest) cost a second of CPU per 64 GiB of empty disk. It claims
// each span as the workers do (dirty bits cleared, in flight) before it
// asks the source, and sets dirty again what holds data, so a write that
// lands meanwhile (its Finish marks it dirty) is never lost.
func (c *Copier) sweepHoles(ctx context.Context) error {
	c.mu.Lock()
	any := c.mu.zero.count > 0
	c.mu.Unlock()
	if !any {
		return nil
	}
	for lo := 0; lo < c.n; lo += sweepSpan {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+sweepSpan, c.n)
		c.mu.Lock()
		var claimed []int // granules dirty, not in flight, known zero
		for i := lo; i < hi; i++ {
			if c.mu.dirty.get(i) && !c.mu.inflight.get(i) && c.mu.zero.get(i) {
				claimed = append(claimed, i)
			}
		}
		for _, i := range claimed {
			c.mu.dirty.clearRange(i, i+1)
			c.mu.inflight.setRange(i, i+1)
		}
		c.mu.Unlock()
		if len(claimed) == 0 {
			continue
		}
		data, err := c.dataGranules(int64(lo)*c.gran, min(int64(hi)*c.gran, c.size))
		c.mu.Lock()
		for _, i := range claimed {
			c.mu.inflight.clearRange(i, i+1)
			if err != nil || data.get(i-lo) {
				c.mu.dirty.setRange(i, i+1)
			}
		}
		c.notifyLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// dataGranules returns a bitmap of the granules of [off, end) (relative
// to off's granule) that hold any data in the source.
func (c *Copier) dataGranules(off, end int64) (bitmap, error) {
	g0 := int(off / c.gran)
	b := newBitmap(int((end-off+c.gran-1)/c.gran) + 1)
	for at := off; at < end; {
		exts, err := c.src.Extents(at, end-at)
		if err != nil {
			return b, fmt.Errorf("extents of source at %d: %w", at, err)
		}
		if len(exts) == 0 {
			return b, fmt.Errorf("extents of source at %d: none reported", at)
		}
		for _, e := range exts {
			lo, hi := max(e.Offset, at), min(e.Offset+e.Length, end)
			if lo >= hi {
				continue
			}
			if !e.Hole {
				b.setRange(int(lo/c.gran)-g0, int((hi+c.gran-1)/c.gran)-g0)
			}
			at = hi
		}
	}
	return b, nil
}
