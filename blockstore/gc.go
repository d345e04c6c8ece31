package blockstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
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

// errDamagedPack: a pack to rewrite holds a live record that neither
// verifies nor can be rebuilt.
var errDamagedPack = fmt.Errorf("%w: a live record cannot be read", ErrCorrupt)

// ErrGCRunning is returned by Collect while another collection runs.
var ErrGCRunning = errors.New("a garbage collection or a verify is running")

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
	f, err := s.file(loc.pack)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, loc.size())
	if n, err := f.ReadAt(buf, loc.offset); n != len(buf) {
		return nil, fmt.Errorf("%w: pack %d truncated at %d: %v", ErrCorrupt, loc.pack, loc.offset, err)
	}
	if err := checkRecord(id, loc, buf[:recordHeaderSize], buf[recordHeaderSize:]); err != nil {
		return nil, err
	}
	return parseSliceSources(buf[recordHeaderSize:])
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
	b := s.db.NewBatch()
	defer b.Close()
	for id := range doomed {
		if err := b.Delete(indexKey(id), nil); err != nil {
			return err
		}
	}
	prefixes := make(map[[printIDLen]byte]bool, len(doomed))
	for id := range doomed {
		prefixes[[printIDLen]byte(id[:printIDLen])] = true
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{FingerprintPrefix}, UpperBound: []byte{FingerprintPrefix + 1}})
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
		return fmt.Errorf("blockstore: gc: delete index entries: %w", err)
	}
	ids := make([]ID, 0, len(doomed))
	for id := range doomed {
		ids = append(ids, id)
	}
	s.locs.forget(ids...)
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

// packRecord is a live record of a pack being rewritten.
type packRecord struct {
	off  int64
	size int64
	ids  []ID
	locs []location
}

// compact rewrites or removes the packs before w whose live records fill
// less than below of them.
func (s *Store) compact(ctx context.Context, w Position, below float64, res *GCResult) error {
	// Packs a live import may still cut back are left alone.
	s.mu.Lock()
	limit := w.Pack
	for t := range s.mu.live {
		if t.started && t.start.Pack < limit {
			limit = t.start.Pack
		}
	}
	sizes := map[uint32]int64{}
	for n, end := range s.mu.ends {
		if n < limit && end > packHeaderSize {
			sizes[n] = end
		}
	}
	retired := map[uint32]bool{}
	for _, r := range s.mu.retired {
		retired[r.n] = true
	}
	s.mu.Unlock()
	s.sealedSizes(limit, sizes)
	for n := range retired {
		delete(sizes, n) // removed already, its handle kept open
	}
	if len(sizes) == 0 {
		return nil
	}
	records := map[uint32]map[int64]*packRecord{}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+len(ID{}) {
			continue
		}
		loc, err := unmarshalLocation(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if _, ok := sizes[loc.pack]; !ok {
			continue
		}
		m := records[loc.pack]
		if m == nil {
			m = map[int64]*packRecord{}
			records[loc.pack] = m
		}
		r := m[loc.offset]
		if r == nil {
			r = &packRecord{off: loc.offset, size: loc.size()}
			m[loc.offset] = r
		}
		r.ids = append(r.ids, ID(k[1:]))
		r.locs = append(r.locs, loc)
	}
	if err := it.Close(); err != nil {
		return err
	}
	packs := make([]uint32, 0, len(sizes))
	for n := range sizes {
		packs = append(packs, n)
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i] < packs[j] })
	for _, n := range packs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var liveBytes int64
		for _, r := range records[n] {
			liveBytes += r.size
		}
		size := sizes[n]
		if float64(liveBytes) >= below*float64(size-packHeaderSize) {
			continue
		}
		moved, err := s.rewritePack(n, records[n])
		if errors.Is(err, errDamagedPack) {
			s.log.Warn("gc leaves a pack with damaged records as it is; rewind verify names what they touch", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		if len(records[n]) > 0 {
			res.PacksRewritten++
		}
		res.PacksRemoved++
		res.MovedBytes += moved
		res.FreedBytes += size - moved
	}
	return nil
}

// sealedSizes adds to sizes the packs before limit that this process
// wrote and sealed, which have no recorded end.
func (s *Store) sealedSizes(limit uint32, sizes map[uint32]int64) {
	s.mu.Lock()
	var own []uint32
	for n := range s.mu.files {
		if _, ok := s.mu.ends[n]; !ok && n < limit && n != s.mu.active {
			own = append(own, n)
		}
	}
	s.mu.Unlock()
	for _, n := range own {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(n))); err == nil && fi.Size() > packHeaderSize {
			sizes[n] = fi.Size()
		}
	}
}

