package timeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// DefaultCacheBytes is the default size of the decoded-chunk cache.
const DefaultCacheBytes = 256 << 20

// Options configure a Store.
type Options struct {
	DB         *pebble.DB // opened with Comparer
	Chunks     *blockstore.Store
	CacheBytes int64
	Now        func() time.Time // the clock; default time.Now
	Logger     *slog.Logger
	// Guard, if the DB was opened on one (see guard.go), says whether the
	// store still takes writes; Open points its pack sync at Chunks.
	Guard *Guard
}

// Store is the timeline of every volume in one data directory.
type Store struct {
	db     *pebble.DB
	chunks *blockstore.Store
	cache  *blockstore.Cache
	now    func() time.Time
	log    *slog.Logger
	guard  *Guard // nil: the store never stops taking writes
	// partBlocks is how many keys go in one batch of a large version.
	partBlocks int
	// rangeBlocks is the least run of whole blocks that zeroing records
	// as one range record (ranges.go).
	rangeBlocks int64
	// ranged: the store's format is FormatVersion, which allows range
	// records (keys.go).
	ranged atomic.Bool
	fold   folder // folding of blocks' runs of patches (fold.go)
	// synced is the mark below which every version's chunks are durable
	// (synced.go): saved is the one last saved.
	synced struct {
		sync.Mutex
		saved      int64
		stop, done chan struct{}
	}
	// Read-ahead and folding in flight (see readAhead, fold.go): Close
	// stops new ones and waits.
	background struct {
		sync.Mutex
		closing bool
		wg      sync.WaitGroup
	}

	mu struct {
		sync.Mutex
		last int64 // newest time handed out, ns
		// stamped holds the times Stamp handed out whose writes are not
		// recorded yet (see Stamp).
		stamped map[int64]struct{}
		nextID  uint64
		vols    map[uint64]*volState
		byName  map[string]uint64
		// held counts the open views of each volume's instants (prune.go).
		held map[uint64]map[int64]int
	}
}

// volState is the in-memory state of one volume.
type volState struct {
	// writeMu is held shared by clone writes (View.write) and alone by
	// imports and RemoveVolume.
	writeMu sync.RWMutex
	// blocks serialises clone writes of the same blocks; commitMu stamps
	// and commits their versions one at a time, in time order.
	blocks   blockLocks
	commitMu sync.Mutex
	// unsaved counts the clone writes committed since the volume's
	// metadata record was last written (see maxUnsavedVersions); under
	// commitMu.
	unsaved int
	// patches counts the patches of blocks that writes left (patch.go).
	patches patchRuns
	// pruneMu is held alone by Prune, and shared while a view or a clone
	// picks the instant it reads (prune.go).
	pruneMu sync.RWMutex
	meta    *Volume // replaced (never mutated) under Store.mu
	// removing is set, under Store.mu, while RemoveVolume deletes the
	// volume: no clone of it may be reserved meanwhile.
	removing bool
}

// Open loads the timeline and undoes versions that a crash left half
// written.
func Open(o Options) (*Store, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: o.DB, chunks: o.Chunks, now: o.Now, log: o.Logger, guard: o.Guard, partBlocks: defaultPartBlocks, rangeBlocks: defaultRangeBlocks}
	if o.Guard != nil {
		o.Guard.SetPackSync(o.Chunks.SyncPacks)
	}
	s.cache = blockstore.NewSlabCache(o.Chunks, o.CacheBytes)
	s.mu.vols = map[uint64]*volState{}
	s.mu.byName = map[string]uint64{}
	if err := s.checkFormat(); err != nil {
		return nil, err
	}
	if err := s.recoverPending(); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.checkUnsynced(); err != nil {
		return nil, err
	}
	if err := s.loadRanges(); err != nil {
		return nil, err
	}
	if err := s.findFolds(); err != nil {
		return nil, err
	}
	s.startSynced()
	return s, nil
}

