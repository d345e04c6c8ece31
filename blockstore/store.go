package blockstore

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zeebo/blake3"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("blockstore: chunk not found")
	ErrCorrupt  = errors.New("blockstore: chunk is corrupt")
)

// ID is a chunk's BLAKE3-256 digest.
type ID [32]byte

// Sum returns the ID of data.
func Sum(data []byte) ID { return ID(blake3.Sum256(data)) }

func (id ID) String() string { return fmt.Sprintf("%x", id[:8]) }

// DefaultPackSize is the size at which a pack is closed and a new one begun.
const DefaultPackSize = 64 << 20

// Options configure a Store.
type Options struct {
	FS       vfs.FS // default vfs.Default
	Dir      string // the packs directory
	DB       *pebble.DB
	Codec    Codec // CodecZstd, CodecS2 or CodecRaw; see Compression
	PackSize int64 // default DefaultPackSize
	Logger   *slog.Logger
	// NoParity writes packs without parity (see paritystore.go), for
	// measuring what parity costs, and for tests of damage it would
	// otherwise repair.
	NoParity bool
	// SealIdle, when set, seals the active pack once no write came for
	// that long: for packs kept in an object store (see remote.Packs),
	// whose local copies go once sealed.
	SealIdle time.Duration
}

// Store is the chunk store.
type Store struct {
	fs       vfs.FS
	dir      string
	db       *pebble.DB
	codec    Codec
	packSize int64
	log      *slog.Logger
	codecs   *codecs
	small    smallTries // whether small chunks are worth compressing
	sources  *Cache     // recently read sources of slices records
	bundles  *bundleCache
	locs     *locCache // index entries read lately
	// indexLookups counts the chunks looked up in the index to be read.
	indexLookups atomic.Int64
	ids          *idFilter // the IDs in the index, for "not stored" at once
	noParity     bool

	idleStop chan struct{} // stops sealIdle; nil without it
	idleDone chan struct{}

	warmMu   sync.Mutex // guards the two below (see WarmLocations)
	warmStop func()
	warmDone chan struct{}

	seals  sync.WaitGroup // packs being sealed into an object store (sealLocked)
	syncMu sync.Mutex     // serialises SyncPacks so a caller never returns before its data is synced
	gcMu   sync.Mutex     // held by the running collection (gc.go)
	// sweepGen counts the sweeps committed: a lookup that spans one
	// looks again (see has).
	sweepGen atomic.Uint64
	mu       struct {
		sync.Mutex
		files  map[uint32]vfs.File
		active uint32 // 0 until the first write
		next   uint32 // the number of the next pack to start
		size   int64  // of the active pack, including reserved space
		dirty  map[uint32]bool
		// ends holds the size of each pack written before this Open, or
		// cut back since (see reclaim.go).
		ends map[uint32]int64
		// live holds the discardable Txns not yet done; writes counts
		// the writes to packs (see Txn.Discard).
		live   map[*Txn]bool
		writes uint64
		// txns holds every Txn not yet done, gc the running collection,
		// retired the packs it removed whose handles stay open (gc.go).
		txns    map[*Txn]bool
		gc      *gcState
		retired []retiredPack
		// inflight counts the writes reserved in each pack and not yet
		// landed; landed is signalled as they land (see sealLocked).
		inflight map[uint32]int
		landed   *sync.Cond
	}
	par parityState
}

