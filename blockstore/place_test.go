package blockstore

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every Put names where its chunk lies, stored or deduplicated; a read
// of hinted chunks looks nothing up in the index; and a stale place (a
// record of another chunk, another member of a bundle, a pack that is
// gone) costs a lookup, never wrong bytes.
func TestPlaces(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	var chunks [][]byte
	for i := range 20 { // compressible: stored in bundles
		chunks = append(chunks, bytes.Repeat([]byte(fmt.Sprintf("block %d ", i)), 8192))
	}
	for i := range 2 { // incompressible: stored whole
		c := make([]byte, 65536)
		rand.New(rand.NewSource(int64(i))).Read(c)
		chunks = append(chunks, c)
	}
	ids := make([]ID, len(chunks))
	for i, c := range chunks {
		ids[i] = Sum(c)
	}
	txn := s.NewTxn()
	res, err := txn.PutMany(ids, chunks)
	if err != nil {
		t.Fatal(err)
	}
	again, err := txn.Put(chunks[3]) // stored by this Txn already
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, db, txn)
	dedup := put(t, s, db, chunks[4], chunks[21]) // stored by an earlier Txn
	places := make([]Place, len(ids))
	bundled := 0
	for i, r := range res {
		want, err := s.locateIndex(ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if !r.Place.Known() || r.Place.loc != want {
			t.Fatalf("chunk %d: place %+v, the index says %+v", i, r.Place, want)
		}
		if want.codec == CodecBundle {
			bundled++
		}
		places[i] = r.Place
		p, err := ParsePlace(r.Place.AppendTo(nil))
		if err != nil || p != r.Place {
			t.Fatalf("chunk %d: place does not survive its encoding: %v", i, err)
		}
	}
	if bundled < 2 {
		t.Fatalf("%d chunks in bundles: the test tests less than it says", bundled)
	}
	if again.Place != places[3] || dedup[0].Place != places[4] || dedup[1].Place != places[21] {
		t.Fatalf("a deduplicated chunk's place differs: %+v %+v %+v", again.Place, dedup[0].Place, dedup[1].Place)
	}

	read := func(what string) {
		t.Helper()
		err := s.ReadMany(ids, nil, func(i int, d []byte) {
			if !bytes.Equal(d, chunks[i]) {
				t.Errorf("%s: chunk %d reads other bytes", what, i)
			}
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for i, id := range ids {
			if got, err := s.Get(id); err != nil || !bytes.Equal(got, chunks[i]) {
				t.Fatalf("%s: Get of chunk %d: %v", what, i, err)
			}
		}
	}

	s.locs = newLocCache(locCacheEntries)
	before := s.indexLookups.Load()
	s.Hint(ids, places)
	read("hinted")
	if n := s.indexLookups.Load() - before; n != 0 {
		t.Fatalf("a read of hinted chunks looked %d up in the index", n)
	}

	// Stale places: each chunk pointed at another's record, a bundle's
	// member at another member of the same bundle, one at a pack that
	// does not exist.
	stale := make([]Place, len(places))
	for i := range places {
		stale[i] = places[(i+1)%len(places)]
	}
	gone := places[21]
	gone.loc.pack = 999
	stale[21] = gone
	s.locs = newLocCache(locCacheEntries)
	before = s.indexLookups.Load()
	s.Hint(ids, stale)
	read("stale")
	if n := s.indexLookups.Load() - before; n < int64(len(ids)) {
		t.Fatalf("stale places: %d lookups for %d chunks", n, len(ids))
	}

	// A hint never replaces what a read learnt.
	s.Hint(ids, stale)
	before = s.indexLookups.Load()
	read("after stale hints")
	if n := s.indexLookups.Load() - before; n != 0 {
		t.Fatalf("hints replaced locations that reads had found: %d lookups", n)
	}

	// A ReadMany that found places stale remembers the index's: the same
	// stale places hinted again (as every read of an old version after a
	// collection does) cost no second lookup.
	for _, get := range []func(ID) error{
		func(ID) error { return s.ReadMany(ids, nil, func(int, []byte) {}) },
		func(id ID) error { _, err := s.Get(id); return err },
	} {
		s.locs = newLocCache(locCacheEntries)
		s.Hint(ids, stale)
		for _, id := range ids {
			if err := get(id); err != nil {
				t.Fatal(err)
			}
		}
		s.Hint(ids, stale)
		before = s.indexLookups.Load()
		for _, id := range ids {
			if err := get(id); err != nil {
				t.Fatal(err)
			}
		}
		if n := s.indexLookups.Load() - before; n != 0 {
			t.Fatalf("stale places hinted again: %d lookups", n)
		}
	}
}
