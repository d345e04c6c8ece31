package timeline

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Once writes pause, blocks with runs of patches are folded: their newest
// version becomes a base. Every instant reads what it did, before and
// after a reopen.
func TestFoldKeepsEveryInstant(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	p.write(t, 300)
	p.e.s.waitFolds()
	requireFolded(t, p)
	p.check(t, "folded")
	p.e.close()
	p.e.open()
	p.check(t, "reopened")
}

// Folding runs between bursts of writes to the same blocks: no write is
// lost and no instant changes.
func TestFoldBesideWrites(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	for range 20 {
		p.write(t, 15)
		time.Sleep(3 * time.Millisecond)
	}
	p.e.s.waitFolds()
	p.check(t, "written and folded")
}

// The queue of a store that stopped is found again at the next open.
func TestFoldAfterReopen(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Hour)) // nothing folds in this run
	p.write(t, 200)
	if p.e.s.FoldsPending() == 0 {
		t.Fatal("no block waits to be folded after runs of patches")
	}
	p.e.close()
	p.e.open()
	requireFoldsAfterReopen(t, p)
}

// requireFoldsAfterReopen lets the reopened store fold what waits and
// checks every instant.
func requireFoldsAfterReopen(t *testing.T, p *pruneEnv) {
	t.Helper()
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	deadline := time.Now().Add(30 * time.Second)
	for p.e.s.FoldsPending() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	requireFolded(t, p)
	p.check(t, "folded after reopen")
}

// requireFolded fails unless every block's newest instant ends in fewer
// than foldAt patches.
func requireFolded(t *testing.T, p *pruneEnv) {
	t.Helper()
	m, err := p.e.s.VolumeByID(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]blockRef, (int64(len(p.disk))+m.BlockSize-1)/m.BlockSize)
	if err := p.e.s.resolveOwn(m, m.Last, 0, refs); err != nil {
		t.Fatal(err)
	}
	for b, r := range refs {
		if len(r.patches) >= foldAt {
			t.Errorf("block %d still has %d patches at the newest instant", b, len(r.patches))
		}
	}
}

// A store closed with nothing left to fold says so, and the next open
// takes that instead of reading every version key. The mark is gone once
// the store is open, so runs written after it are found again by the
// open after a close that left them waiting.
func TestFoldMarkAfterCleanClose(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	p.write(t, 300)
	p.e.s.waitFolds()
	if !closeMarked(t, p.e) {
		t.Fatal("a store closed with nothing to fold did not say so")
	}
	p.e.open()
	if hasFoldedMark(t, p.e.db) {
		t.Fatal("the mark outlived the open that took it")
	}
	p.e.s.fold.idle.Store(int64(time.Hour)) // nothing folds in this run
	p.write(t, 200)
	if p.e.s.FoldsPending() == 0 {
		t.Fatal("no block waits to be folded after runs of patches")
	}
	if closeMarked(t, p.e) {
		t.Fatal("a store closed with blocks waiting to be folded says none is left")
	}
	p.e.open()
	requireFoldsAfterReopen(t, p)
}

// closeMarked closes e and reports whether the store left foldedKey.
func closeMarked(t *testing.T, e *scriptEnv) bool {
	t.Helper()
	e.guard.Close()
	e.s.Close()
	marked := hasFoldedMark(t, e.db)
	e.bs.StopReadingIndex()
	e.db.Close()
	e.bs.Close()
	return marked
}

// hasFoldedMark reports whether db holds foldedKey.
func hasFoldedMark(t *testing.T, db *pebble.DB) bool {
	t.Helper()
	_, closer, err := db.Get(foldedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	return true
}
