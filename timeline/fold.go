package timeline

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Folding. A block with a run of patches reads as its base and each patch,
// small chunks stored wherever each write landed in the packs: a cold read
// of a clone's newest instant after 100,000 random 4 KiB writes ran at a
// third of a fresh clone's speed. When the store has taken no write for
// foldIdle, a goroutine folds each block whose run reached foldAt: it puts
// the block together as its newest version holds it, stores it whole, and
// makes that version a base, under the same key. The version reads the
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
	searched  bool       // findFolds is done
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
	}
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if !start {
		return
	}
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

func (f *folder) stopped() {
	f.mu.Lock()
	f.running = false
	if f.done != nil {
		f.done.Broadcast()
	}
	f.mu.Unlock()
}

// folding folds the queued blocks while the store is idle, until none is
// left or the store closes.
func (s *Store) folding() {
	f := &s.fold
	defer f.stopped()
	for {
		idle := time.Duration(f.idle.Load())
		if idle == 0 {
			idle = foldIdle
		}
		s.background.Lock()
		closing := s.background.closing
		s.background.Unlock()
		if closing {
			return
		}
		if wait := time.Duration(f.lastWrite.Load() + int64(idle) - monoNow()); wait > 0 {
			time.Sleep(min(wait, 100*time.Millisecond)) // Close waits at most this
			continue
		}
		f.mu.Lock()
		var k foldKey
		found := false
		for k = range f.queue {
			found = true
			delete(f.queue, k)
			break
		}
		f.mu.Unlock()
		if !found {
			return
		}
		if err := s.foldBlock(k.vol, k.block); err != nil {
			s.log.Debug("folding a block's patches", "volume", k.vol, "block", k.block, "err", err)
		}
	}
}

// findFolds queues, in the background, the blocks of writable heads
// whose newest versions end in a run of foldAt patches or more: the queue
// of a store that stopped is lost, and its blocks would stay unfolded
// until written again. One pass over those volumes' version keys.
func (s *Store) findFolds() {
	bg := &s.background
	bg.Lock()
	defer bg.Unlock()
	if bg.closing {
		s.fold.searched = true
		return
	}
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		defer func() {
			s.fold.mu.Lock()
			s.fold.searched = true
			s.fold.mu.Unlock()
		}()
		for _, v := range s.Volumes() {
			if !v.IsClone() && v.Kind != KindProtected {
				continue
			}
			if err := s.findFoldsOf(v.ID); err != nil {
				s.log.Debug("looking for runs of patches to fold", "volume", v.Name, "err", err)
			}
		}
	}()
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
			if block%4096 == 0 {
				s.background.Lock()
				closing := s.background.closing
				s.background.Unlock()
				if closing {
					return nil
				}
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

// foldBlock makes the newest version of block a base, when it is a patch.
func (s *Store) foldBlock(vol, block uint64) error {
	vs, err := s.state(vol)
	if err != nil {
		return nil // removed
	}
	// As a write of the block: imports and removal excluded, the block's
	// writers in turn; and prune, which deletes versions, excluded.
	vs.writeMu.RLock()
	defer vs.writeMu.RUnlock()
	vs.pruneMu.RLock()
	defer vs.pruneMu.RUnlock()
	defer vs.blocks.lock(block, block+1)()
	if err := s.guard.Err(); err != nil {
		return err
	}
	m, err := s.VolumeByID(vol)
	if err != nil || m.Versions == 0 {
		return nil
	}
	t, patched, err := s.newestOwn(vol, block, m.Last)
	if err != nil || !patched {
		return err
	}
	var ref [1]blockRef
	if err := s.resolve(m, m.Last, block, ref[:]); err != nil {
		return err
	}
	bs := m.BlockSize
	blk := make([]byte, min(bs, m.SizeAt(m.Last)-int64(block)*bs))
	if len(blk) <= 0 {
		return nil
	}
	if err := s.assemble(&ref[0], blk, false); err != nil {
		return err
	}
	base := blockRef{kind: refZero}
	txn := s.chunks.NewTxn()
	defer txn.Done()
	if !isZero(blk) {
		res, err := txn.Put(blk)
		if err != nil {
			return err
		}
		base = blockRef{kind: refChunk, id: res.ID}
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(versionKey(nil, vol, block, t), encodeValue(base), nil); err != nil {
		return err
	}
	if err := txn.AddTo(b); err != nil {
		return err
	}
	if err := s.commit(b, pebble.NoSync); err != nil {
		return err
	}
	vs.patches.set(block, 0)
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

// FoldsPending returns how many blocks wait to be folded, counting the
// one being folded (0 once folding and the search for runs at Open are
// done).
func (s *Store) FoldsPending() int {
	f := &s.fold
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.queue)
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
