package hydrate

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// allData returns a source of n granules of gran bytes, all data, granule
// i filled with byte i+1.
func allData(n int, gran int64) *memSource {
	s := newMemSource(int64(n)*gran, gran)
	for i := range n {
		s.write(bytes.Repeat([]byte{byte(i + 1)}, int(gran)), int64(i)*gran)
	}
	return s
}

func TestPrioritizedRangeCopiedFirst(t *testing.T) {
	const gran = 4 * kib
	src := allData(64, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	reading, release := make(chan struct{}), make(chan struct{})
	first := true
	src.onRead = func(_ []byte, off int64) { // one worker: no concurrent calls
		if first {
			first = false
			close(reading)
			<-release
		}
	}
	wait := run(context.Background(), c)
	<-reading // the worker copies granule 0 and waits
	c.Prioritize(50*gran+100, 2*gran)
	close(release)
	resume, err := c.Cutover(context.Background(), noPause)
	if err != nil {
		t.Fatal(err)
	}
	resume()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	dst.mu.Lock()
	got := append([]int64(nil), dst.mu.offsets[:5]...)
	dst.mu.Unlock()
	want := []int64{0, 50 * gran, 51 * gran, 52 * gran, 1 * gran}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("write order %v, want %v first", got, want)
		}
	}
	if dst.sum() != src.sum() {
		t.Fatal("target differs from source")
	}
}

func TestBandwidthLimit(t *testing.T) {
	const rate = float64(mib)
	src := allData(128, 64*kib) // 8 MiB
	dst := newMemTarget(src.Size())
	clock := newFakeClock()
	start := clock.Now()
	c, err := New(src, dst, Options{Rate: int64(rate), Workers: 4, MaxRequest: 64 * kib, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	var written int64 // under dst's lock via onWrite ordering below
	var raised time.Time
	dst.onWrite = func(p []byte, off int64) error {
		dst.mu.Lock()
		defer dst.mu.Unlock()
		written += int64(len(p))
		elapsed := clock.Now().Sub(start).Seconds()
		limit := rate * elapsed
		if !raised.IsZero() {
			limit = rate*raised.Sub(start).Seconds() + 4*rate*clock.Now().Sub(raised).Seconds()
		}
		// Tokens are taken before a copy, so bytes written never run
		// ahead of the time the limiter let pass.
		if float64(written) > limit+1 {
			t.Errorf("%d bytes written after %.3fs of virtual time, limit %.0f", written, elapsed, limit)
		}
		if written >= 4*mib && raised.IsZero() {
			raised = clock.Now()
			c.SetRate(int64(4 * rate))
		}
		return nil
	}
	copyAll(t, c)
	elapsed := clock.Now().Sub(start)
	// 4 MiB at 1 MiB/s, then 4 MiB at 4 MiB/s, give or take the copies
	// already waiting when the rate changed.
	if elapsed < 4*time.Second || elapsed > 6*time.Second {
		t.Fatalf("copy took %v of virtual time, want about 5s", elapsed)
	}
	if got := c.lim.Taken(); got != src.Size() {
		t.Fatalf("limiter granted %d bytes, want %d", got, src.Size())
	}
	if p := c.Progress(); p.Limit != int64(4*rate) || p.Rate <= 0 {
		t.Fatalf("progress limit %d rate %f", p.Limit, p.Rate)
	}
}

func TestTargetErrorFailsAndKeepsRangeDirty(t *testing.T) {
	const gran = 16 * kib
	src := allData(32, gran)
	dst := newMemTarget(src.Size())
	dst.onWrite = func(p []byte, off int64) error {
		if off == 7*gran {
			return errBoom
		}
		return nil
	}
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background())
	if !errors.Is(err, ErrFailed) || !errors.Is(err, errBoom) {
		t.Fatalf("Run = %v, want ErrFailed wrapping the target's error", err)
	}
	p := c.Progress()
	if p.State != StateFailed || p.Reason == "" {
		t.Fatalf("progress %+v, want failed with a reason", p)
	}
	c.mu.Lock()
	dirty := c.mu.dirty.get(7)
	c.mu.Unlock()
	if !dirty {
		t.Fatal("the granule whose write failed is not dirty again")
	}
	if _, err := c.Cutover(context.Background(), noPause); !errors.Is(err, ErrFailed) {
		t.Fatalf("Cutover after failure = %v, want ErrFailed", err)
	}
}

func TestWriteBlockingWritesTargetBeforeFinishReturns(t *testing.T) {
	const gran = 16 * kib
	src := allData(8, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, WriteBlocking: true})
	if err != nil {
		t.Fatal(err)
	}
	// No Run: nothing but the write itself can reach the target.
	p := bytes.Repeat([]byte{0xab}, int(2*gran))
	w, err := c.BeginWrite(context.Background(), 3*gran, int64(len(p)))
	if err != nil {
		t.Fatal(err)
	}
	src.write(p, 3*gran)
	if err := w.Finish(p); err != nil {
		t.Fatal(err)
	}
	dst.mu.Lock()
	got := bytes.Equal(dst.mu.data[3*gran:5*gran], p)
	dst.mu.Unlock()
	if !got {
		t.Fatal("write-blocking write is not on the target when Finish returns")
	}
	c.mu.Lock()
	clean := !c.mu.dirty.get(3) && !c.mu.dirty.get(4) && c.mu.dirty.get(2) && c.mu.dirty.get(5)
	c.mu.Unlock()
	if !clean {
		t.Fatal("want the two covered granules clean, their neighbours dirty")
	}
}

