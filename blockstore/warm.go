package blockstore

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// WarmLocations loads the chunk index into the store's cache of locations
// (see locCache) in the background, as far as half of that cache holds,
// and returns at once; Close stops it. The daemon calls it when it
// starts: one pass over the index in key order costs a fraction of a
// microsecond an entry, while the lookups of a first read of a disk, one
// Pebble Get per chunk at 8-14 µs, were a tenth of the daemon's CPU on a
// cold sequential read. Backup tools load their whole index at the start
// of every run for the same reason; this one loads what fits.
//
// An index of which less than half fits (a store of a million chunks,
// such as a clone after a million 4 KiB writes) is not loaded: the pass
// would load chunks in the order of their digests, that is at random,
// so most reads would miss what it loaded, and after a million clone
// writes it cost a cold copy of a volume 0.2 s of CPU for a tenth of its
// lookups.
//
// What it loads is as safe as any remembered location: a chunk stored
// again meanwhile at a new place (see Has) leaves a stale entry, which
// costs a failed read and a lookup, never wrong bytes (see readMany).
func (s *Store) WarmLocations() {
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	if s.warmStop != nil {
		return
	}
	lo, hi := []byte{IndexPrefix}, []byte{IndexPrefix + 1}
	if est, err := s.db.EstimateDiskUsage(lo, hi); err == nil && est/filterBytesPerEntry > uint64(locCacheEntries) {
		s.log.Debug("blockstore: chunk index too large to load into memory", "bytes", est)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.warmStop, s.warmDone = cancel, done
	go func() {
		defer close(done)
		n, err := s.warmLocations(ctx)
		if err != nil {
			s.log.Warn("blockstore: loading the chunk index into memory stopped", "err", err)
			return
		}
		s.log.Debug("blockstore: chunk index loaded into memory", "chunks", n)
	}()
}

// stopWarming stops WarmLocations and waits for it.
func (s *Store) stopWarming() {
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	if s.warmStop != nil {
		s.warmStop()
		<-s.warmDone
	}
}

// warmLocations fills the cache of locations from the index until it is
// half full or ctx is done, and returns how many entries it added.
func (s *Store) warmLocations(ctx context.Context) (int, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok && ctx.Err() == nil; ok = it.Next() {
		k := it.Key()
		if len(k) != 1+len(ID{}) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return n, err
		}
		loc, err := unmarshalLocation(v)
		if err != nil {
			continue // damage: a read of the chunk reports it
		}
		added, full := s.locs.fill(ID(k[1:]), loc)
		if full {
			break
		}
		if added {
			n++
		}
	}
	return n, it.Error()
}