// Open opens the chunk store in o.Dir, creating it if needed.
func Open(o Options) (*Store, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.PackSize <= 0 {
		o.PackSize = DefaultPackSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cs, err := newCodecs()
	if err != nil {
		return nil, err
	}
	s := &Store{fs: o.FS, dir: o.Dir, db: o.DB, codec: o.Codec, packSize: o.PackSize, log: o.Logger, codecs: cs, noParity: o.NoParity}
	s.sources = NewSlabCache(wholeChunks{s}, maxSourceCache)
	s.bundles = newBundleCache(maxDecodedBundles)
	s.locs = newLocCache(locCacheEntries)
	s.mu.files = map[uint32]vfs.File{}
	s.mu.dirty = map[uint32]bool{}
	s.mu.ends = map[uint32]int64{}
	s.mu.live = map[*Txn]bool{}
	s.mu.txns = map[*Txn]bool{}
	s.mu.inflight = map[uint32]int{}
	s.par.idle = sync.NewCond(&s.par.mu)
	s.par.damaged = map[ID]location{}
	s.mu.landed = sync.NewCond(&s.mu)
	if err := o.FS.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("blockstore: create %s: %w", o.Dir, err)
	}
	// The packs directory's own entry must survive a crash.
	if err := syncDir(o.FS, o.FS.PathDir(o.Dir)); err != nil {
		return nil, err
	}
	packs, err := s.listPacks()
	if err != nil {
		return nil, err
	}
	removed := false
	for k, p := range packs {
		path := o.FS.PathJoin(o.Dir, packName(p))
		fi, err := o.FS.Stat(path)
		if err != nil {
			continue
		}
		// A pack without a record holds nothing to read (earlier builds
		// left one at every open). The newest is kept all the same: its
		// number must never be used again, or index entries whose bytes
		// were lost in it would point into the new pack's records.
		if fi.Size() <= packHeaderSize && k < len(packs)-1 {
			if err := o.FS.Remove(path); err != nil {
				return nil, fmt.Errorf("blockstore: remove empty pack: %w", err)
			}
			removed = true
			continue
		}
		s.mu.ends[p] = fi.Size()
	}
	if len(packs) > 0 {
		newest := packs[len(packs)-1]
		s.mu.next = newest + 1
		if err := s.checkTail(newest); err != nil {
			return nil, err
		}
	}
	if removed {
		if err := syncDir(o.FS, o.Dir); err != nil {
			return nil, err
		}
	}
	if s.mu.next == 0 {
		s.mu.next = 1
	}
	// The first write starts a fresh pack (reserve): the tail of the newest
	// one may hold a torn record from a crash, and appending after it would
	// only waste space. A store that is only read creates no file.
	s.ids = newIDFilter(s.db)
	if err := s.initParity(); err != nil {
		return nil, err
	}
	if !s.noParity {
		go s.queueMissingParity(packs)
	}
	if o.SealIdle > 0 {
		s.idleStop, s.idleDone = make(chan struct{}), make(chan struct{})
		go s.sealIdle(o.SealIdle)
	}
	return s, nil
}

// sealIdle seals the active pack once no write came for idle.
func (s *Store) sealIdle(idle time.Duration) {
	defer close(s.idleDone)
	t := time.NewTicker(idle / 2)
	defer t.Stop()
	var seen uint64
	for {
		select {
		case <-s.idleStop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.mu.active != 0 && s.mu.writes == seen && s.mu.inflight[s.mu.active] == 0 {
			s.sealLocked(s.mu.active)
			s.mu.active = 0 // the next write starts a new pack
		}
		seen = s.mu.writes
		s.mu.Unlock()
	}
}

func (s *Store) listPacks() ([]uint32, error) {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return nil, fmt.Errorf("blockstore: list %s: %w", s.dir, err)
	}
	var packs []uint32
	for _, n := range names {
		if num, ok := strings.CutSuffix(n, ".pack"); ok {
			if v, err := strconv.ParseUint(num, 10, 32); err == nil {
				packs = append(packs, uint32(v))
			}
		}
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i] < packs[j] })
	return packs, nil
}

// packEnd returns how far pack n holds bytes: its size when this store
// opened, or everything reserved in a pack this store wrote.
func (s *Store) packEnd(n uint32) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packEndLocked(n)
}

func (s *Store) packEndLocked(n uint32) int64 {
	if end, ok := s.mu.ends[n]; ok {
		return end
	}
	if n == s.mu.active {
		return s.mu.size
	}
	if _, ok := s.mu.files[n]; ok {
		return math.MaxInt64 // a pack this store wrote and closed
	}
	return 0
}