// A write-blocking write over a range being copied waits for the copy,
// so the copy's older data cannot land after it.
func TestWriteBlockingWaitsForCopyInFlight(t *testing.T) {
	const gran = 16 * kib
	src := allData(4, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1, WriteBlocking: true})
	if err != nil {
		t.Fatal(err)
	}
	reading, release := make(chan struct{}), make(chan struct{})
	first := true
	src.onRead = func(_ []byte, off int64) {
		if first { // the worker has read granule 0's old data
			first = false
			close(reading)
			<-release
		}
	}
	waiting := make(chan struct{})
	c.onWait = func() { close(waiting); c.onWait = nil } // called with c.mu held
	wait := run(context.Background(), c)
	<-reading
	p := bytes.Repeat([]byte{0xcd}, int(gran))
	done := make(chan error, 1)
	go func() {
		w, err := c.BeginWrite(context.Background(), 0, gran)
		if err != nil {
			done <- err
			return
		}
		src.write(p, 0)
		done <- w.Finish(p)
	}()
	select {
	case <-waiting: // BeginWrite found the copy in flight
	case err := <-done:
		close(release)
		t.Fatalf("the write finished (%v) while a copy over its range was in flight", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cutoverMatches(t, c, wait, src, dst, "the copy's older data landed after the write")
}

func TestSwitchesToWriteBlockingWhenNotConverging(t *testing.T) {
	const gran = 4 * kib
	src := allData(4, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1, StallPasses: 3})
	if err != nil {
		t.Fatal(err)
	}
	// A workload that dirties everything on every copy, until the
	// copier gives up on the background mode.
	dst.onWrite = func(p []byte, off int64) error {
		if c.Progress().Mode == ModeBackground {
			c.MarkDirty(0, src.Size())
		}
		return nil
	}
	copyAll(t, c)
	if p := c.Progress(); p.Mode != ModeWriteBlocking || p.Passes < 3 {
		t.Fatalf("progress %+v, want write-blocking after at least 3 passes", p)
	}
	if dst.sum() != src.sum() {
		t.Fatal("target differs from source")
	}
}

// A workload that writes now and then, each time after the copier caught
// up, never makes it give up on the background mode.
func TestSporadicWritesAfterConvergingStayInBackground(t *testing.T) {
	const gran = 4 * kib
	src := allData(8, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1, StallPasses: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := run(ctx, c)
	for i := range 10 {
		if err := c.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		// Behind the cursor, so that copying it wraps a pass.
		w, err := c.BeginWrite(ctx, 0, 16)
		if err != nil {
			t.Fatal(err)
		}
		src.write(bytes.Repeat([]byte{byte(i + 1)}, 16), 0)
		w.Finish(nil)
	}
	if p := c.Progress(); p.Mode != ModeBackground {
		t.Fatalf("progress %+v: switched to write-blocking although every write found the copy caught up", p)
	}
	cutoverMatches(t, c, wait, src, dst, "target differs from source")
}
