package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// textBlock is a block that compresses: lines of words, different for
// each seed.
func textBlock(seed int64, size int) []byte {
	r := rand.New(rand.NewSource(seed))
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}
	var b bytes.Buffer
	for b.Len() < size {
		fmt.Fprintf(&b, "%08d %s %s %d\n", r.Intn(1e8), words[r.Intn(len(words))], words[r.Intn(len(words))], r.Intn(1000))
	}
	return b.Bytes()[:size]
}

// putMany stores chunks with one PutMany, as an import segment does.
func putMany(t *testing.T, s *Store, db *pebble.DB, chunks [][]byte) []PutResult {
	t.Helper()
	txn := s.NewTxn()
	ids := make([]ID, len(chunks))
	for i, c := range chunks {
		ids[i] = Sum(c)
	}
	res, err := txn.PutMany(ids, chunks)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, s, db, txn)
	return res
}

// bundleData is 40 text blocks with a random block after every tenth.
func bundleData() [][]byte {
	var chunks [][]byte
	for i := range 40 {
		chunks = append(chunks, textBlock(int64(i), 65536))
		if i%10 == 9 {
			r := make([]byte, 65536)
			rand.New(rand.NewSource(int64(1000 + i))).Read(r)
			chunks = append(chunks, r)
		}
	}
	return chunks
}

func TestBundlesRoundTrip(t *testing.T) {
	for _, fs := range []string{"mem", "disk"} {
		t.Run(fs, func(t *testing.T) {
			var s *Store
			var db *pebble.DB
			if fs == "mem" {
				s, db = openTest(t, vfs.NewMem(), CodecZstd)
			} else {
				s, db = openDiskTest(t)
			}
			chunks := bundleData()
			res := putMany(t, s, db, chunks)
			records := map[recordKey]int{}
			var charged int64
			for i, c := range chunks {
				loc, err := s.locate(Sum(c))
				if err != nil {
					t.Fatal(err)
				}
				random := i%11 == 10
				if random != (loc.codec == CodecRaw) || !random && loc.codec != CodecBundle {
					t.Fatalf("chunk %d stored as %s", i, loc.codec)
				}
				if loc.codec == CodecBundle {
					records[loc.key()]++
				}
				charged += res[i].Stored
			}
			// 40 text blocks: three bundles of 16, 16 and 8.
			if len(records) != 3 {
				t.Fatalf("%d bundle records: %v", len(records), records)
			}
			for k, n := range records {
				if n > maxBundleMembers {
					t.Fatalf("bundle %v has %d members", k, n)
				}
			}
			st, err := s.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.StoredBytes != st.PackBytes-packHeaderSize || charged != st.StoredBytes {
				t.Fatalf("stored %d, charged %d, packs %d", st.StoredBytes, charged, st.PackBytes)
			}
			if st.DecodedBytes != int64(len(chunks))*65536 {
				t.Fatalf("decoded bytes %d", st.DecodedBytes)
			}
			// Get, and ReadMany in an order of its own, return every chunk.
			for _, c := range chunks {
				if got, err := s.Get(Sum(c)); err != nil || !bytes.Equal(got, c) {
					t.Fatalf("Get: %v", err)
				}
			}
			perm := rand.New(rand.NewSource(9)).Perm(len(chunks))
			ids := make([]ID, len(perm))
			for k, i := range perm {
				ids[k] = Sum(chunks[i])
			}
			var mu sync.Mutex
			seen := 0
			err = s.ReadMany(ids, nil, func(k int, data []byte) {
				if !bytes.Equal(data, chunks[perm[k]]) {
					t.Errorf("ReadMany: chunk %d differs", perm[k])
				}
				mu.Lock()
				seen++
				mu.Unlock()
			})
			if err != nil || seen != len(ids) {
				t.Fatalf("ReadMany: %v, %d of %d chunks", err, seen, len(ids))
			}
		})
	}
}

func openDiskTest(t *testing.T) (*Store, *pebble.DB) {
	t.Helper()
	dir := t.TempDir()
	db, err := pebble.Open(dir+"/db", &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Dir: dir + "/packs", DB: db, Codec: CodecZstd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); db.Close() })
	return s, db
}

// A damaged byte anywhere in a bundle makes every member an error, never
// other bytes; and a bundle that failed is not remembered as loaded.
func TestDamagedBundleIsAnError(t *testing.T) {
	fs := vfs.NewMem()
	first, db := openTest(t, fs, CodecZstd)
	chunks := bundleData()[:8]
	putMany(t, first, db, chunks)
	loc, err := first.locate(Sum(chunks[0]))
	if err != nil || loc.codec != CodecBundle {
		t.Fatalf("%v %v", loc.codec, err)
	}
	for _, at := range []int64{recordHeaderSize + 2, recordHeaderSize + 100, loc.size() - 1} {
		// A store opened afresh: no bundle decoded before the damage.
		s, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecZstd, NoParity: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		f, _ := fs.OpenReadWrite("packs/"+packName(loc.pack), vfs.WriteCategoryUnspecified)
		var b [1]byte
		f.ReadAt(b[:], loc.offset+at)
		f.WriteAt([]byte{b[0] ^ 0x40}, loc.offset+at)
		for _, c := range chunks {
			if _, err := s.Get(Sum(c)); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get with byte %d damaged: %v", at, err)
			}
			err := s.ReadMany([]ID{Sum(c)}, nil, func(int, []byte) { t.Fatalf("damaged bundle served bytes") })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadMany with byte %d damaged: %v", at, err)
			}
		}
		f.WriteAt(b[:], loc.offset+at) // repaired: readable again
		f.Close()
		if got, err := s.Get(Sum(chunks[3])); err != nil || !bytes.Equal(got, chunks[3]) {
			t.Fatalf("after repair: %v", err)
		}
		if err := s.ReadMany([]ID{Sum(chunks[5])}, nil, func(int, []byte) {}); err != nil {
			t.Fatalf("after repair: %v", err)
		}
	}
}

