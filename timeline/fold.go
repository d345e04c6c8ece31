package timeline

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// Folding. A block with a run of patches reads as its base and each patch,
// small chunks stored wherever each write landed in the packs: a cold read
// of a clone's newest instant after 100,000 random 4 KiB writes ran at a
// third of a fresh clone's speed. When the store has taken no write for
// foldIdle, a goroutine folds each block whose run reached foldAt: it puts
// the block together as its newest version holds it, stores it whole
// (never as a slices record: its sources, the blocks' older chunks, would
// be read with it, and a cold read of the newest instant read twice its
// bytes), and makes that version a base, under the same key. The version reads the
// same bytes before and after, so no instant changes; instants before it
// keep reading their own versions.

const (
	// foldAt is the run of patches that makes a block worth folding.
	foldAt = 4
	// foldIdle is how long the store must have taken no write before
	// folding starts, and the pause between checks: folding never takes
	// CPU from a workload that writes.
	foldIdle = 500 * time.Millisecond
	// maxFoldQueue bounds the blocks waiting; more are dropped (a later
	// write of them queues them again).
	maxFoldQueue = 1 << 20
)

type foldKey struct{ vol, block uint64 }

type folder struct {
	lastWrite atomic.Int64 // ns, monotonic since the process began
	idle      atomic.Int64 // foldIdle, unless a test sets it (ns)
	mu        sync.Mutex
	queue     map[foldKey]bool
	running   bool
	searched  bool // findFolds is done
	complete  bool // and it looked at every block
	dropped   bool // a block was not queued: the queue was full
	// cluster holds the blocks whose patches wait to be laid together,
	// clustered each volume's time up to which they were (cluster.go).
	cluster   map[foldKey]bool
	clustered map[uint64]int64
	done      *sync.Cond // broadcast when a run ends (tests wait on it)
}

var processStart = time.Now()

func monoNow() int64 { return int64(time.Since(processStart)) }

// wrote records a write of vol; a block whose run of patches reached
// foldAt is queued.
func (s *Store) wrote(vol, block uint64, run int) {
	s.fold.lastWrite.Store(monoNow())
	if run >= foldAt {
		s.queueFold(vol, block)
	} else {
		s.queueCluster(vol, block)
	}
}

// queueFold queues a block for folding and starts the folding goroutine
// if none runs.
func (s *Store) queueFold(vol, block uint64) {
	f := &s.fold
	f.mu.Lock()
	if f.queue == nil {
		f.queue = map[foldKey]bool{}
	}
	if len(f.queue) < maxFoldQueue {
		f.queue[foldKey{vol, block}] = true
	} else {
		f.dropped = true
	}
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		s.startFolding()
	}
}

// startFolding starts the goroutine that folds and clusters; the caller
// set f.running.
func (s *Store) startFolding() {
	f := &s.fold
	bg := &s.background
	bg.Lock()
	defer bg.Unlock()
	if bg.closing {
		f.stopped()
		return
	}
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		s.folding()
	}()
}

// stopIfIdle ends the folding goroutine's run when nothing waits.
func (f *folder) stopIfIdle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queue) > 0 || len(f.cluster) > 0 {
		return false
	}
	f.running = false
	if f.done != nil {
		f.done.Broadcast()
	}
	return true
}

func (f *folder) stopped() {
	f.mu.Lock()
	f.running = false
	if f.done != nil {
		f.done.Broadcast()
	}
	f.mu.Unlock()
}

