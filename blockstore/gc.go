package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Collecting garbage. Collect removes the chunks that nothing references
// and gives their space back, while chunks are stored, deduplicated and
// read around it. It runs in five steps:
//
//  1. Start: under the store's lock, the active pack is sealed, the
//     watermark W (the start of the next pack) is taken and the
//     collection becomes active. A chunk stored from then on lies at or
//     after W and is never collected by this run.
//  2. Mark: the caller lists every chunk its records reference, as of a
//     Pebble snapshot taken after step 1; the sources of the slices
//     records among them are added.
//  3. Doom: the chunks indexed in the snapshot, before W and unmarked,
//     are the candidates. Under the store's lock, those that a writer
//     relied on since step 1 are spared: every chunk that Has reported as
//     stored (to a Txn, or to anybody), every chunk a live Txn stored or
//     relied on, and those of every Txn that ended since step 1 (Done
//     hands its sets over). The rest are doomed.
//  4. Sweep: their index entries and page fingerprints are deleted in one
//     synced batch. Until that batch commits, Has of a doomed chunk waits
//     for it and then reports it absent, so a writer stores such a chunk
//     again (at or after W, under a new entry the sweep cannot delete)
//     instead of relying on one that is going.
//  5. Compact: a pack before W (and before any live import's first byte)
//     whose live records fill less than the given share of it is
//     rewritten: its live records are appended to the active pack, their
//     entries moved to the copies in one synced batch after the copies are
//     synced, and the pack's file removed. A pack with nothing live is
//     removed outright. The handle of a removed pack stays open for a
//     minute (closed by a collection after that), so a read that found
//     the old location just before the move still reads the old bytes; a
//     read that fails on a location that moved looks the chunk up again
//     (see Get and readMany).
//
// A Txn therefore keeps the set of chunks it relied on (refs) next to
// the set it stored (added), until its references are committed
// (Committed: a collection that starts later sees them in its snapshot)
// or it ends. The caller must
// mark every reference it committed, and every Txn must end with Done or
// Discard: a Txn that never ends keeps its chunks alive.

// GCOptions tune Collect.
type GCOptions struct {
	// DryRun finds what would go and changes nothing.
	DryRun bool
	// RewriteBelow is the share of live bytes under which a pack is
	// rewritten (default 0.5).
	RewriteBelow float64
}

// GCResult says what Collect found and did.
type GCResult struct {
	Chunks          int64 // indexed when the collection started
	Referenced      int64 // of those, referenced
	Removed         int64 // index entries removed
	RemovedBytes    int64 // their records' bytes (a bundle's only once all of its members go)
	PacksRewritten  int
	PacksRemoved    int   // including the rewritten ones
	MovedBytes      int64 // live records copied out of rewritten packs
	FreedBytes      int64 // pack bytes given back to the filesystem, less the copies
	PackBytesBefore int64
	PackBytesAfter  int64
	Duration        time.Duration
}

// gcState is a running collection's share of the store's state, guarded
// by the store's lock.
type gcState struct {
	// touched holds the chunks relied on since the collection started.
	touched map[ID]bool
	// doomed holds the chunks being swept, and swept is closed once their
	// entries are gone.
	doomed map[ID]bool
	swept  chan struct{}
}

// ErrGCRunning is returned by Collect while another collection runs.
var ErrGCRunning = errors.New("a garbage collection, a verify or a replication is running")

// Collect removes the chunks that mark does not report as referenced.
// mark must call fn for every chunk referenced by the records in snap.
func (s *Store) Collect(ctx context.Context, mark func(snap *pebble.Snapshot, fn func(ID)) error, o GCOptions) (GCResult, error) {
	if !s.gcMu.TryLock() {
		return GCResult{}, ErrGCRunning
	}
	defer s.gcMu.Unlock()
	if o.RewriteBelow <= 0 {
		o.RewriteBelow = 0.5
	}
	start := time.Now()
	var res GCResult
	res.PackBytesBefore = s.packBytes()
	s.closeRetired()

	// 1. Start.
	s.mu.Lock()
	w := Position{s.mu.next, packHeaderSize}
	if s.mu.active != 0 {
		w = Position{s.mu.active, s.mu.size}
	}
	if !o.DryRun {
		// The active pack is sealed, so that its garbage can go too: the
		// next write starts a new one, at W.
		s.sealLocked(s.mu.active)
		s.mu.active = 0
		w = Position{s.mu.next, packHeaderSize}
		s.mu.gc = &gcState{touched: map[ID]bool{}, swept: make(chan struct{})}
	}
	s.mu.Unlock()
	defer s.endGC()

	// 2. Mark.
	snap := s.db.NewSnapshot()
	defer snap.Close()
	live := map[ID]bool{}
	if err := mark(snap, func(id ID) { live[id] = true }); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cands, bundles, err := s.markSources(snap, live, w, &res)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	// 3. Doom.
	doomed := s.doom(cands, o.DryRun)
	res.Removed = int64(len(doomed))
	res.RemovedBytes = removedBytes(doomed, cands, bundles)
	if o.DryRun {
		res.Duration = time.Since(start)
		res.PackBytesAfter = res.PackBytesBefore
		return res, nil
	}

	// 4. Sweep.
	if err := s.sweep(snap, doomed); err != nil {
		return res, err
	}

	// 5. Compact.
	if err := s.compact(ctx, w, o.RewriteBelow, &res); err != nil {
		return res, err
	}
	res.PackBytesAfter = s.packBytes()
	res.Duration = time.Since(start)
	return res, nil
}

