package blockstore

import (
	"context"
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// idFilter is a Bloom filter of the IDs in the chunk index, in memory, so
// that storing a new chunk does not ask Pebble whether it exists: a
// lookup of a key that is absent visits every level's tables, about 30 µs
// a 4 KiB clone write (a seventh of its CPU) while writes keep Pebble's
// first level full of fresh tables. Chunk IDs are BLAKE3 digests, so
// their bytes serve as the filter's hashes.
//
// It only ever answers "absent for certain": until the index has been
// loaded into it, and once it holds more
// IDs than its size serves well, it answers nothing and Has asks Pebble.
// Every ID that a Txn stores is added before its index entry can be
// committed, so no ID in the index is ever missing from a ready filter;
// an ID whose entry was never committed, or was removed, only costs a
// lookup.
//
// The index is loaded in the background from the first question, not
// from Open: only writers ask, and a daemon that starts to serve reads
// (a cold copy of an instant) would otherwise read the whole chunk index
// beside them, 150 MB of tables after a million clone writes, which
// slowed such a copy by a third.
type idFilter struct {
	words []atomic.Uint64
	mask  uint64 // of a bit number
	max   int64  // IDs past which it gives up
	n     atomic.Int64
	ready atomic.Bool

	db    *pebble.DB
	ctx   context.Context
	start sync.Once
	stop  func()
	done  chan struct{}
}

const (
	// filterBitsPerID is the filter's size for each ID the index held at
	// Open, and twice that room for IDs stored after: 16 bits and three
	// probes miss about 0.2% of absent IDs, 8 bits about 3%.
	filterBitsPerID = 16
	minFilterBits   = 1 << 25 // 4 MiB: 2 million IDs
	filterProbes    = 3
	// filterBytesPerEntry estimates an index entry's share of the
	// tables, to size the filter before loading it.
	filterBytesPerEntry = 48
)

// newIDFilter sizes a filter for the index that db holds; the first
// question starts loading it (begin).
func newIDFilter(db *pebble.DB) *idFilter {
	lo, hi := []byte{IndexPrefix}, []byte{IndexPrefix + 1}
	est, _ := db.EstimateDiskUsage(lo, hi)
	want := max(uint64(minFilterBits), 2*filterBitsPerID*est/filterBytesPerEntry)
	nbits := uint64(1) << bits.Len64(want-1)
	f := &idFilter{words: make([]atomic.Uint64, nbits/64), mask: nbits - 1, max: int64(nbits / 8)}
	f.db, f.done = db, make(chan struct{})
	f.ctx, f.stop = context.WithCancel(context.Background())
	return f
}

// begin starts loading the index in the background, once.
func (f *idFilter) begin() {
	f.start.Do(func() {
		go func() {
			defer close(f.done)
			if f.load(f.ctx, f.db) == nil && f.n.Load() <= f.max {
				f.ready.Store(true)
			}
		}()
	})
}

// load adds every ID of the index.
func (f *idFilter) load(ctx context.Context, db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if k := it.Key(); len(k) == 1+len(ID{}) {
			f.add(ID(k[1:]))
		}
	}
	return it.Error()
}

func (f *idFilter) probe(id ID, i int) (int, uint64) {
	b := binary.LittleEndian.Uint64(id[8*i:]) & f.mask
	return int(b / 64), 1 << (b % 64)
}

// add adds id. Past the filter's capacity it stops answering.
func (f *idFilter) add(id ID) {
	for i := range filterProbes {
		w, bit := f.probe(id, i)
		f.words[w].Or(bit)
	}
	if f.n.Add(1) > f.max {
		f.ready.Store(false)
	}
}

// absent reports whether id is in the index for certain not.
func (f *idFilter) absent(id ID) bool {
	if !f.ready.Load() {
		f.begin()
		return false
	}
	for i := range filterProbes {
		w, bit := f.probe(id, i)
		if f.words[w].Load()&bit == 0 {
			return true
		}
	}
	return false
}

// close stops the loading and waits for it.
func (f *idFilter) close() {
	f.stop()
	f.start.Do(func() { close(f.done) }) // never begun: nothing to wait for
	<-f.done
}
