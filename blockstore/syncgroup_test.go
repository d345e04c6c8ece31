package blockstore

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
)

// TestSyncGroupShares: callers that arrive while a sync runs share the
// next one, and none returns before a sync that started after it called.
func TestSyncGroupShares(t *testing.T) {
	var g syncGroup
	started := make(chan int)
	release := make(chan error)
	calls := 0
	sync := func() error {
		calls++
		started <- calls
		return <-release
	}
	do := func() chan error {
		c := make(chan error, 1)
		go func() { c <- g.do(sync) }()
		return c
	}
	// joined waits until n callers wait for the next round.
	joined := func(n int) {
		for {
			g.mu.Lock()
			k := 0
			if g.next != nil {
				k = g.next.joined
			}
			g.mu.Unlock()
			if k == n {
				return
			}
			runtime.Gosched()
		}
	}
	errRound := func(i int) error { return fmt.Errorf("round %d", i) }

	a := do()
	if n := <-started; n != 1 {
		t.Fatalf("first sync is call %d", n)
	}
	b, c, d := do(), do(), do()
	joined(3)
	release <- errRound(1)
	if err := <-a; err == nil || err.Error() != "round 1" {
		t.Fatalf("the first caller got %v, want its round's result", err)
	}
	if n := <-started; n != 2 {
		t.Fatalf("the second round is call %d", n)
	}
	for _, w := range []chan error{b, c, d} {
		select {
		case err := <-w:
			t.Fatalf("a caller that arrived during the first sync returned %v before the second ended", err)
		default:
		}
	}
	e := do() // arrives during the second round: waits for a third
	joined(1)
	release <- errRound(2)
	for _, w := range []chan error{b, c, d} {
		if err := <-w; err == nil || err.Error() != "round 2" {
			t.Errorf("a caller of the second round got %v", err)
		}
	}
	if n := <-started; n != 3 {
		t.Fatalf("the third round is call %d", n)
	}
	release <- nil
	if err := <-e; err != nil {
		t.Errorf("the caller of the third round got %v", err)
	}
	if calls != 3 {
		t.Errorf("%d syncs for 5 callers in 3 rounds", calls)
	}
	// Nothing runs now: the next caller syncs at once.
	f := do()
	if n := <-started; n != 4 {
		t.Fatalf("a caller after the rounds ended is call %d", n)
	}
	release <- errors.New("round 4")
	if err := <-f; err == nil {
		t.Error("a failed sync returned nil")
	}
}