// markSources marks the sources of the referenced slices records in
// snap, and returns the unreferenced chunks indexed before w with their
// locations, and how many members each bundle record has.
func (s *Store) markSources(snap *pebble.Snapshot, live map[ID]bool, w Position, res *GCResult) (map[ID]location, map[recordKey]int, error) {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	unmarked := map[ID]location{}
	bundles := map[recordKey]int{}
	var slices []ID
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+len(ID{}) {
			continue
		}
		id := ID(k[1:])
		loc, err := unmarshalLocation(it.Value())
		if err != nil {
			return nil, nil, err
		}
		res.Chunks++
		if loc.codec == CodecBundle {
			bundles[recordKey{loc.pack, loc.offset}]++
		}
		if !live[id] {
			if (Position{loc.pack, loc.offset}).before(w) {
				unmarked[id] = loc
			}
			continue
		}
		if loc.codec == CodecSlices {
			slices = append(slices, id)
		}
	}
	if err := it.Error(); err != nil {
		return nil, nil, err
	}
	for _, id := range slices {
		srcs, err := s.sourcesOf(snap, id)
		if err != nil {
			// A record that cannot be read references nothing we can
			// name; its sources stay unless nothing else keeps them. Say
			// so, and keep everything: collecting around damage is for
			// verify to decide.
			return nil, nil, fmt.Errorf("blockstore: gc: read slices record %s: %w", id, err)
		}
		for _, src := range srcs {
			live[src] = true
			delete(unmarked, src)
		}
	}
	res.Referenced = res.Chunks - int64(len(unmarked))
	return unmarked, bundles, nil
}

// sourcesOf returns the chunks slices record id references.
func (s *Store) sourcesOf(snap *pebble.Snapshot, id ID) ([]ID, error) {
	v, closer, err := snap.Get(indexKey(id))
	if err != nil {
		return nil, err
	}
	loc, err := unmarshalLocation(v)
	closer.Close()
	if err != nil {
		return nil, err
	}
	return s.slicesSourcesAt(id, loc)
}

// parseSliceSources returns the chunks a slices payload references,
// without decoding its literal bytes.
func parseSliceSources(payload []byte) ([]ID, error) {
	if len(payload) < 4 || payload[0] < 1 || payload[0] > 2 {
		return nil, fmt.Errorf("%w: slices record: unknown version", ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(payload[2:]))
	p := payload[4:]
	if payload[0] == 2 {
		if len(p) < 4 {
			return nil, fmt.Errorf("%w: slices record: truncated header", ErrCorrupt)
		}
		p = p[4:]
	}
	var out []ID
	for range n {
		if len(p) < 5 {
			return nil, fmt.Errorf("%w: slices record: truncated segment", ErrCorrupt)
		}
		ref := p[4] == 1
		p = p[5:]
		if ref {
			if len(p) < 36 {
				return nil, fmt.Errorf("%w: slices record: truncated segment", ErrCorrupt)
			}
			out = append(out, ID(p[4:36]))
			p = p[36:]
		}
	}
	return out, nil
}

// doom spares the candidates that writers relied on since the collection
// started and, unless dry, makes Has treat the rest as going.
func (s *Store) doom(cands map[ID]location, dry bool) map[ID]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	spared := func(id ID) bool { return false }
	if g := s.mu.gc; g != nil {
		for t := range s.mu.txns {
			t.handOverLocked(g)
		}
		spared = func(id ID) bool { return g.touched[id] }
	}
	doomed := make(map[ID]bool, len(cands))
	for id := range cands {
		if !spared(id) {
			doomed[id] = true
		}
	}
	if !dry {
		s.mu.gc.doomed = doomed
	}
	return doomed
}

