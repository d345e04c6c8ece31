package blockstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// refPrefix keys stand for a caller's records in these tests: 'r' | id
// says chunk id is referenced.
const refPrefix = 'r'

func refKey(id ID) []byte { return append([]byte{refPrefix}, id[:]...) }

// markRefs is the mark of a caller whose records are refPrefix keys.
func markRefs(snap *pebble.Snapshot, fn func(ID)) error {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{refPrefix}, UpperBound: []byte{refPrefix + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		fn(ID(it.Key()[1:]))
	}
	return nil
}

// putRef stores chunks and commits references to the ones keep says, in
// the batch with their index entries, as a writer does.
func putRef(t testing.TB, s *Store, db *pebble.DB, keep func(i int) bool, chunks ...[]byte) []ID {
	t.Helper()
	txn := s.NewTxn()
	defer txn.Done()
	res, err := txn.PutMany(sums(chunks), chunks)
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	ids := make([]ID, len(res))
	for i, r := range res {
		ids[i] = r.ID
		if keep(i) {
			b.Set(refKey(r.ID), nil, nil)
		}
	}
	commitWith(t, s, txn, b)
	return ids
}

func sums(chunks [][]byte) []ID {
	ids := make([]ID, len(chunks))
	for i, c := range chunks {
		ids[i] = Sum(c)
	}
	return ids
}

