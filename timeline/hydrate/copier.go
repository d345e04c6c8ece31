package hydrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Copier copies a live Source into a Target until Cutover (see doc.go).
type Copier struct {
	src    Source
	dst    Target
	opt    Options
	size   int64
	gran   int64
	n      int // granules
	lim    *Limiter
	copied atomic.Int64

	saveMu  sync.Mutex // serialises Checkpoint's flush and save
	resumed *saved     // what New loaded, if anything

	mu struct {
		sync.Mutex
		dirty, inflight, zero bitmap
		prio                  []span
		cursor                int
		passes, stalls        int
		passDirty             int
		mode                  Mode
		state                 State
		reason                error
		writes, flushed       uint64 // completed target writes; writes covered by the last flush
		flushing              bool
		gen                   uint64
		started               time.Time
		running               bool
		stop                  context.CancelFunc // ends Run
		wake                  chan struct{}      // closed and replaced on every change
		writing               map[uint64]span    // export writes between BeginWrite and end
		nextWrite             uint64
	}
	onWait func() // test hook: BeginWrite is about to wait for a range in flight
}

// span is a range of granules [lo, hi).
type span struct{ lo, hi int }

// New prepares a copy of src into dst. With a Store holding progress of
// the same size and granularity, it resumes from it; otherwise every
// granule is dirty.
func New(src Source, dst Target, opt Options) (*Copier, error) {
	opt, err := opt.normalized()
	if err != nil {
		return nil, err
	}
	size := src.Size()
	if ts := dst.Size(); ts < size {
		return nil, fmt.Errorf("%w: target has %d bytes, source %d; use a target of at least %d bytes",
			ErrTargetTooSmall, ts, size, size)
	}
	c := &Copier{src: src, dst: dst, opt: opt, size: size, gran: opt.Granularity}
	c.n = granules(size, c.gran)
	c.lim = NewLimiter(opt.Rate, opt.Clock)
	c.mu.wake = make(chan struct{})
	c.mu.inflight = newBitmap(c.n)
	c.mu.writing = make(map[uint64]span)
	if opt.WriteBlocking {
		c.mu.mode = ModeWriteBlocking
	}
	if opt.Store != nil {
		p, err := opt.Store.Load()
		if err != nil {
			return nil, err
		}
		if p != nil {
			s, err := decodeSaved(p, size, c.gran)
			if err != nil {
				return nil, err
			}
			c.resumed = s
			c.mu.dirty, c.mu.zero, c.mu.gen = s.dirty.clone(), s.zero.clone(), s.gen
			// A granule saved dirty (or in flight) may have been written
			// on the target after the save, zero bit or not.
			c.mu.zero.andNot(&c.mu.dirty)
		}
	}
	if c.resumed == nil {
		c.mu.dirty, c.mu.zero = newBitmap(c.n), newBitmap(c.n)
		c.mu.dirty.setRange(0, c.n)
		if opt.TargetZeroed {
			c.mu.zero.setRange(0, c.n)
		}
	}
	c.mu.passDirty = c.mu.dirty.count
	return c, nil
}

// Resumed reports the watermark saved with the progress New resumed
// from. The caller marks dirty every range of the source written at or
// after it, since their MarkDirty may not have been saved.
func (c *Copier) Resumed() (watermark int64, ok bool) {
	if c.resumed == nil {
		return 0, false
	}
	return c.resumed.watermark, true
}

// Run copies until Cutover or Cancel (returns nil or ErrCancelled), a
// target or source error (ErrFailed), or ctx ends (ctx.Err(), state
// StateStopped). It saves progress every SaveInterval and on return.
// Run may be called once.
func (c *Copier) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	if c.mu.state == StateCancelled {
		c.mu.Unlock()
		return ErrCancelled
	}
	if c.mu.running || c.mu.started != (time.Time{}) {
		c.mu.Unlock()
		return errors.New("hydrate: Run called twice")
	}
	c.mu.running, c.mu.stop, c.mu.started = true, cancel, c.opt.Clock.Now()
	c.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := c.sweepHoles(gctx); err != nil {
			c.mu.Lock()
			if gctx.Err() == nil {
				c.failLocked(err)
			}
			c.mu.Unlock()
			return nil
		}
		for range c.opt.Workers {
			g.Go(func() error { return c.worker(gctx) })
		}
		return nil
	})
	g.Go(func() error { return c.saver(gctx) })
	werr := g.Wait()
	saveErr := c.Checkpoint()

	c.mu.Lock()
	defer func() { c.notifyLocked(); c.mu.Unlock() }()
	c.mu.running = false
	switch c.mu.state {
	case StateCutOver:
		return saveErr
	case StateCancelled:
		return ErrCancelled
	case StateFailed:
		return fmt.Errorf("%w: %w", ErrFailed, c.mu.reason)
	}
	if werr != nil && !errors.Is(werr, context.Canceled) && !errors.Is(werr, context.DeadlineExceeded) {
		c.failLocked(werr)
		return fmt.Errorf("%w: %w", ErrFailed, werr)
	}
	c.mu.state = StateStopped
	if err := ctx.Err(); err != nil {
		return err
	}
	return saveErr
}

// Cancel stops the copy; Run returns ErrCancelled. The target is left
// as it is, and the progress is saved.
func (c *Copier) Cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.state == StateCutOver || c.mu.state == StateFailed {
		return
	}
	c.mu.state = StateCancelled
	if c.mu.stop != nil {
		c.mu.stop()
	}
	c.notifyLocked()
}

// SetRate changes the copy's bandwidth limit in bytes/s; 0 = unlimited.
func (c *Copier) SetRate(rate int64) { c.lim.SetRate(rate) }

// SetMode switches between background and write-blocking mode.
func (c *Copier) SetMode(m Mode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.mode = m
	c.notifyLocked()
}

// notifyLocked wakes everything waiting for a change.
func (c *Copier) notifyLocked() {
	close(c.mu.wake)
	c.mu.wake = make(chan struct{})
}

// failLocked records the first error and stops Run.
func (c *Copier) failLocked(err error) {
	if c.mu.state == StateFailed || c.mu.state == StateCutOver || c.mu.state == StateCancelled {
		return
	}
	c.mu.state, c.mu.reason = StateFailed, err
	c.opt.Logger.Error("hydrate: copy failed", "err", err)
	if c.mu.stop != nil {
		c.mu.stop()
	}
	c.notifyLocked()
}

// wait releases the lock until something changes or ctx ends, then
// takes it again.
func (c *Copier) waitLocked(ctx context.Context) error {
	ch := c.mu.wake
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Copier) saver(ctx context.Context) error {
	if c.opt.Store == nil {
		return nil
	}
	t := time.NewTicker(c.opt.SaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := c.Checkpoint(); err != nil {
				c.opt.Logger.Warn("hydrate: save progress", "err", err)
			}
		}
	}
}
