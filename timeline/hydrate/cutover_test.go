package hydrate

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// Cutover pauses only once the copy converged, and if a write slipped in
// before the pause it resumes, waits, and pauses again.
func TestCutoverWaitsForConvergenceAndPauses(t *testing.T) {
	const gran = 16 * kib
	src := allData(32, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	// The copy of the block written during the first pause waits for
	// that pause's resume: else a worker may copy it before Cutover
	// looks, and Cutover rightly finds nothing left to do.
	var gate atomic.Pointer[chan struct{}]
	dst.onWrite = func(_ []byte, off int64) error {
		if g := gate.Load(); g != nil && off == 3*gran {
			<-*g
		}
		return nil
	}
	wait := run(context.Background(), c)
	var pauses, resumes int
	var sawDirty bool
	pause := func() func() {
		pauses++
		p := c.Progress()
		if p.Dirty != 0 || p.InFlight != 0 || p.State != StateConverged {
			sawDirty = true
		}
		if pauses == 1 { // a write that landed just before the pause
			held := make(chan struct{})
			gate.Store(&held)
			w, err := c.BeginWrite(context.Background(), 3*gran, gran)
			if err != nil {
				t.Error(err)
			}
			src.write(make([]byte, gran), 3*gran)
			if err := w.Finish(nil); err != nil {
				t.Error(err)
			}
			return func() { resumes++; close(held) }
		}
		return func() { resumes++ }
	}
	resume, err := c.Cutover(context.Background(), pause)
	if err != nil {
		t.Fatal(err)
	}
	if sawDirty {
		t.Fatal("pause was called before the copy converged")
	}
	if pauses != 2 || resumes != 1 {
		t.Fatalf("%d pauses, %d resumes by Cutover; want 2 and 1", pauses, resumes)
	}
	if p := c.Progress(); p.State != StateCutOver {
		t.Fatalf("state %v after Cutover", p.State)
	}
	dst.mu.Lock()
	flushed := dst.mu.flushes > 0
	dst.mu.Unlock()
	if !flushed || dst.sum() != src.sum() {
		t.Fatal("target not flushed or not equal to the source at cutover")
	}
	resume()
	if resumes != 2 {
		t.Fatal("the returned function is not pause's resume")
	}
	if err := wait(); err != nil {
		t.Fatalf("Run after cutover = %v", err)
	}
}

func TestCancelStopsRun(t *testing.T) {
	const gran = 16 * kib
	src := allData(16, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	dst.onWrite = func([]byte, int64) error { c.Cancel(); return nil }
	if err := c.Run(context.Background()); !errors.Is(err, ErrCancelled) {
		t.Fatalf("Run = %v, want ErrCancelled", err)
	}
	if _, err := c.Cutover(context.Background(), noPause); !errors.Is(err, ErrCancelled) {
		t.Fatalf("Cutover after Cancel = %v", err)
	}
}

// A write between BeginWrite and Finish keeps the copy from counting as
// converged, so Cutover cannot switch while it is landing.
func TestWriteInProgressIsNotConverged(t *testing.T) {
	const gran = 16 * kib
	src := allData(8, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	wait := run(context.Background(), c)
	if err := c.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	w, err := c.BeginWrite(context.Background(), gran, 10)
	if err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.WaitConverged(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitConverged with a write in progress = %v, want it to wait", err)
	}
	p := []byte("0123456789")
	src.write(p, gran)
	if err := w.Finish(p); err != nil {
		t.Fatal(err)
	}
	cutoverMatches(t, c, wait, src, dst, "target differs from source")
}
