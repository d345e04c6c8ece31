package blockstore

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A run of small writes into one block, each stored by PutDelta against
// the chunk before it: every chunk reads back as written, whether its base
// was stored raw, in a bundle or as a slices record, and a few kilobytes
// changed cost a few kilobytes.
func TestPutDeltaChain(t *testing.T) {
	for _, tc := range []struct {
		name string
		base []byte
	}{
		{"raw base", randomBlock(1)},
		{"bundled base", textBlock(2, 65536)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, db := openTest(t, vfs.NewMem(), CodecZstd)
			base := tc.base
			// Bundled: stored with siblings, as an import stores text.
			if tc.name == "bundled base" {
				putMany(t, s, db, [][]byte{textBlock(3, 65536), base, textBlock(4, 65536)})
				if loc, err := s.locate(Sum(base)); err != nil || loc.codec != CodecBundle {
					t.Fatalf("the base is not in a bundle: %v %v", loc.codec, err)
				}
			} else {
				put(t, s, db, base)
			}
			rng := rand.New(rand.NewSource(5))
			cur := base
			for i := range 40 {
				next := bytes.Clone(cur)
				off := rng.Intn(len(next)/512-8) * 512
				rng.Read(next[off : off+4096])
				txn := s.NewTxn()
				r, err := txn.PutDelta(next, Sum(cur), cur)
				if err != nil {
					t.Fatal(err)
				}
				commit(t, s, db, txn)
				if r.ID != Sum(next) || !r.New {
					t.Fatalf("write %d: result %+v", i, r)
				}
				// Literal bytes add up as the block is written over; until
				// a quarter of it is, each write costs little more than
				// its own bytes.
				if i < 3 {
					if loc, err := s.locate(r.ID); err != nil || loc.codec != CodecSlices || r.Stored > 3*4096 {
						t.Errorf("write %d of 4 KiB stored as %v, %d bytes (%v)", i, loc.codec, r.Stored, err)
					}
				}
				got, err := s.Get(r.ID)
				if err != nil || !bytes.Equal(got, next) {
					t.Fatalf("write %d reads back wrong: %v", i, err)
				}
				cur = next
			}
			// Every version, not only the last, still reads.
			if got, err := s.Get(Sum(base)); err != nil || !bytes.Equal(got, base) {
				t.Fatalf("the base reads back wrong: %v", err)
			}
		})
	}
}

// PutDelta stores a chunk whole when the change is large, and
// deduplicates one that is already stored.
func TestPutDeltaFallsBack(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	base := randomBlock(7)
	put(t, s, db, base)
	wide := bytes.Clone(base)
	rand.New(rand.NewSource(8)).Read(wide[4096 : 4096+32768])
	txn := s.NewTxn()
	r, err := txn.PutDelta(wide, Sum(base), base)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, db, txn)
	if r.Stored < 32768 {
		t.Fatalf("half a block of new random bytes stored in %d bytes", r.Stored)
	}
	if got, err := s.Get(r.ID); err != nil || !bytes.Equal(got, wide) {
		t.Fatalf("reads back wrong: %v", err)
	}
	txn = s.NewTxn()
	r, err = txn.PutDelta(wide, Sum(base), base)
	if err != nil || r.New || r.ID != Sum(wide) {
		t.Fatalf("storing it again: %+v, %v", r, err)
	}
	// The same bytes as the base: nothing new.
	txn = s.NewTxn()
	if r, err = txn.PutDelta(bytes.Clone(base), Sum(base), base); err != nil || r.New {
		t.Fatalf("an unchanged block: %+v, %v", r, err)
	}
}

func randomBlock(seed int64) []byte {
	b := make([]byte, 65536)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}
