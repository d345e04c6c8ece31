package blockstore

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestSlabsReuseMemoryAcrossClasses(t *testing.T) {
	a := newSlabs(2 * slabSize)
	// Two slabs of 64 KiB slots: 64 slots, then nothing.
	var got []slot
	for {
		sl, ok := a.alloc(65536)
		if !ok {
			break
		}
		got = append(got, sl)
	}
	if len(got) != 2*slabSize/65536 {
		t.Fatalf("%d slots of 64 KiB from two 2 MiB slabs, want %d", len(got), 2*slabSize/65536)
	}
	seen := map[*byte]bool{}
	for _, sl := range got {
		b := sl.bytes(65536)
		if len(b) != 65536 || cap(b) != 65536 {
			t.Fatalf("slot bytes len %d cap %d", len(b), cap(b))
		}
		if seen[&b[0]] {
			t.Fatal("two slots share memory")
		}
		seen[&b[0]] = true
	}
	if _, ok := a.alloc(4096); ok {
		t.Fatal("a 4 KiB slot beyond the limit")
	}
	// Free one slab's worth: that slab goes back empty and may take
	// another class.
	first := got[0].s
	for _, sl := range got {
		if sl.s == first {
			a.free(sl)
		}
	}
	small, ok := a.alloc(5000) // the 8 KiB class
	if !ok || small.size() != 8192 || small.s != first {
		t.Fatalf("an emptied slab was not reused for another class: ok=%v size=%d", ok, small.size())
	}
	if _, ok := a.alloc(slabSize + 1); ok {
		t.Fatal("a slot larger than a slab")
	}
	if len(a.all) != 2 {
		t.Fatalf("made %d slabs under a limit of 2", len(a.all))
	}
}

// countingStore serves chunks from a map and counts reads.
type countingStore struct {
	chunks map[ID][]byte
	reads  atomic.Int64
}

func (s *countingStore) Get(id ID) ([]byte, error) {
	s.reads.Add(1)
	d, ok := s.chunks[id]
	if !ok {
		return nil, ErrNotFound
	}
	return bytes.Clone(d), nil
}

// ReadMany reads like Store.ReadMany: in place where into offers a buffer
// of the chunk's length, else from a scratch buffer it then overwrites.
func (s *countingStore) ReadMany(ids []ID, into [][]byte, fn func(int, []byte)) error {
	for i, id := range ids {
		s.reads.Add(1)
		d, ok := s.chunks[id]
		if !ok {
			return ErrNotFound
		}
		if into != nil && len(into[i]) == len(d) {
			copy(into[i], d)
			fn(i, into[i])
			continue
		}
		scratch := bytes.Clone(d)
		fn(i, scratch)
		for j := range scratch {
			scratch[j] = 0xee // what a recycled buffer holds next
		}
	}
	return nil
}

func testChunks(n, size int) (map[ID][]byte, []ID) {
	m := map[ID][]byte{}
	var ids []ID
	for i := 0; i < n; i++ {
		d := bytes.Repeat([]byte(fmt.Sprintf("chunk %d.", i)), size/8+1)[:size]
		id := Sum(d)
		m[id] = d
		ids = append(ids, id)
	}
	return m, ids
}