func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(globalKey("format"))
	if errors.Is(err, pebble.ErrNotFound) {
		b := s.db.NewBatch()
		defer b.Close()
		b.Set(globalKey("format"), []byte(FormatVersion), nil)
		s.ranged.Store(true)
		return s.commit(b, pebble.Sync)
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	switch string(v) {
	case FormatVersion:
		s.ranged.Store(true)
	case formatNoRanges:
	default:
		return fmt.Errorf("timeline: data directory has format %q, this build reads %q and %q", v, FormatVersion, formatNoRanges)
	}
	return nil
}

func (s *Store) load() error {
	if v, closer, err := s.db.Get(globalKey("clock")); err == nil {
		s.mu.last = int64(binary.BigEndian.Uint64(v))
		closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	lo, hi := []byte{tagMeta}, []byte{tagMeta + 1}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := unmarshalVolume(it.Value())
		if err != nil {
			return err
		}
		s.mu.vols[v.ID] = &volState{meta: v}
		s.mu.byName[v.Name] = v.ID
		s.mu.nextID = max(s.mu.nextID, v.ID)
		s.mu.last = max(s.mu.last, v.Last)
	}
	if err := it.Error(); err != nil {
		return err
	}
	if v, closer, err := s.db.Get(globalKey("next-id")); err == nil {
		s.mu.nextID = max(s.mu.nextID, binary.BigEndian.Uint64(v))
		closer.Close()
	}
	for _, vs := range s.mu.vols {
		if err := s.rollForward(vs); err != nil {
			return err
		}
		s.mu.last = max(s.mu.last, vs.meta.Last)
	}
	return nil
}

// rollForward brings vs.meta, as its record was read, up to the newest
// version committed: clone writes commit their summary records and leave
// the metadata record behind (see maxUnsavedVersions). A summary is
// committed only in the batch that makes its version visible, so every
// one after Last belongs to a visible version; the parts of an import
// that never finished have none.
func (s *Store) rollForward(vs *volState) error {
	m := vs.meta
	_, hi := volumeBounds(tagTime, m.ID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: timeKey(m.ID, m.Last+1, 0), UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		_, t, part, ok := parseTimeKey(it.Key())
		if !ok {
			return fmt.Errorf("timeline: bad time key %x", it.Key())
		}
		if part != summaryPart {
			continue
		}
		sum, err := unmarshalSummary(it.Value())
		if err != nil {
			return err
		}
		if m.Versions == 0 {
			m.First = t
		}
		m.Last = t
		m.Versions++
		m.LogicalBytes += int64(sum.Bytes)
		m.StoredBytes += int64(sum.Stored)
		if size := int64(sum.Size); size != m.Size {
			m.Size = size
			m.Sizes = append(m.Sizes, SizeChange{T: t, Size: size})
		}
		vs.unsaved++
	}
	return it.Error()
}

// saveMeta writes the metadata records that clone writes left behind
// (see maxUnsavedVersions), so that the next Open has nothing to roll
// forward.
func (s *Store) saveMeta() error {
	if s.guard.Err() != nil {
		return nil // the next open rolls them forward
	}
	s.mu.Lock()
	vols := make([]*volState, 0, len(s.mu.vols))
	for _, vs := range s.mu.vols {
		vols = append(vols, vs)
	}
	s.mu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	var held []*volState
	defer func() {
		for _, vs := range held {
			vs.commitMu.Unlock()
			vs.writeMu.RUnlock()
		}
	}()
	// Each volume's writeMu, shared, keeps RemoveVolume from deleting it
	// before this batch commits (its record would come back); commitMu
	// keeps its clone writes out.
	for _, vs := range vols {
		vs.writeMu.RLock()
		vs.commitMu.Lock()
		held = append(held, vs)
		s.mu.Lock()
		m, live := vs.meta, s.mu.vols[vs.meta.ID] == vs
		s.mu.Unlock()
		if !live || vs.unsaved == 0 || m.Versions == 0 {
			continue
		}
		b.Set(metaKey(m.ID), m.clone().marshal(), nil)
	}
	if b.Empty() {
		return nil
	}
	s.mu.Lock()
	last := s.mu.last
	s.mu.Unlock()
	b.Set(globalKey("clock"), clockValue(last), nil)
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	for _, vs := range held {
		vs.unsaved = 0
	}
	return nil
}