// folding folds the queued blocks while the store is idle, then lays the
// patches of the blocks written together (cluster.go), until none is left
// or the store closes.
func (s *Store) folding() {
	f := &s.fold
	stopped := false
	defer func() {
		if !stopped {
			f.stopped()
		}
	}()
	for {
		idle := time.Duration(f.idle.Load())
		if idle == 0 {
			idle = foldIdle
		}
		if s.closing() {
			return
		}
		if wait := time.Duration(f.lastWrite.Load() + int64(idle) - monoNow()); wait > 0 {
			time.Sleep(min(wait, 100*time.Millisecond)) // Close waits at most this
			continue
		}
		// The queued blocks in order, so that the whole blocks land in the
		// packs in the order a sequential read wants them.
		f.mu.Lock()
		keys := make([]foldKey, 0, len(f.queue))
		for k := range f.queue {
			keys = append(keys, k)
		}
		f.mu.Unlock()
		if len(keys) == 0 {
			if s.clustering(int64(idle)) {
				continue
			}
			// Done, unless a write queued more since: a writer that saw
			// this goroutine running started none.
			if stopped = f.stopIfIdle(); stopped {
				return
			}
			continue
		}
		sortFoldKeys(keys)
		for len(keys) > 0 {
			if monoNow()-f.lastWrite.Load() < int64(idle) || s.closing() {
				break // a write came: wait for the next pause
			}
			// Up to foldGroup blocks of one volume near each other, stored
			// together (compressible ones in one bundle, as an import's).
			n := 1
			for n < len(keys) && n < foldGroup && keys[n].vol == keys[0].vol && keys[n].block-keys[0].block < foldSpan {
				n++
			}
			group := keys[:n]
			keys = keys[n:]
			blocks := make([]uint64, n)
			f.mu.Lock()
			for i, k := range group {
				delete(f.queue, k)
				blocks[i] = k.block
			}
			f.mu.Unlock()
			if err := s.foldBlocks(group[0].vol, blocks); err != nil {
				s.log.Debug("folding blocks' patches", "volume", group[0].vol, "blocks", blocks, "err", err)
			}
		}
	}
}

func sortFoldKeys(keys []foldKey) {
	slices.SortFunc(keys, func(a, b foldKey) int {
		if c := cmp.Compare(a.vol, b.vol); c != 0 {
			return c
		}
		return cmp.Compare(a.block, b.block)
	})
}

const (
	foldGroup = 16  // blocks folded together at most
	foldSpan  = 256 // and within this many blocks of the first
)

func (s *Store) closing() bool {
	s.background.Lock()
	defer s.background.Unlock()
	return s.background.closing
}

