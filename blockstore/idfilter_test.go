package blockstore

import (
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The filter of stored IDs answers "absent" for IDs that are not stored,
// and never for one that is: not for those the index held when the store
// opened, nor for those stored while it was being loaded or after.
func TestIDFilterNeverHidesAStoredChunk(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecRaw)
	chunk := func(i int) []byte {
		c := make([]byte, 4096)
		rand.New(rand.NewSource(int64(i))).Read(c)
		return c
	}
	var before [][]byte
	for i := range 3000 {
		before = append(before, chunk(i))
	}
	put(t, s, db, before...)
	s.Close()
	s, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecRaw, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Stored while the filter loads.
	var wg sync.WaitGroup
	var during [][]byte
	for i := range 200 {
		during = append(during, chunk(10000+i))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, c := range during {
			put(t, s, db, c)
		}
	}()
	wg.Wait()
	<-s.ids.done
	if !s.ids.ready.Load() {
		t.Fatal("the filter did not become ready")
	}
	after := chunk(20000)
	put(t, s, db, after)
	for i, c := range append(append(before, during...), after) {
		if s.ids.absent(Sum(c)) {
			t.Fatalf("stored chunk %d reported absent", i)
		}
		if ok, err := s.Has(Sum(c)); err != nil || !ok {
			t.Fatalf("stored chunk %d: Has = %v, %v", i, ok, err)
		}
	}
	absent := 0
	for i := range 1000 {
		if s.ids.absent(Sum(chunk(30000 + i))) {
			absent++
		}
	}
	if absent < 990 {
		t.Fatalf("only %d of 1000 chunks never stored were known absent", absent)
	}
}

// A filter past its capacity stops answering rather than answer wrongly
// more and more often.
func TestIDFilterGivesUpWhenFull(t *testing.T) {
	f := &idFilter{words: make([]atomic.Uint64, 1), mask: 63, max: 8}
	f.start.Do(func() {}) // loaded already: no index to read
	f.ready.Store(true)
	var id ID
	for i := range 9 {
		id[0] = byte(i)
		f.add(id)
	}
	id[0] = 200
	if f.absent(id) {
		t.Fatal("a filter past its capacity still answers")
	}
}