func unref(t *testing.T, db *pebble.DB, ids ...ID) {
	t.Helper()
	b := db.NewBatch()
	for _, id := range ids {
		b.Delete(refKey(id), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func mustGet(t testing.TB, s *Store, id ID, want []byte) {
	t.Helper()
	got, err := s.Get(id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: wrong bytes", id)
	}
}

func collect(t *testing.T, s *Store, o GCOptions) GCResult {
	t.Helper()
	res, err := s.Collect(context.Background(), markRefs, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCollectRemovesUnreferenced: unreferenced chunks lose their index
// entries, packs that end up mostly garbage are rewritten, the live
// chunks read back from their new places, and a dry run changes nothing.
func TestCollectRemovesUnreferenced(t *testing.T) {
	for _, codec := range []Codec{CodecRaw, CodecZstd} {
		t.Run(codec.String(), func(t *testing.T) {
			fs := vfs.NewMem()
			s, db := openTest(t, fs, codec)
			var chunks [][]byte
			for i := range 300 { // 2.4 MiB: three packs of 1 MiB
				chunks = append(chunks, randomChunk(int64(i)))
			}
			// Every tenth stays referenced.
			ids := putRef(t, s, db, func(i int) bool { return i%10 == 0 }, chunks...)
			before, _ := s.Stats()

			dry := collect(t, s, GCOptions{DryRun: true})
			if dry.Removed != 270 || dry.Referenced != 30 || dry.Chunks != 300 {
				t.Fatalf("dry run: %+v", dry)
			}
			if st, _ := s.Stats(); st != before {
				t.Fatalf("dry run changed the store: %+v -> %+v", before, st)
			}

			res := collect(t, s, GCOptions{})
			if res.Removed != 270 || res.PacksRemoved == 0 || res.PackBytesAfter >= res.PackBytesBefore/2 {
				t.Fatalf("collect: %+v", res)
			}
			st, _ := s.Stats()
			if st.Chunks != 30 {
				t.Fatalf("%d chunks indexed after gc, want 30", st.Chunks)
			}
			for i, id := range ids {
				if i%10 == 0 {
					mustGet(t, s, id, chunks[i])
				} else if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
					t.Fatalf("collected chunk %d: %v", i, err)
				}
			}
			// A collected chunk is stored again when written again.
			again := putRef(t, s, db, func(int) bool { return true }, chunks[1])
			mustGet(t, s, again[0], chunks[1])
			// Nothing is left to collect; the moved chunks read after a
			// second collection closed the old packs' handles.
			if res := collect(t, s, GCOptions{}); res.Removed != 0 {
				t.Fatalf("second collect removed %d", res.Removed)
			}
			for i := 0; i < 300; i += 10 {
				mustGet(t, s, ids[i], chunks[i])
			}
		})
	}
}

// TestCollectKeepsSlicesSources: a chunk that only a referenced slices
// record uses stays.
func TestCollectKeepsSlicesSources(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecRaw)
	src := make([]byte, 64<<10)
	rand.New(rand.NewSource(7)).Read(src)
	srcID := putRef(t, s, db, func(int) bool { return true }, src)[0]
	shifted := append(append([]byte{}, make([]byte, 4096)...), src[:60<<10]...)
	sliced := putRef(t, s, db, func(int) bool { return true }, shifted)[0]
	if loc, err := s.locateIndex(sliced); err != nil || loc.codec != CodecSlices {
		t.Fatalf("the shifted copy is not a slices record: %v %v", loc.codec, err)
	}
	unref(t, db, srcID)
	res := collect(t, s, GCOptions{})
	if res.Removed != 0 {
		t.Fatalf("removed %d chunks, the slices source among them", res.Removed)
	}
	mustGet(t, s, srcID, src)
	mustGet(t, s, sliced, shifted)
	unref(t, db, sliced)
	if res := collect(t, s, GCOptions{}); res.Removed != 2 {
		t.Fatalf("removed %d chunks, want the slices record and its source", res.Removed)
	}
}

// TestCollectBundles: a bundle record stays while any member is
// referenced, and goes with its last one.
func TestCollectBundles(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecZstd)
	var chunks [][]byte
	for i := range 8 {
		chunks = append(chunks, bytes.Repeat([]byte{byte(i), 1, 2, 3}, 2048))
	}
	ids := putRef(t, s, db, func(i int) bool { return i == 3 }, chunks...)
	if loc, _ := s.locateIndex(ids[0]); loc.codec != CodecBundle {
		t.Fatalf("not bundled: %v", loc.codec)
	}
	res := collect(t, s, GCOptions{})
	if res.Removed != 7 || res.RemovedBytes != 0 {
		t.Fatalf("collect: %+v (the bundle's record must stay)", res)
	}
	mustGet(t, s, ids[3], chunks[3])
	unref(t, db, ids[3])
	if res := collect(t, s, GCOptions{}); res.Removed != 1 || res.RemovedBytes == 0 || res.PacksRemoved != 1 {
		t.Fatalf("collect: %+v", res)
	}
}

// TestCollectSparesChunksInUse: a chunk that a live Txn deduplicated
// against before the collection, or one deduplicated during its mark,
// stays, although no committed record references it yet.
func TestCollectSparesChunksInUse(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecRaw)
	a, b, c := randomChunk(1), randomChunk(2), randomChunk(3)
	putRef(t, s, db, func(int) bool { return false }, a, b, c)

	early := s.NewTxn() // relies on a before the collection starts
	if r, err := early.Put(a); err != nil || r.New {
		t.Fatalf("put a: %+v %v", r, err)
	}
	var during *Txn
	mark := func(snap *pebble.Snapshot, fn func(ID)) error {
		during = s.NewTxn() // relies on b while the mark runs
		if r, err := during.Put(b); err != nil || r.New {
			t.Fatalf("put b: %+v %v", r, err)
		}
		return markRefs(snap, fn)
	}
	res, err := s.Collect(context.Background(), mark, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 {
		t.Fatalf("removed %d, want only c", res.Removed)
	}
	for _, txn := range []*Txn{early, during} {
		bt := db.NewBatch()
		txn.AddTo(bt)
		bt.Commit(pebble.Sync)
		txn.Done()
	}
	mustGet(t, s, Sum(a), a)
	mustGet(t, s, Sum(b), b)
	if ok, _ := s.Has(Sum(c)); ok {
		t.Fatal("c is still indexed")
	}
}

// TestCollectUnderLoad: writers store, deduplicate and reference chunks,
// and readers read referenced ones, while collections run one after
// another: every reference committed points at a chunk that reads back,
// and no read fails.
func TestCollectUnderLoad(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir+"/db", &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{Dir: dir + "/packs", DB: db, Codec: CodecZstd, PackSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const distinct = 64
	content := func(i int) []byte {
		b := randomChunk(int64(i))
		return b[:4096+i*37]
	}
	index := map[ID]int{}
	for i := range distinct {
		index[Sum(content(i))] = i
	}
	// The first eight stay referenced throughout: the readers read them.
	const pinned = 8
	var pins [][]byte
	for i := range pinned {
		pins = append(pins, content(i))
	}
	putRef(t, s, db, func(int) bool { return true }, pins...)
	var stop atomic.Bool
	var wg sync.WaitGroup
	fail := make(chan error, 16)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for !stop.Load() {
				// Reference a few, drop a few.
				var chunks [][]byte
				for range 4 {
					chunks = append(chunks, content(rng.Intn(distinct)))
				}
				txn := s.NewTxn()
				res, err := txn.PutMany(sums(chunks), chunks)
				if err != nil {
					fail <- err
					return
				}
				b := db.NewBatch()
				for _, r := range res {
					b.Set(refKey(r.ID), nil, nil)
				}
				if rng.Intn(2) == 0 {
					b.Delete(refKey(Sum(content(pinned+rng.Intn(distinct-pinned)))), nil)
				}
				txn.AddTo(b)
				if err := s.SyncPacks(); err != nil {
					fail <- err
					return
				}
				if err := b.Commit(pebble.Sync); err != nil {
					fail <- err
					return
				}
				txn.Done()
			}
		}()
	}
	wg.Add(1)
	go func() { // reads the pinned chunks while packs move under them
		defer wg.Done()
		for !stop.Load() {
			for _, p := range pins {
				got, err := s.Get(Sum(p))
				if err != nil || !bytes.Equal(got, p) {
					fail <- fmt.Errorf("read of a referenced chunk: %v", err)
					return
				}
			}
		}
	}()
	for range 20 {
		if _, err := s.Collect(context.Background(), markRefs, GCOptions{RewriteBelow: 0.9}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatal(err)
	}
	// Every reference committed reads back its bytes.
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte{refPrefix}, UpperBound: []byte{refPrefix + 1}})
	n := 0
	for it.First(); it.Valid(); it.Next() {
		id := ID(it.Key()[1:])
		mustGet(t, s, id, content(index[id]))
		n++
	}
	it.Close()
	if n == 0 {
		t.Fatal("no references left to check")
	}
}

