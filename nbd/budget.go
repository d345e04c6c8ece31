package nbd

import (
	"container/list"
	"context"
	"errors"
	"sync"
)

// errStopping ends a wait for memory when Shutdown asks the connection to
// stop reading.
var errStopping = errors.New("nbd: connection stopping")

// budget counts the bytes held against a limit. Waiters are served in
// order of arrival, so a large request is not starved by small ones
// behind it. A request larger than the limit, or than what is free,
// proceeds once nothing else is held: it never waits for itself, and the
// limit is passed by at most one request.
type budget struct {
	mu      sync.Mutex
	limit   int64
	held    int64
	waiters list.List // of *waiter, oldest first
	// changed, if set, is told the bytes held and the waiters after each
	// change, under mu: it must not block.
	changed func(held int64, waiting int)
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when the bytes were granted
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

func (b *budget) fits(n int64) bool { return b.held == 0 || b.held+n <= b.limit }

// acquire waits until n bytes can be held, ctx ends or stop is closed.
func (b *budget) acquire(ctx context.Context, stop <-chan struct{}, n int64) error {
	b.mu.Lock()
	if b.waiters.Len() == 0 && b.fits(n) {
		b.held += n
		b.report()
		b.mu.Unlock()
		return nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	e := b.waiters.PushBack(w)
	b.report()
	b.mu.Unlock()

	var err error
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-stop:
		err = errStopping
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: give it back
		b.held -= n
	default:
		b.waiters.Remove(e)
	}
	b.grant() // the waiters behind this one may fit now
	b.report()
	return err
}

// release gives back n bytes.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.held -= n
	b.grant()
	b.report()
	b.mu.Unlock()
}

// report tells changed the state. b.mu is held.
func (b *budget) report() {
	if b.changed != nil {
		b.changed(b.held, b.waiters.Len())
	}
}

// grant wakes the waiters at the head of the queue that fit. b.mu is held.
func (b *budget) grant() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*waiter)
		if !b.fits(w.n) {
			return
		}
		b.held += w.n
		b.waiters.Remove(e)
		close(w.ready)
	}
}

// waiting returns the number of acquisitions waiting.
func (b *budget) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiters.Len()
}

// inUse returns the bytes held now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}