// findFolds queues, in the background, the blocks of writable heads
// whose newest versions end in a run of foldAt patches or more: the queue
// of a store that stopped is lost, and its blocks would stay unfolded
// until written again. One pass over those volumes' version keys: a
// million of them after a million clone writes, which a daemon that had
// just started read beside its first clients' reads. A store closed with
// nothing left to fold says so (foldedKey, see markFolded), and the next
// Open takes that instead of the pass; the key is deleted, durably,
// before any write, so a store that stops uncleanly later looks again.
// The key is written before the index is written out at a clean close
// (see StopBackground), so that it leaves no log behind.
func (s *Store) findFolds() error {
	if _, closer, err := s.db.Get(foldedKey); err == nil {
		closer.Close()
		// A store that cannot delete it (a full disk: it opens taking no
		// writes) searches as before.
		if err := s.db.Delete(foldedKey, pebble.Sync); err == nil {
			s.fold.searched, s.fold.complete = true, true
			return nil
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	bg := &s.background
	bg.Lock()
	defer bg.Unlock()
	if bg.closing {
		s.fold.searched = true
		return nil
	}
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		complete := true
		defer func() {
			s.fold.mu.Lock()
			s.fold.searched = true
			s.fold.complete = complete && !s.closing()
			s.fold.mu.Unlock()
		}()
		for _, v := range s.Volumes() {
			if !v.IsClone() && v.Kind != KindProtected {
				continue
			}
			if err := s.findFoldsOf(v.ID); err != nil {
				complete = false
				s.log.Debug("looking for runs of patches to fold", "volume", v.Name, "err", err)
			}
		}
	}()
	return nil
}

// foldedKey, present, says that the store was closed with no block left
// to fold (see findFolds).
var foldedKey = globalKey("folded")

// markFolded writes foldedKey when nothing is left to fold: the search
// after Open looked at every block, no block was dropped from the queue,
// and the queue is empty. The background goroutines have ended.
func (s *Store) markFolded() {
	f := &s.fold
	f.mu.Lock()
	done := f.complete && !f.dropped && !f.running && len(f.queue) == 0
	f.mu.Unlock()
	if !done || s.guard.Err() != nil {
		return
	}
	if err := s.db.Set(foldedKey, nil, pebble.Sync); err != nil {
		s.log.Debug("noting that nothing is left to fold", "err", err)
	}
}

func (s *Store) findFoldsOf(vol uint64) error {
	lo, hi := volumeBounds(tagVersion, vol)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	block, run, counting := ^uint64(0), 0, false
	for it.First(); it.Valid(); it.Next() {
		_, b, _, ok := parseVersionKey(it.Key())
		if !ok {
			continue
		}
		if b != block {
			if block%4096 == 0 && s.closing() {
				return nil
			}
			block, run, counting = b, 0, true
		}
		if !counting {
			continue
		}
		e, err := decodeValue(it.Value())
		if err != nil {
			return err
		}
		if !e.isPatch {
			counting = false
			continue
		}
		if run++; run == foldAt {
			s.queueFold(vol, b)
		}
	}
	return it.Error()
}

// foldBlocks makes the newest version of each of blocks (ascending,
// within foldSpan) a base, where it is a patch.
func (s *Store) foldBlocks(vol uint64, blocks []uint64) error {
	vs, err := s.state(vol)
	if err != nil {
		return nil // removed
	}
	// As a write of the blocks: imports and removal excluded, the blocks'
	// writers in turn; and prune, which deletes versions, excluded.
	vs.writeMu.RLock()
	defer vs.writeMu.RUnlock()
	vs.pruneMu.RLock()
	defer vs.pruneMu.RUnlock()
	defer vs.blocks.lock(blocks[0], blocks[len(blocks)-1]+1)()
	if err := s.guard.Err(); err != nil {
		return err
	}
	m, err := s.VolumeByID(vol)
	if err != nil || m.Versions == 0 {
		return nil
	}
	type folded struct {
		block uint64
		t     int64
		base  blockRef
	}
	var todo []folded
	var ids []blockstore.ID
	var datas [][]byte
	bs := m.BlockSize
	for _, block := range blocks {
		t, patched, err := s.newestOwn(vol, block, m.Last)
		if err != nil {
			return err
		}
		var floor [1]int64
		if !patched || m.floors(m.Last, block, floor[:]) && floor[0] > t {
			continue // no patch, or a hole from a newer range record on
		}
		// As of the patch's own time: a range record stamped after it
		// may make the block a hole as of m.Last, and the folded version
		// must read what the patch did.
		var ref [1]blockRef
		if err := s.resolve(m, t, block, ref[:]); err != nil {
			return err
		}
		blk := make([]byte, min(bs, m.SizeAt(t)-int64(block)*bs))
		if len(blk) <= 0 {
			continue
		}
		if err := s.assemble(&ref[0], blk, false); err != nil {
			return err
		}
		base := blockRef{kind: refZero}
		if !isZero(blk) {
			base = blockRef{kind: refChunk, id: blockstore.Sum(blk)}
			ids, datas = append(ids, base.id), append(datas, blk)
		}
		todo = append(todo, folded{block, t, base})
	}
	if len(todo) == 0 {
		return nil
	}
	txn := s.chunks.NewTxn()
	defer txn.Done()
	res, err := txn.PutManyWhole(ids, datas)
	if err != nil {
		return err
	}
	places := make(map[blockstore.ID]blockstore.Place, len(res))
	for _, r := range res {
		places[r.ID] = r.Place
	}
	for i := range todo {
		if todo[i].base.kind == refChunk {
			todo[i].base.place = places[todo[i].base.id]
		}
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, fb := range todo {
		if err := b.Set(versionKey(nil, vol, fb.block, fb.t), encodeValue(fb.base), nil); err != nil {
			return err
		}
	}
	if err := txn.AddTo(b); err != nil {
		return err
	}
	// The versions are older than the synced mark may be (synced.go):
	// their new chunks must be durable before the log can carry them.
	if err := s.syncPacks(); err != nil {
		return err
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return err
	}
	for _, fb := range todo {
		vs.patches.set(fb.block, 0)
	}
	return nil
}

// newestOwn returns the time of vol's newest own version of block at or
// before last, and whether it is a patch.
func (s *Store) newestOwn(vol, block uint64, last int64) (int64, bool, error) {
	lo := versionKey(nil, vol, block, last)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo[:versionPrefixLen], UpperBound: versionKey(nil, vol, block+1, -1)[:versionPrefixLen]})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	if !it.SeekPrefixGE(lo) {
		return 0, false, it.Error()
	}
	_, _, t, _ := parseVersionKey(it.Key())
	e, err := decodeValue(it.Value())
	if err != nil {
		return 0, false, err
	}
	return t, e.isPatch, nil
}

// FoldsPending returns how many blocks wait to be folded or to have their
// patches laid together (cluster.go), counting the one being worked on (0
// once that is done and the search for runs at Open is).
func (s *Store) FoldsPending() int {
	f := &s.fold
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.queue) + len(f.cluster)
	if f.running || !f.searched {
		n++
	}
	return n
}

// waitFolds waits until no folding runs (tests).
func (s *Store) waitFolds() {
	f := &s.fold
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done == nil {
		f.done = sync.NewCond(&f.mu)
	}
	for f.running {
		f.done.Wait()
	}
}
