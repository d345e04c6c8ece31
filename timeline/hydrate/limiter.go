package hydrate

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limiter is a token bucket in bytes per second whose rate can change
// while copies wait on it. A rate of 0 means unlimited. The bucket holds
// at most one second of tokens and starts empty. Callers take tokens
// before they copy (Wait); the bucket may go into debt, so concurrent
// callers queue behind each other and the long-run rate is the limit.
// A caller already sleeping when SetRate is called wakes: with no limit
// it goes on at once, with another limit it sleeps what is left of its
// wait rescaled to the new rate.
type Limiter struct {
	clock Clock
	mu    struct {
		sync.Mutex
		rate    int64   // bytes per second, 0 = unlimited
		tokens  float64 // may be negative (debt)
		last    time.Time
		taken   int64         // bytes granted, for accounting
		changed chan struct{} // closed and replaced by SetRate
	}
}

// NewLimiter returns a limiter at rate bytes/s (0 = unlimited).
func NewLimiter(rate int64, clock Clock) *Limiter {
	if clock == nil {
		clock = realClock{}
	}
	l := &Limiter{clock: clock}
	l.mu.rate = max(rate, 0)
	l.mu.last = clock.Now()
	l.mu.changed = make(chan struct{})
	return l
}

// refillLocked adds the tokens earned since the last call.
func (l *Limiter) refillLocked(now time.Time) {
	if l.mu.rate > 0 {
		dt := now.Sub(l.mu.last).Seconds()
		l.mu.tokens = min(l.mu.tokens+dt*float64(l.mu.rate), float64(l.mu.rate))
	}
	l.mu.last = now
}

// SetRate changes the rate; 0 means unlimited.
func (l *Limiter) SetRate(rate int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refillLocked(l.clock.Now())
	rate = max(rate, 0)
	if rate == 0 || l.mu.rate == 0 {
		l.mu.tokens = 0
	}
	l.mu.rate = rate
	close(l.mu.changed) // sleepers rescale their waits
	l.mu.changed = make(chan struct{})
}

// Rate returns the current rate in bytes/s, 0 = unlimited.
func (l *Limiter) Rate() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.rate
}

// Taken returns the bytes granted so far.
func (l *Limiter) Taken() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.taken
}

// Wait takes n bytes' worth of tokens, sleeping until they are earned.
func (l *Limiter) Wait(ctx context.Context, n int64) error {
	l.mu.Lock()
	l.mu.taken += n
	if l.mu.rate == 0 {
		l.mu.Unlock()
		return ctx.Err()
	}
	now := l.clock.Now()
	l.refillLocked(now)
	l.mu.tokens -= float64(n)
	wake := now
	if l.mu.tokens < 0 {
		wake = now.Add(time.Duration(math.Ceil(-l.mu.tokens / float64(l.mu.rate) * float64(time.Second))))
	}
	rate, changed := l.mu.rate, l.mu.changed
	l.mu.Unlock()
	for {
		err := l.sleep(ctx, wake, changed)
		if err != nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-changed:
		default:
			return nil // slept its time
		}
		// The rate changed while this caller slept: the bytes still
		// ahead of it pass at the new rate, or at once without a limit.
		l.mu.Lock()
		now := l.clock.Now()
		newRate := l.mu.rate
		changed = l.mu.changed
		l.mu.Unlock()
		if newRate == 0 || !wake.After(now) {
			return nil
		}
		wake = now.Add(time.Duration(float64(wake.Sub(now)) * float64(rate) / float64(newRate)))
		rate = newRate
	}
}

// sleep sleeps until wake, ctx is done or changed is closed; it returns
// ctx's error only.
func (l *Limiter) sleep(ctx context.Context, wake time.Time, changed <-chan struct{}) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-changed:
			cancel()
		case <-stop:
		}
	}()
	if err := l.clock.SleepUntil(sctx, wake); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}