// TestCollectTwiceAtOnce: a second collection right after one that
// removed packs (whose handles stay open for a while) does not take
// them for packs to rewrite.
func TestCollectTwiceAtOnce(t *testing.T) {
	dir := t.TempDir()
	s, db := openOnDisk(t, dir)
	defer s.Close()
	var chunks [][]byte
	for i := range 64 {
		chunks = append(chunks, randomChunk(int64(i)))
	}
	ids := putRef(t, s, db, func(i int) bool { return i == 0 }, chunks...)
	if res := collect(t, s, GCOptions{}); res.PacksRemoved != 1 {
		t.Fatalf("first collect: %+v", res)
	}
	if res := collect(t, s, GCOptions{}); res.PacksRemoved != 0 || res.Removed != 0 {
		t.Fatalf("second collect: %+v", res)
	}
	mustGet(t, s, ids[0], chunks[0])
}

// TestCollectAroundDamage: a live record that fails its checksum in a
// pack to rewrite is rebuilt from parity and moved; without parity the
// pack is left as it is and the collection goes on.
func TestCollectAroundDamage(t *testing.T) {
	for _, withParity := range []bool{true, false} {
		t.Run(fmt.Sprintf("parity=%v", withParity), func(t *testing.T) {
			dir := t.TempDir()
			db, err := pebble.Open(dir+"/db", &pebble.Options{Logger: quiet{}})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			s, err := Open(Options{Dir: dir + "/packs", DB: db, Codec: CodecRaw, NoParity: !withParity})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var chunks [][]byte
			for i := range 64 {
				chunks = append(chunks, randomChunk(int64(i)))
			}
			ids := putRef(t, s, db, func(i int) bool { return i == 5 }, chunks...)
			sealNow(t, s)
			loc, _ := s.locateIndex(ids[5])
			f, err := os.OpenFile(dir+"/packs/"+packName(loc.pack), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("damage"), loc.offset+recordHeaderSize+100)
			f.Close()
			res := collect(t, s, GCOptions{})
			if withParity {
				if res.PacksRemoved != 1 {
					t.Fatalf("collect: %+v, want the pack rebuilt and rewritten", res)
				}
				mustGet(t, s, ids[5], chunks[5])
			} else {
				if res.PacksRemoved != 0 || res.Removed != 63 {
					t.Fatalf("collect: %+v, want the damaged pack left alone", res)
				}
				if _, err := s.Get(ids[5]); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("the damaged chunk reads: %v", err)
				}
			}
		})
	}
}
