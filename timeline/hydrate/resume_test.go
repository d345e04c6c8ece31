package hydrate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A daemon copies 9 granules, saves progress while the 10th is in flight,
// and dies before saving again. The next copier resumes from the saved
// bitmap: it copies the in-flight granule and everything after, and none
// of the 9 done before.
func TestResumeCopiesOnlyWhatWasNotSaved(t *testing.T) {
	const gran = 16 * kib
	const n = 64
	src := allData(n, gran)
	dst := newMemTarget(src.Size())
	store := &memStore{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 1, Store: store,
		Watermark: func() int64 { return 42 }})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	dst.onWrite = func(p []byte, off int64) error { // one worker: no concurrent calls
		if calls++; calls == 10 {
			if err := c.Checkpoint(); err != nil {
				t.Error(err)
			}
			store.freeze() // the crash: nothing later is saved
			cancel()
		}
		return nil
	}
	if err := c.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if p := c.Progress(); p.State != StateStopped {
		t.Fatalf("state %v, want stopped", p.State)
	}

	dst.onWrite = nil
	before := dst.writeCount()
	c2, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 4, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if w, ok := c2.Resumed(); !ok || w != 42 {
		t.Fatalf("Resumed = %d, %v, want the saved watermark 42", w, ok)
	}
	if p := c2.Progress(); p.Dirty != (n-9)*gran || p.Generation != 1 {
		t.Fatalf("resumed progress %+v, want %d dirty bytes at generation 1", p, (n-9)*gran)
	}
	copyAll(t, c2)
	if got := dst.writeCount() - before; got != n-9 {
		t.Fatalf("resumed copy wrote %d granules, want %d", got, n-9)
	}
	if dst.sum() != src.sum() {
		t.Fatal("target differs from source after the resumed copy")
	}
}

// A write between BeginWrite and Finish when progress is saved is saved
// as dirty, even in background mode where it is not in the bitmap yet.
func TestCheckpointSavesWritesInProgress(t *testing.T) {
	const gran = 16 * kib
	src := allData(8, gran)
	dst := newMemTarget(src.Size())
	store := &memStore{}
	c, err := New(src, dst, Options{Granularity: gran, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.mu.dirty.clearRange(0, 8) // as if all were copied
	c.mu.Unlock()
	w, err := c.BeginWrite(context.Background(), 5*gran+10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	s, err := decodeSaved(store.p, src.Size(), gran)
	if err != nil {
		t.Fatal(err)
	}
	if s.dirty.count != 1 || !s.dirty.get(5) {
		t.Fatalf("saved %d dirty granules, want granule 5 only", s.dirty.count)
	}
	w.Abort()
}

func TestFileStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := FileStore{Path: filepath.Join(dir, "progress")}
	if p, err := st.Load(); p != nil || err != nil {
		t.Fatalf("Load of nothing = %v, %v", p, err)
	}
	for _, v := range [][]byte{[]byte("first"), []byte("second, longer")} {
		if err := st.Save(v); err != nil {
			t.Fatal(err)
		}
		got, err := st.Load()
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Load = %q, %v, want %q", got, err, v)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %d entries (%v), want the progress file only", len(ents), err)
	}
}

func TestSavedProgressRejectsMismatch(t *testing.T) {
	const gran = 16 * kib
	s := saved{gen: 3, size: 100 * gran, gran: gran, dirty: newBitmap(100), zero: newBitmap(100)}
	s.dirty.setRange(10, 20)
	p := s.encode()
	got, err := decodeSaved(p, 100*gran, gran)
	if err != nil || got.gen != 3 || got.dirty.count != 10 || !got.dirty.get(10) || got.dirty.get(20) {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	if _, err := decodeSaved(p, 101*gran, gran); !errors.Is(err, ErrProgressMismatch) {
		t.Fatalf("other size: %v", err)
	}
	bad := bytes.Clone(p)
	bad[headerLen] ^= 1
	if _, err := decodeSaved(bad, 100*gran, gran); !errors.Is(err, ErrProgressMismatch) {
		t.Fatalf("flipped bit: %v", err)
	}
	store := &memStore{p: bad}
	if _, err := New(allData(100, gran), newMemTarget(100*gran), Options{Granularity: gran, Store: store}); !errors.Is(err, ErrProgressMismatch) {
		t.Fatalf("New over corrupt progress = %v", err)
	}
}

// A zeroed target: the copier writes data into a hole granule, the
// workload trims it back to a hole, and the daemon dies before saving
// again. The saved bitmap still calls the granule zero. The resumed copier
// must not trust that: it zeroes the granule instead of skipping it.
func TestResumeDoesNotTrustZeroBitsOfDirtyGranules(t *testing.T) {
	const gran = 16 * kib
	src := newMemSource(8*gran, gran)
	dst := newMemTarget(src.Size())
	store := &memStore{}
	c, err := New(src, dst, Options{Granularity: gran, Workers: 1, TargetZeroed: true, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Checkpoint(); err != nil { // all dirty, all zero
		t.Fatal(err)
	}
	store.freeze()
	src.write(bytes.Repeat([]byte{7}, int(gran)), 3*gran)
	c.MarkDirty(3*gran, gran)
	ctx, cancel := context.WithCancel(context.Background())
	wait := run(ctx, c)
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	wait()
	src.trim(3*gran, gran) // not copied again before the crash
	if dst.sum() == src.sum() {
		t.Fatal("test setup: the target should hold the stale granule")
	}

	c2, err := New(src, dst, Options{Granularity: gran, Workers: 2, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, c2)
	if dst.sum() != src.sum() {
		t.Fatal("the resumed copy skipped a granule the saved bitmap called zero but the target held data in")
	}
}

// Checkpoint flushes the source before it saves: a clone write the
// copier already copied must not be lost from the clone by a crash while
// the saved bitmap calls it copied.
func TestCheckpointFlushesSourceBeforeSaving(t *testing.T) {
	src := allData(4, 16*kib)
	dst := newMemTarget(src.Size())
	store := &memStore{}
	flushed := 0
	c, err := New(src, dst, Options{Granularity: 16 * kib, Store: store,
		FlushSource: func() error {
			if p, _ := store.Load(); p != nil && flushed == 0 {
				t.Error("progress was saved before the source was flushed")
			}
			flushed++
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if flushed != 1 {
		t.Fatalf("FlushSource called %d times, want 1", flushed)
	}
	c2, err := New(src, dst, Options{Granularity: 16 * kib, Store: store,
		FlushSource: func() error { return errBoom }})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := store.Load()
	if err := c2.Checkpoint(); !errors.Is(err, errBoom) {
		t.Fatalf("Checkpoint = %v, want the source's flush error", err)
	}
	if after, _ := store.Load(); !bytes.Equal(before, after) {
		t.Fatal("progress was saved although the source could not be flushed")
	}
}
