package protect

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Every caller of syncer.sync returns only after a sync that started
// after its call ended, whether it ran that sync or another caller did;
// callers that come together share syncs.
func TestSyncerCoversEveryCaller(t *testing.T) {
	var s syncer
	var clock atomic.Int64
	var mu sync.Mutex
	type run struct{ start, end int64 }
	var runs []run
	f := func() error {
		st := clock.Add(1)
		for range 3 {
			runtime.Gosched()
		}
		mu.Lock()
		runs = append(runs, run{st, clock.Add(1)})
		mu.Unlock()
		return nil
	}
	const callers, calls = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				called := clock.Add(1)
				if err := s.sync(f); err != nil {
					errs <- err
					return
				}
				returned := clock.Add(1)
				mu.Lock()
				covered := false
				for _, r := range runs {
					if r.start > called && r.end < returned {
						covered = true
						break
					}
				}
				mu.Unlock()
				if !covered {
					errs <- errors.New("a caller returned with no sync run since its call")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(runs) > callers*calls {
		t.Fatalf("%d syncs for %d calls", len(runs), callers*calls)
	}
	t.Logf("%d syncs for %d calls", len(runs), callers*calls)
}

// A failed sync is reported to the callers it covered, and not to those
// that came after it.
func TestSyncerReportsFailure(t *testing.T) {
	var s syncer
	boom := errors.New("boom")
	if err := s.sync(func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed sync returned %v", err)
	}
	if err := s.sync(func() error { return nil }); err != nil {
		t.Fatalf("a sync after the failed one returned %v", err)
	}
}