func TestSlabCacheKeepsCopiesAndSkipsInPlaceReads(t *testing.T) {
	chunks, ids := testChunks(8, 65536)
	st := &countingStore{chunks: chunks}
	c := NewSlabCache(st, 8<<20)
	read := func(id ID, into []byte) []byte {
		var got []byte
		var in [][]byte
		if into != nil {
			in = [][]byte{into}
		}
		if err := c.ReadMany([]ID{id}, in, func(_ int, d []byte) { got = bytes.Clone(d) }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	// A whole block read in place is not kept: the next read goes down.
	buf := make([]byte, 65536)
	if got := read(ids[0], buf); !bytes.Equal(got, chunks[ids[0]]) {
		t.Fatal("in-place read returned other bytes")
	}
	read(ids[0], buf)
	if n := st.reads.Load(); n != 2 {
		t.Fatalf("%d reads below for two in-place reads, want 2", n)
	}
	// A chunk read through scratch is kept as a copy: the scratch buffer
	// is overwritten after the callback, the cache still serves the chunk.
	st.reads.Store(0)
	for i := 0; i < 3; i++ {
		if got := read(ids[1], nil); !bytes.Equal(got, chunks[ids[1]]) {
			t.Fatalf("read %d returned other bytes", i)
		}
	}
	if n := st.reads.Load(); n != 1 {
		t.Fatalf("%d reads below for three reads of a kept chunk, want 1", n)
	}
	// Get returns a copy the caller may change.
	g, err := c.Get(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	g[0] ^= 0xff
	if got := read(ids[1], nil); !bytes.Equal(got, chunks[ids[1]]) {
		t.Fatal("changing what Get returned changed the cache")
	}
}

func TestSlabCacheEvictionWaitsForReaders(t *testing.T) {
	chunks, ids := testChunks(200, 65536)
	st := &countingStore{chunks: chunks}
	c := NewSlabCache(st, slabSize) // 32 entries of 64 KiB
	if _, err := c.GetMany(ids[:1]); err != nil {
		t.Fatal(err)
	}
	// While a callback holds the first chunk, fill the cache many times
	// over: its slot must not be handed out until the callback returns.
	err := c.ReadMany(ids[:1], nil, func(_ int, d []byte) {
		if _, err := c.GetMany(ids[1:]); err != nil {
			t.Error(err)
		}
		if !bytes.Equal(d, chunks[ids[0]]) {
			t.Error("an entry's memory was reused while a reader held it")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Its slot is free again now: the cache can still fill and serve.
	got, err := c.GetMany(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if !bytes.Equal(got[i], chunks[id]) {
			t.Fatalf("chunk %d differs", i)
		}
	}
}

func TestSlabCacheParallelReaders(t *testing.T) {
	chunks, ids := testChunks(64, 65536)
	small, smallIDs := testChunks(64, 4096)
	for id, d := range small {
		chunks[id] = d
	}
	ids = append(ids, smallIDs...)
	st := &countingStore{chunks: chunks}
	c := NewSlabCache(st, 2*slabSize) // far less than the chunks: constant eviction
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				pick := []ID{ids[(i*7+g)%len(ids)], ids[(i*13+g*5)%len(ids)]}
				err := c.ReadMany(pick, nil, func(k int, d []byte) {
					if !bytes.Equal(d, chunks[pick[k]]) {
						t.Errorf("goroutine %d read %d: wrong bytes", g, i)
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.size > c.capacity {
		t.Fatalf("cache holds %d bytes, capacity %d", c.mu.size, c.capacity)
	}
}

func TestCacheScanKeepsNothing(t *testing.T) {
	chunks, ids := testChunks(2, 65536)
	st := &countingStore{chunks: chunks}
	c := NewSlabCache(st, 8<<20)
	scan := func(id ID) {
		t.Helper()
		var got []byte
		if err := c.ReadManyScan([]ID{id}, nil, func(_ int, d []byte) { got = bytes.Clone(d) }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, chunks[id]) {
			t.Fatal("a scan read other bytes")
		}
	}
	scan(ids[0])
	scan(ids[0])
	if n := st.reads.Load(); n != 2 || c.Has(ids[0]) {
		t.Fatalf("a scan kept what it read: %d reads below, cached %v", n, c.Has(ids[0]))
	}
	// What the cache holds serves scans too.
	if _, err := c.GetMany(ids[1:]); err != nil {
		t.Fatal(err)
	}
	st.reads.Store(0)
	scan(ids[1])
	if n := st.reads.Load(); n != 0 {
		t.Fatalf("a scan of a cached chunk read below %d times", n)
	}
}

// Close gives a slab cache's memory back to the process, but not while a
// callback holds an entry; the cache serves correct bytes after it.
func TestSlabCacheClose(t *testing.T) {
	chunks, ids := testChunks(8, 65536)
	st := &countingStore{chunks: chunks}
	c := NewSlabCache(st, 4*slabSize)
	if _, err := c.GetMany(ids); err != nil {
		t.Fatal(err)
	}
	err := c.ReadMany(ids[:1], nil, func(_ int, d []byte) {
		c.Close() // held: nothing is given back
		if !bytes.Equal(d, chunks[ids[0]]) {
			t.Error("Close took the memory of an entry a reader held")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Has(ids[0]) || len(c.mu.slabs.all) == 0 {
		t.Fatal("Close emptied a cache while a reader held an entry")
	}
	c.Close()
	if c.Has(ids[0]) || len(c.mu.slabs.all) != 0 || c.mu.size != 0 {
		t.Fatal("Close kept entries or slabs")
	}
	st.reads.Store(0)
	for range 2 {
		got, err := c.GetMany(ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if !bytes.Equal(got[i], chunks[id]) {
				t.Fatalf("chunk %d differs after Close", i)
			}
		}
	}
	if n := st.reads.Load(); n != int64(len(ids)) {
		t.Fatalf("%d reads below after Close, want %d (one per chunk)", n, len(ids))
	}
}