// An index entry that names the wrong member of a bundle (its offset or
// length disagrees with the bundle's table) is an error.
func TestBundleEntryMustMatchTable(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	chunks := bundleData()[:4]
	putMany(t, s, db, chunks)
	a, b := Sum(chunks[1]), Sum(chunks[2])
	la, _ := s.locate(a)
	lb, _ := s.locate(b)
	if err := db.Set(indexKey(a), lb.marshal(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.locs.forget(a) // the index changed beneath the store: it must not remember a
	if _, err := s.Get(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get through another member's entry: %v", err)
	}
	if err := s.ReadMany([]ID{a}, nil, func(int, []byte) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadMany through another member's entry: %v", err)
	}
	la.decodedLen--
	db.Set(indexKey(a), la.marshal(), pebble.Sync)
	s.locs.forget(a)
	if _, err := s.Get(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get with a wrong length: %v", err)
	}
}

// Readers of the members of the same bundles, side by side, get their
// own bytes (run with -race); a bundle is decoded once for all of them
// while it is cached.
func TestBundleReadersInParallel(t *testing.T) {
	s, db := openDiskTest(t)
	chunks := bundleData()
	putMany(t, s, db, chunks)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for range 50 {
				i := r.Intn(len(chunks))
				j := r.Intn(len(chunks))
				err := s.ReadMany([]ID{Sum(chunks[i]), Sum(chunks[j])}, nil, func(k int, data []byte) {
					want := chunks[i]
					if k == 1 {
						want = chunks[j]
					}
					if !bytes.Equal(data, want) {
						t.Errorf("reader %d: chunk differs", g)
					}
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A cache above the store is given the members of a bundle it did not
// ask for; a scan through it keeps none.
func TestCacheKeepsBundleSiblings(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	chunks := bundleData()[:10]
	putMany(t, s, db, chunks)
	scan := NewSlabCache(s, 64<<20)
	if err := scan.ReadManyScan([]ID{Sum(chunks[0])}, nil, func(int, []byte) {}); err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if scan.Has(Sum(c)) {
			t.Fatalf("a scan kept a chunk")
		}
	}
	c := NewSlabCache(s, 64<<20)
	if err := c.ReadMany([]ID{Sum(chunks[4])}, nil, func(_ int, data []byte) {
		if !bytes.Equal(data, chunks[4]) {
			t.Fatalf("wrong bytes")
		}
	}); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chunks {
		if !c.Has(Sum(ch)) {
			t.Fatalf("member %d of the bundle is not cached", i)
		}
		got, err := c.Get(Sum(ch))
		if err != nil || !bytes.Equal(got, ch) {
			t.Fatalf("cached member %d: %v", i, err)
		}
	}
}

// The bundle cache recycles what it drops, and never a buffer a reader
// still holds.
func TestBundleCacheEviction(t *testing.T) {
	c := newBundleCache(2)
	var held []*bundleEntry
	for k := range 5 {
		e, owner := c.acquire(recordKey{pack: 1, offset: int64(k)})
		if !owner {
			t.Fatalf("entry %d: not the owner", k)
		}
		bp := c.buffer()
		(*bp)[0] = byte(k)
		c.fill(e, nil, (*bp)[:1], bp)
		held = append(held, e)
	}
	if len(c.byKey) != 2 || c.lru.Len() != 2 || len(c.free) != 0 {
		t.Fatalf("%d entries, %d in the LRU, %d free while all are held", len(c.byKey), c.lru.Len(), len(c.free))
	}
	for k, e := range held {
		if e.data[0] != byte(k) {
			t.Fatalf("entry %d's buffer was reused while held", k)
		}
		c.release(e)
	}
	if len(c.free) != 2 { // the three dropped ones, up to max
		t.Fatalf("%d buffers free", len(c.free))
	}
	e, owner := c.acquire(recordKey{pack: 1, offset: 4})
	if owner || e.data[0] != 4 {
		t.Fatalf("a cached entry was not found")
	}
	c.release(e)
	e, owner = c.acquire(recordKey{pack: 1, offset: 9})
	c.fail(e, ErrCorrupt, nil)
	c.release(e)
	if _, owner := c.acquire(recordKey{pack: 1, offset: 9}); !owner {
		t.Fatalf("a failed entry was remembered")
	}
}