// removedBytes is the record bytes freed by removing doomed: a record
// counts once, and a bundle only when all of its members go.
func removedBytes(doomed map[ID]bool, cands map[ID]location, bundles map[recordKey]int) int64 {
	going := map[recordKey]int{}
	var n int64
	for id := range doomed {
		loc := cands[id]
		k := recordKey{loc.pack, loc.offset}
		going[k]++
		if loc.codec != CodecBundle || going[k] == bundles[k] {
			n += loc.size()
		}
	}
	return n
}

// sweep deletes the index entries and page fingerprints of doomed chunks
// in one synced batch, then lets the writers waiting on them go on.
func (s *Store) sweep(snap *pebble.Snapshot, doomed map[ID]bool) error {
	if err := s.deleteEntries(snap, doomed); err != nil {
		return fmt.Errorf("blockstore: gc: delete index entries: %w", err)
	}
	s.mu.Lock()
	s.sweepGen.Add(1)
	close(s.mu.gc.swept)
	s.mu.gc.doomed = nil
	s.mu.Unlock()
	return nil
}

// endGC ends the collection: Has and Txns stop reporting to it.
func (s *Store) endGC() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.mu.gc; g != nil {
		if g.doomed != nil { // failed before the sweep committed
			close(g.swept)
		}
		s.mu.gc = nil
	}
}

// waitSwept is called by has, with the store's lock held, for a chunk
// that is being swept: it waits until the sweep committed.
func (s *Store) waitSweptLocked(g *gcState) {
	ch := g.swept
	s.mu.Unlock()
	<-ch
	s.mu.Lock()
}

// useLocked records that t (or an unknown caller, when nil) relies on
// chunk id. The store's lock is held.
func (s *Store) useLocked(t *Txn, id ID) {
	if t != nil {
		t.refsMu.Lock()
		if t.refs == nil {
			t.refs = map[ID]bool{}
		}
		t.refs[id] = true
		t.refsMu.Unlock()
	}
	if g := s.mu.gc; g != nil {
		g.touched[id] = true
	}
}

// handOverLocked adds what t stored and relied on to g's touched set.
// The store's lock is held.
func (t *Txn) handOverLocked(g *gcState) {
	t.refsMu.Lock()
	for id := range t.refs {
		g.touched[id] = true
	}
	t.refsMu.Unlock()
	t.mu.Lock()
	for id := range t.mu.added {
		g.touched[id] = true
	}
	t.mu.Unlock()
}

// HoldGC keeps collections (and scrubs) from starting until the returned
// func is called, waiting for one that runs: a replication holds it while
// it copies the packs a snapshot of the index references, so that no pack
// goes meanwhile.
func (s *Store) HoldGC() (release func()) {
	s.gcMu.Lock()
	return s.gcMu.Unlock
}

// deleteEntries deletes the index entries of ids and the page
// fingerprints that name them (as r has them), in one synced batch, and
// forgets where they were.
func (s *Store) deleteEntries(r pebble.Reader, ids map[ID]bool) error {
	b := s.db.NewBatch()
	defer b.Close()
	for id := range ids {
		if err := b.Delete(indexKey(id), nil); err != nil {
			return err
		}
	}
	prefixes := make(map[[printIDLen]byte]bool, len(ids))
	for id := range ids {
		prefixes[[printIDLen]byte(id[:printIDLen])] = true
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{FingerprintPrefix}, UpperBound: []byte{FingerprintPrefix + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		var p [printIDLen]byte
		switch len(v) {
		case printIDLen + 2, len(ID{}) + 2:
			copy(p[:], v)
		default:
			continue
		}
		if prefixes[p] {
			if err := b.Delete(it.Key(), nil); err != nil {
				it.Close()
				return err
			}
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return err
	}
	list := make([]ID, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	s.locs.forget(list...)
	return nil
}

// ForgetLost deletes the index entries (and page fingerprints) of chunks
// whose records a crash lost: written and indexed without a sync, their
// index entries reached the disk and their bytes did not (the timeline
// finds them when it opens, see timeline.Store's check of the versions
// after its synced mark). No later write then counts on them as stored.
func (s *Store) ForgetLost(ids []ID) error {
	if len(ids) == 0 {
		return nil
	}
	set := make(map[ID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	if err := s.deleteEntries(s.db, set); err != nil {
		return fmt.Errorf("blockstore: forget lost chunks: %w", err)
	}
	return nil
}
