package hydrate

import (
	"context"
	"time"
)

// Clock is the time source of the rate limiter and the progress rate.
// Tests pass a fake one.
type Clock interface {
	Now() time.Time
	// SleepUntil waits until t or until ctx is done, and returns
	// ctx.Err() then.
	SleepUntil(ctx context.Context, t time.Time) error
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
