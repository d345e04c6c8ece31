package nbd

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

func TestBudget(t *testing.T) {
	ctx := context.Background()
	b := newBudget(100)
	if err := b.acquire(ctx, nil, 60); err != nil {
		t.Fatal(err)
	}
	// 60 + 50 does not fit: the request waits, and so does a small one
	// behind it (first come, first served).
	big := make(chan error, 1)
	go func() { big <- b.acquire(ctx, nil, 50) }()
	waitWaiting(t, b, 1)
	small := make(chan error, 1)
	go func() { small <- b.acquire(ctx, nil, 10) }()
	waitWaiting(t, b, 2)
	b.release(60)
	if err := <-big; err != nil {
		t.Fatal(err)
	}
	if err := <-small; err != nil {
		t.Fatal(err)
	}
	if got := b.inUse(); got != 60 {
		t.Fatalf("in use %d, want 60", got)
	}
	b.release(60)

	// A request larger than the limit proceeds once nothing is held.
	if err := b.acquire(ctx, nil, 10); err != nil {
		t.Fatal(err)
	}
	huge := make(chan error, 1)
	go func() { huge <- b.acquire(ctx, nil, 300) }()
	waitWaiting(t, b, 1)
	b.release(10)
	if err := <-huge; err != nil {
		t.Fatal(err)
	}

	// A waiter that gives up lets the ones behind it through.
	b.release(300)
	if err := b.acquire(ctx, nil, 80); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- b.acquire(ctx, stop, 50) }()
	waitWaiting(t, b, 1)
	behind := make(chan error, 1)
	go func() { behind <- b.acquire(ctx, nil, 10) }()
	waitWaiting(t, b, 2)
	close(stop)
	if err := <-gaveUp; !errors.Is(err, errStopping) {
		t.Fatalf("stopped wait returned %v", err)
	}
	if err := <-behind; err != nil {
		t.Fatal(err)
	}
	b.release(90)
	if got := b.inUse(); got != 0 {
		t.Fatalf("in use %d after every release", got)
	}
}

// waitWaiting waits until n acquisitions wait on b.
func waitWaiting(t *testing.T, b *budget, n int) {
	t.Helper()
	for b.waiting() != n {
		runtime.Gosched()
	}
}
