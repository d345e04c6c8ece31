package timeline

import (
	"context"
	"sync"
	"testing"

	"github.com/rewind-dev/rewind/blockstore"
)

// TestCollectAfterPrune: a collection after a prune removes the chunks
// (whole blocks and patches) that only removed versions used, and every
// kept instant reads back as it was: at once, after a reopen (through
// places that the rewritten packs made stale), and while writes and
// further collections run side by side.
func TestCollectAfterPrune(t *testing.T) {
	p := newPruneEnv(t, 300)
	ctx := context.Background()
	first, err := p.e.s.Collect(ctx, blockstore.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Removed != 0 {
		t.Fatalf("a collection before any prune removed %d chunks", first.Removed)
	}
	var keep []int64
	for i := 0; i < len(p.times); i += 50 {
		keep = append(keep, p.times[i])
	}
	if _, err := p.e.s.Prune(p.vol, keep, false); err != nil {
		t.Fatal(err)
	}
	res, err := p.e.s.Collect(ctx, blockstore.GCOptions{RewriteBelow: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed == 0 || res.PacksRemoved == 0 {
		t.Fatalf("collect after prune: %+v", res)
	}
	p.check(t, "collected")
	p.e.close()
	p.e.open()
	// The kept versions' places name the packs the collection rewrote:
	// reads find them stale and look the chunks up instead.
	before := p.e.bs.IndexLookups()
	p.check(t, "reopened")
	if p.e.bs.IndexLookups() == before {
		t.Fatal("no read looked a chunk up after its pack was rewritten: no place went stale")
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.e.s.Collect(ctx, blockstore.GCOptions{RewriteBelow: 0.9}); err != nil {
				errs <- err
				return
			}
		}
	}()
	p.write(t, 100)
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	p.check(t, "written beside collections")
	if _, err := p.e.s.Collect(ctx, blockstore.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	p.check(t, "collected again")
}
