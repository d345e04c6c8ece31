package hydrate

import (
	"context"
	"testing"
	"time"
)

func TestLimiterRates(t *testing.T) {
	clock := newFakeClock()
	start := clock.Now()
	l := NewLimiter(0, clock)
	ctx := context.Background()
	if err := l.Wait(ctx, 100*mib); err != nil || !clock.Now().Equal(start) {
		t.Fatalf("unlimited Wait slept or failed: %v", err)
	}
	l.SetRate(mib)
	for range 4 {
		if err := l.Wait(ctx, mib/2); err != nil {
			t.Fatal(err)
		}
	}
	if got := clock.Now().Sub(start); got != 2*time.Second {
		t.Fatalf("2 MiB at 1 MiB/s took %v", got)
	}
	// Idle time earns at most one second of tokens.
	clock.SleepUntil(ctx, clock.Now().Add(10*time.Second))
	mark := clock.Now()
	if err := l.Wait(ctx, 3*mib); err != nil {
		t.Fatal(err)
	}
	if got := clock.Now().Sub(mark); got != 2*time.Second {
		t.Fatalf("3 MiB after a long idle took %v, want 2s (1s of burst)", got)
	}
	l.SetRate(0)
	mark = clock.Now()
	if err := l.Wait(ctx, 50*mib); err != nil || !clock.Now().Equal(mark) {
		t.Fatal("Wait slept after SetRate(0)")
	}
	if got := l.Taken(); got != 100*mib+2*mib+3*mib+50*mib {
		t.Fatalf("Taken = %d", got)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	l.SetRate(1)
	if err := l.Wait(cancelled, 10); err == nil {
		t.Fatal("Wait on a cancelled context succeeded")
	}
}

// TestLimiterSleepersFollowSetRate: a caller that sleeps off a long wait
// wakes when the limit is lifted or raised, instead of finishing the wait
// it was given at the old rate (`rewind recover bwlimit NAME 0` must
// speed up a copy at once).
func TestLimiterSleepersFollowSetRate(t *testing.T) {
	for _, next := range []int64{0, 1 << 40} {
		l := NewLimiter(1, nil) // a byte a second: the wait below is weeks
		done := make(chan error, 1)
		go func() { done <- l.Wait(context.Background(), 10*mib) }()
		for l.Taken() == 0 { // it has taken its tokens and sleeps
			time.Sleep(time.Millisecond)
		}
		l.SetRate(next)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("SetRate(%d): Wait: %v", next, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("SetRate(%d): the sleeper still sleeps its wait at the old rate", next)
		}
	}
}
