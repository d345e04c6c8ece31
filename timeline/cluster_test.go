package timeline

import (
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore"
)

// Once writes pause, the patches of the blocks written lie next to each
// other in block order (oldest first within a block), the versions name
// the new places, and every instant reads what it did, also after a
// reopen.
func TestClusterLaysPatchesInBlockOrder(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Hour)) // nothing moves while writing
	v, err := p.e.s.Head(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	const bs = 16 << 10
	nblocks := int64(len(p.disk)) / bs
	rng := rand.New(rand.NewSource(9))
	// Two patches a block (fewer than foldAt), the blocks in reverse
	// order, so that the packs hold them in neither block order nor
	// pairs.
	for pass := range 2 {
		for b := nblocks - 1; b >= 0; b-- {
			off := b*bs + int64(pass)*4096 + rng.Int63n(1024)
			data := make([]byte, 3000)
			rng.Read(data)
			if _, err := v.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
			copy(p.disk[off:], data)
			p.record(t)
		}
	}
	v.Close()
	if inBlockOrder(t, p) {
		t.Fatal("the patches lay in block order before any clustering")
	}
	if p.e.s.FoldsPending() == 0 {
		t.Fatal("no block waits after patches were written")
	}
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	deadline := time.Now().Add(30 * time.Second)
	for p.e.s.FoldsPending() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !inBlockOrder(t, p) {
		t.Fatal("the patches do not lie in block order once the writes paused")
	}
	p.check(t, "clustered")
	// A collection takes the old records back: every instant reads the
	// same from the new places.
	res, err := p.e.s.Collect(context.Background(), blockstore.GCOptions{RewriteBelow: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRemoved == 0 {
		t.Error("no pack was rewritten or removed after the patches moved out of it")
	}
	p.check(t, "clustered and collected")
	p.e.close()
	p.e.open()
	p.check(t, "clustered and reopened")
}

// inBlockOrder reports whether the patches of the newest instant's
// blocks, in block order and oldest first within a block, lie one after
// another in one pack, as their versions' places say.
func inBlockOrder(t *testing.T, p *pruneEnv) bool {
	t.Helper()
	m, err := p.e.s.VolumeByID(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]blockRef, (int64(len(p.disk))+m.BlockSize-1)/m.BlockSize)
	if err := p.e.s.resolveOwn(m, m.Last, 0, refs); err != nil {
		t.Fatal(err)
	}
	var lastPack uint32
	var lastOff int64 = -1
	n := 0
	for _, r := range refs {
		for _, pt := range r.patches {
			if pt.zero {
				continue
			}
			if !pt.place.Known() {
				t.Fatal("a patch's version has no place")
			}
			pack, off := pt.place.Where()
			if lastOff >= 0 && (pack != lastPack || off <= lastOff) {
				return false
			}
			lastPack, lastOff = pack, off
			n++
		}
	}
	if n < 2 {
		t.Fatalf("%d patches at the newest instant", n)
	}
	return true
}
