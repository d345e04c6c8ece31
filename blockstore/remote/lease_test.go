package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// TestLease: a second writer is refused while the lease lasts and may
// take it over; then one of the two learns that it lost it (without
// conditional writes, a takeover racing a renewal can go either way) and
// the other holds it.
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

// cutBackend fails the lease's writes while cut is set, and holds every
// other Put until its context ends while hold is set.
type cutBackend struct {
	objstore.Backend
	cut, hold atomic.Bool
}

func (b *cutBackend) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if name == leaseName && b.cut.Load() {
		return fmt.Errorf("%w: cut off for the test", objstore.ErrUnreachable)
	}
	if name != leaseName && b.hold.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * LeaseTTL):
			return errors.New("held to the end: nothing cut the upload off")
		}
	}
	return b.Backend.Put(ctx, name, r, size)
}

// TestLeaseLapses: a writer whose lease cannot be renewed stops
// uploading before the lease expires, an upload under way is cut off
// then, and uploads start again only a settling time after the lease is
// renewed; a writer that takes the store over uploads only after that
// time too, and the one it displaced not at all.
func TestLeaseLapses(t *testing.T) {
	old := LeaseTTL
	LeaseTTL = 600 * time.Millisecond
	defer func() { LeaseTTL = old }()
	b := &cutBackend{Backend: openBackend(t)}
	log := slog.New(slog.DiscardHandler)
	a, err := AcquireLease(b, "A", "/data/a", false, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	up := newConn(b, log, 200*time.Millisecond, false).withLease(a)
	if err := up.put("x", []byte("1")); err != nil {
		t.Fatalf("an upload under the lease: %v", err)
	}

	// Renewals fail: an upload that started is cut off when the lease
	// would have less than leaseMargin left, and none starts after.
	b.cut.Store(true)
	b.hold.Store(true)
	start := time.Now()
	err = up.put("y", []byte("2"))
	if !errors.Is(err, ErrLeaseLapsed) || time.Since(start) > LeaseTTL+up.retryFor+LeaseTTL/2 {
		t.Fatalf("an upload while the lease is not renewed: %v after %s; want ErrLeaseLapsed", err, time.Since(start))
	}
	b.hold.Store(false)
	if _, err := a.Context(); !errors.Is(err, ErrLeaseLapsed) {
		t.Fatalf("a lapsed lease: %v; want ErrLeaseLapsed", err)
	}

	// Renewed: uploads wait for the settling time, then go on.
	b.cut.Store(false)
	uncut := time.Now()
	deadline := time.Now().Add(10 * LeaseTTL)
	for {
		if _, err := a.Context(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease was never counted on again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The renewal that counts again began when the lease had lapsed, at
	// most the upload's retries before the cut ended, and waits the
	// settling time from there.
	if waited := time.Since(uncut); waited < settleTime()/4 {
		t.Fatalf("uploads went on %s after the object store answered again; want them to wait for the settling time, %s", waited, settleTime())
	}
	if err := up.put("z", []byte("3")); err != nil {
		t.Fatalf("an upload after the lease settled: %v", err)
	}

	// Taken over: the taker waits, the displaced writer stops for good.
	lostA := make(chan error, 1)
	taken := time.Now() // before: the settling time counts from the write inside
	bl, err := AcquireLease(b, "B", "/data/b", true, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Release()
	if _, err := bl.Context(); !errors.Is(err, ErrLeaseLapsed) {
		t.Fatalf("right after a takeover: %v; want ErrLeaseLapsed (settling)", err)
	}
	go func() {
		for {
			if _, err := a.Context(); errors.Is(err, ErrLeaseHeld) {
				lostA <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	select {
	case <-lostA:
	case <-time.After(2 * LeaseTTL):
		t.Fatal("the displaced writer did not learn it lost the lease")
	}
	if err := up.put("w", []byte("4")); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("an upload of the displaced writer: %v; want ErrLeaseHeld", err)
	}
	for {
		if _, err := bl.Context(); err == nil {
			break
		}
		if time.Since(taken) > 3*LeaseTTL {
			t.Fatal("the taker never counted on its lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(taken); d < settleTime() {
		t.Fatalf("the taker counted on its lease after %s; want the settling time, %s", d, settleTime())
	}
}

// TestLeaseClaimedAtOnce: of data directories that claim a store with
// no lease at the same moment, one holds it and the others are refused,
// on a store that takes conditional writes. (Without them, each could
// read no lease and write its own.)
func TestLeaseClaimedAtOnce(t *testing.T) {
	b := openBackend(t)
	if _, ok := b.(objstore.Swapper); !ok {
		t.Fatalf("%T takes no conditional writes", b)
	}
	log := slog.New(slog.DiscardHandler)
	const claimers = 6
	var wg sync.WaitGroup
	won := make(chan *Lease, claimers)
	errs := make(chan error, claimers)
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := AcquireLease(b, fmt.Sprintf("D%d", i), "/data", false, log, nil)
			if err != nil {
				errs <- err
				return
			}
			won <- l
		}()
	}
	wg.Wait()
	close(won)
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrLeaseHeld) {
			t.Errorf("a refused claim: %v, want ErrLeaseHeld", err)
		}
	}
	n := 0
	for l := range won {
		n++
		defer l.Release()
	}
	if n != 1 {
		t.Fatalf("%d of %d claimers hold the lease, want 1", n, claimers)
	}
}