// rewritePack copies the live records of pack n to the active pack,
// points their entries at the copies, and removes the pack. It returns
// the bytes copied.
func (s *Store) rewritePack(n uint32, recs map[int64]*packRecord) (int64, error) {
	f, err := s.file(n)
	if err != nil {
		return 0, err
	}
	offs := make([]int64, 0, len(recs))
	for off := range recs {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	b := s.db.NewBatch()
	defer b.Close()
	var moved []ID
	var copied int64
	r := newRun()
	defer func() { r.release() }()
	type placed struct {
		rec *packRecord
		at  int64
	}
	var inRun []placed
	flush := func() error {
		if len(inRun) == 0 {
			return nil
		}
		pack, off, err := s.write(r, nil)
		if err != nil {
			return err
		}
		for _, p := range inRun {
			for k, id := range p.rec.ids {
				loc := p.rec.locs[k]
				loc.pack, loc.offset = pack, off+p.at
				if err := b.Set(indexKey(id), loc.marshal(), nil); err != nil {
					return err
				}
				moved = append(moved, id)
			}
		}
		copied += r.size
		r.release()
		r = newRun()
		inRun = inRun[:0]
		return nil
	}
	buf := make([]byte, 0, 1<<20)
	var h recordHeader
	whole := func(off int64) bool {
		if m, _ := f.ReadAt(buf, off); m != len(buf) || h.unmarshal(buf) != nil {
			return false
		}
		payload := buf[recordHeaderSize:]
		return int64(len(payload)) == int64(h.payloadLen) && crc32.Update(recordCRC(buf[:recordHeaderSize]), castagnoli, payload) == h.crc
	}
	for _, off := range offs {
		rec := recs[off]
		buf = append(buf[:0], make([]byte, rec.size)...)
		if !whole(off) {
			// Rebuilt from parity if it can be; damage is never copied as
			// if it were good: the pack stays as it is, for verify.
			if ok, _ := s.repairRecord(n, off, rec.size); !ok || !whole(off) {
				return 0, fmt.Errorf("%w: pack %d at %d", errDamagedPack, n, off)
			}
		}
		payload := buf[recordHeaderSize:]
		if r.size+rec.size > runBufferBytes && len(inRun) > 0 {
			if err := flush(); err != nil {
				return 0, err
			}
		}
		at, _ := r.add(h.id, int(h.decodedLen), payload, h.codec, false)
		inRun = append(inRun, placed{rec, at})
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if len(moved) > 0 {
		if err := s.SyncPacks(); err != nil {
			return 0, err
		}
		if err := s.db.Apply(b, pebble.Sync); err != nil {
			return 0, fmt.Errorf("blockstore: gc: move index entries: %w", err)
		}
		s.locs.forget(moved...)
	}
	return copied, s.retirePack(n)
}

// retirePack removes pack n's file; its handle stays open for the reads
// under way until the next collection (closeRetired).
func (s *Store) retirePack(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.files[n]; !ok {
		f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
		if err == nil {
			s.mu.files[n] = f
		}
	}
	if err := s.fs.Remove(s.fs.PathJoin(s.dir, packName(n))); err != nil {
		return fmt.Errorf("blockstore: gc: remove pack %d: %w", n, err)
	}
	delete(s.mu.dirty, n)
	s.dropParityLocked(n)
	s.mu.retired = append(s.mu.retired, retiredPack{n, time.Now()})
	return syncDir(s.fs, s.dir)
}

// retiredPack is a removed pack whose handle stays open for the reads
// that found its records before they moved.
type retiredPack struct {
	n     uint32
	since time.Time
}

// retiredGrace is how long a removed pack's handle stays open.
const retiredGrace = time.Minute

// closeRetired closes the handles of the packs removed more than
// retiredGrace ago.
func (s *Store) closeRetired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.mu.retired[:0]
	for _, r := range s.mu.retired {
		if time.Since(r.since) < retiredGrace {
			keep = append(keep, r)
			continue
		}
		if f, ok := s.mu.files[r.n]; ok {
			f.Close()
			delete(s.mu.files, r.n)
		}
		s.mu.ends[r.n] = 0
	}
	s.mu.retired = keep
}

// packBytes is the size of the pack files on disk.
func (s *Store) packBytes() int64 {
	packs, err := s.listPacks()
	if err != nil {
		return 0
	}
	var n int64
	for _, p := range packs {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(p))); err == nil {
			n += fi.Size()
		}
	}
	return n
}
