package remote

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

// TestLease: a second writer is refused while the lease lasts and may
// take it over; then one of the two learns that it lost it (the object
// store has no conditional write, so a takeover racing a renewal can go
// either way) and the other holds it.
func TestLease(t *testing.T) {
	old := LeaseTTL
	LeaseTTL = 300 * time.Millisecond
	defer func() { LeaseTTL = old }()
	b := openBackend(t)
	log := slog.New(slog.DiscardHandler)
	lost := make(chan error, 1)
	a, err := AcquireLease(b, "A", "/data/a", false, log, func(err error) { lost <- err })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireLease(b, "B", "/data/b", false, log, nil); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a second writer: %v, want ErrLeaseHeld", err)
	}
	time.Sleep(LeaseTTL) // renewed meanwhile: still held
	if _, err := AcquireLease(b, "B", "/data/b", false, log, nil); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("a second writer after a renewal: %v, want ErrLeaseHeld", err)
	}
	lostB := make(chan error, 1)
	bl, err := AcquireLease(b, "B", "/data/b", true, log, func(err error) { lostB <- err })
	if err != nil {
		t.Fatal(err)
	}
	winner, loser := bl, a
	select {
	case err = <-lost:
	case err = <-lostB:
		winner, loser = a, bl
	case <-time.After(10 * LeaseTTL):
		t.Fatal("neither writer was told it lost the lease")
	}
	if !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("lost with %v", err)
	}
	loser.Release() // lost: leaves the winner's lease alone
	if _, err := AcquireLease(b, "C", "/data/c", false, log, nil); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("after the loser's release: %v, want ErrLeaseHeld", err)
	}
	if err := winner.Release(); err != nil {
		t.Fatal(err)
	}
	c, err := AcquireLease(b, "C", "/data/c", false, log, nil)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	c.Release()
}