// startPackLocked creates pack n and makes it the active one.
func (s *Store) startPackLocked(n uint32) error {
	path := s.fs.PathJoin(s.dir, packName(n))
	f, err := s.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("blockstore: create pack: %w", err)
	}
	h := packHeader()
	if s.noParity {
		h[15] &^= packFlagParity
	}
	if _, err := f.WriteAt(h, 0); err != nil {
		f.Close()
		return fmt.Errorf("blockstore: write pack header: %w", err)
	}
	// The new file's directory entry must be durable before anything
	// indexes into it.
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("blockstore: sync pack: %w", err)
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		f.Close()
		return err
	}
	s.mu.files[n] = f
	s.sealLocked(s.mu.active)
	s.mu.active = n
	s.mu.next = n + 1
	s.mu.size = packHeaderSize
	return nil
}

// reserve claims n bytes in the active pack, starting a new pack when the
// active one is full.
func (s *Store) reserve(n int64, t *Txn) (uint32, int64, vfs.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.active == 0 || s.mu.size+n > s.packSize && s.mu.size > packHeaderSize {
		if err := s.startPackLocked(s.mu.next); err != nil {
			return 0, 0, nil, err
		}
	}
	off := s.mu.size
	s.mu.size += n
	s.mu.writes++
	s.mu.inflight[s.mu.active]++
	if t != nil {
		if !t.started {
			t.started, t.start, t.writesAtStart = true, Position{s.mu.active, off}, s.mu.writes-1
		}
		t.writes++
	}
	return s.mu.active, off, s.mu.files[s.mu.active], nil
}

func (s *Store) markDirty(pack uint32) {
	s.mu.Lock()
	s.mu.dirty[pack] = true
	s.mu.Unlock()
}

// SyncPacks makes every chunk written so far durable. Call it before a
// Pebble commit with Sync that points at those chunks.
func (s *Store) SyncPacks() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	packs := make([]uint32, 0, len(s.mu.dirty))
	files := make([]vfs.File, 0, len(s.mu.dirty))
	for p := range s.mu.dirty {
		if f, ok := s.mu.files[p]; ok { // not closed
			packs = append(packs, p)
			files = append(files, f)
		}
	}
	clear(s.mu.dirty)
	s.mu.Unlock()
	// The packs' writeback was started as they were written (startWriteback),
	// so syncing them side by side mostly waits for the device, once.
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.SyncData()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			s.mu.Lock()
			for _, p := range packs { // still not known durable
				s.mu.dirty[p] = true
			}
			s.mu.Unlock()
			return fmt.Errorf("blockstore: sync pack %d: %w", packs[i], err)
		}
	}
	return nil
}

// file returns the open handle of pack n, opening it if needed.
func (s *Store) file(n uint32) (vfs.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.mu.files[n]; ok {
		return f, nil
	}
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
	if err != nil {
		return nil, fmt.Errorf("%w: pack %d: %v", ErrCorrupt, n, err)
	}
	s.mu.files[n] = f
	return f, nil
}

// StopReadingIndex stops and waits for the goroutines that read the
// chunk index in the background (WarmLocations, the loading of the
// filter of IDs), so that the index's database can close. Chunks can
// still be stored and read after it; Has then asks the index.
func (s *Store) StopReadingIndex() {
	s.stopWarming()
	s.ids.close()
}

// Close closes the pack files (it does not sync them) and gives the
// buffers of decoded bundles back to the process.
func (s *Store) Close() error {
	if s.idleStop != nil {
		close(s.idleStop)
		<-s.idleDone
	}
	s.StopReadingIndex()
	s.closeParity()
	s.bundles.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for n, f := range s.mu.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
		delete(s.mu.files, n)
	}
	return first
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("blockstore: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blockstore: sync %s: %w", dir, err)
	}
	return nil
}
