package hydrate

import (
	"context"
	"fmt"
)

// WaitConverged returns once the copy is converged, or its error if it
// failed, was cancelled or stopped.
func (c *Copier) WaitConverged(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch c.mu.state {
		case StateConverged:
			return nil
		case StateFailed:
			return fmt.Errorf("%w: %w", ErrFailed, c.mu.reason)
		case StateCancelled:
			return ErrCancelled
		case StateStopped:
			return ErrStopped
		case StateCutOver:
			return ErrCutOver
		}
		if err := c.waitLocked(ctx); err != nil {
			return err
		}
	}
}

// Cutover waits until the copy converges, calls pause to stop the
// export's I/O (pause should let writes in progress finish: Cutover
// cannot go on while one is between BeginWrite and Finish), checks
// again that nothing is dirty or in flight, flushes
// the target and stops the copier. It returns pause's resume function
// with I/O still paused: the caller switches the export to the target,
// then resumes. If the check fails, Cutover resumes I/O itself and
// waits again. On error, I/O is not paused.
func (c *Copier) Cutover(ctx context.Context, pause func() (resume func())) (func(), error) {
	for {
		if err := c.WaitConverged(ctx); err != nil {
			return nil, err
		}
		resume := pause()
		c.mu.Lock()
		clean := c.mu.dirty.count == 0 && c.mu.inflight.count == 0 && len(c.mu.writing) == 0 && !c.mu.flushing &&
			(c.mu.state == StateConverged || c.mu.state == StateCopying)
		c.mu.Unlock()
		if !clean {
			resume()
			continue
		}
		if err := c.dst.Flush(); err != nil {
			resume()
			err = fmt.Errorf("flush target: %w", err)
			c.mu.Lock()
			c.failLocked(err)
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrFailed, err)
		}
		c.mu.Lock()
		c.mu.flushed = c.mu.writes
		c.mu.state = StateCutOver
		if c.mu.stop != nil {
			c.mu.stop()
		}
		c.notifyLocked()
		c.mu.Unlock()
		return resume, nil
	}
}