// Close stops the background work and writes what it leaves behind (see
// StopBackground), and empties the cache of decoded chunks, whose memory
// the next store of the process reuses. The caller closes the DB and the
// chunk store.
func (s *Store) Close() error {
	err := s.StopBackground()
	s.cache.Close()
	return err
}

// StopBackground ends the store's work in the background (folding,
// read-ahead, the search for runs of patches) and waits for it. The first
// call then writes the metadata records that clone writes left behind
// (saveMeta) and notes in the index whether anything is left to fold (see
// findFolds). Close calls it; a caller that writes the index out before
// Close calls it first, so that these are written out too and leave no
// log of the index behind.
func (s *Store) StopBackground() error {
	s.background.Lock()
	first := !s.background.closing
	s.background.closing = true
	if first && s.synced.stop != nil {
		close(s.synced.stop)
	}
	s.background.Unlock()
	s.background.wg.Wait()
	if s.synced.done != nil {
		<-s.synced.done
	}
	if !first {
		return nil
	}
	s.markFolded()
	if err := s.saveMeta(); err != nil {
		return fmt.Errorf("timeline: save volume metadata: %w", err)
	}
	if s.guard.Err() == nil {
		if err := s.saveSynced(true); err != nil {
			return fmt.Errorf("timeline: save the synced mark: %w", err)
		}
	}
	return nil
}

// Now returns the store's clock reading.
func (s *Store) Now() time.Time { return s.now() }

// nextTimeLocked returns a time strictly later than any handed out, and
// not earlier than min.
func (s *Store) nextTimeLocked(min int64) int64 {
	t := max(s.now().UnixNano(), min, s.mu.last+1)
	s.mu.last = t
	return t
}

// Stamp hands out the time of a write that is recorded later, by
// WriteMany (Write.At): a time strictly later than any handed out
// before, so that the writes of a protected disk keep the times they
// arrived at even when they are recorded behind their acknowledgement.
// Until WriteMany records it or Unstamp gives it up, the synced mark
// (synced.go) stays before it: its chunks are not stored yet.
func (s *Store) Stamp() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.nextTimeLocked(0)
	if s.mu.stamped == nil {
		s.mu.stamped = make(map[int64]struct{})
	}
	s.mu.stamped[t] = struct{}{}
	return t
}

// Unstamp gives up times Stamp handed out whose writes will not be
// recorded.
func (s *Store) Unstamp(ts ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range ts {
		delete(s.mu.stamped, t)
	}
}

// settledLocked returns the newest time before which every time handed
// out belongs to a write that stored its chunks or will never be
// recorded: the newest handed out, or just before the oldest stamp whose
// write is still to be recorded.
func (s *Store) settledLocked() int64 {
	t := s.mu.last
	for st := range s.mu.stamped {
		t = min(t, st-1)
	}
	return t
}

// allocIDLocked reserves a volume id.
func (s *Store) allocIDLocked() uint64 {
	s.mu.nextID++
	return s.mu.nextID
}

func (s *Store) maxID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.nextID
}

func clockValue(t int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t)) }

// Volume returns the metadata of the named volume.
func (s *Store) Volume(name string) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.volumeLocked(name)
}

