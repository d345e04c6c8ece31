package blockstore

import (
	"errors"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Relocate lays records one after another in the order asked, points the
// index at the copies, and every chunk reads back as it was; the old
// records become garbage that a collection takes back.
func TestRelocateInOrder(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	rng := rand.New(rand.NewSource(1))
	chunks := make([][]byte, 40)
	for i := range chunks {
		chunks[i] = make([]byte, 4096)
		rng.Read(chunks[i])
	}
	res := put(t, s, db, chunks...)
	// Between them, other chunks, so that neighbours in the new order lay
	// apart before.
	for range 3 {
		filler := make([]byte, 64<<10)
		rng.Read(filler)
		put(t, s, db, filler)
	}
	order := rng.Perm(len(chunks))
	ids := make([]ID, len(order))
	for i, k := range order {
		ids[i] = res[k].ID
	}
	// Neighbours in order are not already adjacent.
	if adjacent(t, s, ids) {
		t.Fatal("the chunks lay in the new order before Relocate")
	}
	places, err := s.Relocate(ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(places) != len(ids) {
		t.Fatalf("moved %d chunks of %d", len(places), len(ids))
	}
	if !adjacent(t, s, ids) {
		t.Fatal("the relocated chunks do not lie one after another in the order asked")
	}
	for i, id := range ids {
		pack, off := places[id].Where()
		loc, err := s.locateIndex(id)
		if err != nil {
			t.Fatal(err)
		}
		if loc.pack != pack || loc.offset != off {
			t.Fatalf("chunk %d: the index says pack %d at %d, Relocate %d at %d", i, loc.pack, loc.offset, pack, off)
		}
	}
	for k, c := range chunks {
		mustGet(t, s, res[k].ID, c)
	}
	// A collection keeps the moved chunks, referenced or not by places.
	for _, r := range res {
		b := db.NewBatch()
		b.Set(refKey(r.ID), nil, nil)
		if err := b.Commit(nil); err != nil {
			t.Fatal(err)
		}
	}
	collect(t, s, GCOptions{})
	for k, c := range chunks {
		mustGet(t, s, res[k].ID, c)
	}
}

// While a collection runs or is held off, Relocate moves nothing.
func TestRelocateWaitsForCollection(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	c := make([]byte, 4096)
	rand.New(rand.NewSource(2)).Read(c)
	res := put(t, s, db, c)
	before, err := s.locateIndex(res[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	release := s.HoldGC()
	_, err = s.Relocate([]ID{res[0].ID})
	release()
	if !errors.Is(err, ErrCollecting) {
		t.Fatalf("Relocate while collections are held off: %v, want ErrCollecting", err)
	}
	after, err := s.locateIndex(res[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatal("Relocate moved a chunk while collections were held off")
	}
}

// adjacent reports whether the records of ids lie one right after
// another, in that order, in one pack.
func adjacent(t *testing.T, s *Store, ids []ID) bool {
	t.Helper()
	var prev location
	for i, id := range ids {
		loc, err := s.locateIndex(id)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && (loc.pack != prev.pack || loc.offset != prev.offset+prev.size()) {
			return false
		}
		prev = loc
	}
	return true
}