func (s *Store) volumeLocked(name string) (*Volume, error) {
	id, ok := s.mu.byName[name]
	if !ok || s.mu.vols[id].meta.Versions == 0 { // unknown, or still being created
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return s.mu.vols[id].meta, nil
}

// VolumeByID returns the metadata of volume id.
func (s *Store) VolumeByID(id uint64) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs, ok := s.mu.vols[id]
	if !ok {
		return nil, fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	return vs.meta, nil
}

// Volumes lists every volume, by name.
func (s *Store) Volumes() []*Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Volume, 0, len(s.mu.vols))
	for _, vs := range s.mu.vols {
		if vs.meta.Versions > 0 {
			out = append(out, vs.meta)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Store) state(id uint64) (*volState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs, ok := s.mu.vols[id]
	if !ok {
		return nil, fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	return vs, nil
}

// publish installs new metadata after its batch committed.
func (s *Store) publish(v *Volume) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs, ok := s.mu.vols[v.ID]
	if !ok {
		vs = &volState{}
		s.mu.vols[v.ID] = vs
	}
	vs.meta = v
	s.mu.byName[v.Name] = v.ID
}

// Flush makes every write so far durable. It fails once the store
// stopped taking writes.
func (s *Store) Flush() error {
	if err := s.guard.Err(); err != nil {
		return err
	}
	// On a Guard, the packs are synced before Pebble syncs its log (every
	// write acknowledged so far wrote its pack bytes before it committed),
	// so the log's sync below makes both durable.
	if s.guard == nil {
		if err := s.syncPacks(); err != nil {
			return err
		}
	}
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("timeline: sync: %w", err)
	}
	return s.guard.Err()
}

// Writable returns nil while the store takes writes, else why not: an
// error matching ErrUnwritable (and syscall.ENOSPC when the disk is
// full).
func (s *Store) Writable() error { return s.guard.Err() }

// commit commits b, unless the store stopped taking writes. A commit that
// Pebble could not make durable is reported through the Guard (Pebble
// itself returns success), so the Guard is asked again afterwards.
func (s *Store) commit(b *pebble.Batch, opt *pebble.WriteOptions) error {
	if err := s.guard.Err(); err != nil {
		return err
	}
	if err := b.Commit(opt); err != nil {
		return fmt.Errorf("timeline: commit: %w", err)
	}
	return s.guard.Err()
}

// syncPacks makes the pack bytes written so far durable. A failed sync
// may have lost pages that a later sync would not report, so it stops
// the store taking writes.
func (s *Store) syncPacks() error {
	err := s.chunks.SyncPacks()
	if err != nil && s.guard != nil {
		s.guard.Fail(err)
		return s.guard.Err()
	}
	return err
}

// RemoveVolume deletes a volume and its whole history. It refuses while
// clones depend on it, including clones still being created, and no
// clone of it can be started until it is done.
func (s *Store) RemoveVolume(name string) error {
	vs, err := s.beginRemove(name)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			s.mu.Lock()
			vs.removing = false
			s.mu.Unlock()
		}
	}()
	vs.writeMu.Lock()
	defer vs.writeMu.Unlock()
	s.mu.Lock()
	v := vs.meta
	s.mu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	for _, tag := range []byte{tagVersion, tagTime, tagPending, tagRange} {
		lo, hi := volumeBounds(tag, v.ID)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
	}
	b.Delete(metaKey(v.ID), nil)
	b.Delete(nameKey(v.Name), nil)
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.mu.vols, v.ID)
	delete(s.mu.byName, v.Name)
	s.mu.Unlock()
	done = true
	return nil
}

// beginRemove marks the named volume as being removed, after checking
// under s.mu that no clone, finished or reserved, depends on it.
func (s *Store) beginRemove(name string) (*volState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.volumeLocked(name)
	if err != nil {
		return nil, err
	}
	vs := s.mu.vols[v.ID]
	if vs.removing {
		return nil, fmt.Errorf("%w: %s is being removed", ErrInUse, name)
	}
	for _, o := range s.mu.vols {
		if o.meta.Parent == v.ID {
			return nil, fmt.Errorf("%w: clone %s depends on %s", ErrInUse, o.meta.Name, name)
		}
	}
	vs.removing = true
	return vs, nil
}
