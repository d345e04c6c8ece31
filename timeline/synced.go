package timeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// The synced mark.
//
// A clone write (View.write) puts its chunk in a pack and commits its
// version without a sync; FLUSH makes both durable. Pebble writes its log
// whenever commits come, and the kernel may write those pages before the
// packs' pages it points at, so after a power loss the index can hold a
// version whose chunk's bytes never reached the disk. Rather than sync
// the packs before every write of the log (which took a sixth of the
// daemon's CPU at queue depth 32 and slowed the writes beside it), the
// store keeps a mark: a time such that every version stamped at or before
// it has its bytes durable. It is read before a sync of the packs and
// saved after it succeeds, every syncedInterval while writes come and at
// a clean close. Open checks every version stamped after the saved mark
// (checkUnsynced): a version with a chunk that cannot be read back is
// taken out of the history (its block versions are deleted, and those of
// later versions of the same blocks, with their time-index records and
// their part of the metadata), so its blocks read as they did before it
// and the log no longer lists it, and the lost chunk's index entry goes
// too, so that no later write counts on it as stored. Only writes that
// were not flushed can be lost that way: FLUSH syncs the packs and the
// log. Every other writer of the index (imports,
// folding, clustering, collection) syncs the packs it wrote before it
// commits, and Pebble's tables and log are synced after the packs (Guard):
// only log records that the kernel wrote out unsynced can be ahead.

// syncedInterval is how often the mark moves while writes come: it bounds
// what Open checks after a crash to the writes of about that long.
var syncedInterval = 250 * time.Millisecond // tests change it

var syncedKey = globalKey("synced")

// readSynced returns the saved mark, and false for a store that has none
// (made by an earlier build, which synced the packs before every write of
// Pebble's log: all of its versions have their bytes).
func (s *Store) readSynced() (int64, bool, error) {
	v, closer, err := s.db.Get(syncedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("timeline: bad synced mark (%d bytes)", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// saveSynced syncs the packs and then saves, as the mark, the newest time
// handed out before the sync began: every version stamped by then wrote
// its chunks first (View.write stores them before it takes its time),
// but for writes stamped ahead of their recording (Stamp): the mark
// stays before the oldest of those still to be recorded.
// With sync, the record is durable on return; without, it rides with the
// next write of the log (losing it only makes the next Open check more).
func (s *Store) saveSynced(sync bool) error {
	s.synced.Lock()
	defer s.synced.Unlock()
	s.mu.Lock()
	t := s.settledLocked()
	s.mu.Unlock()
	if t <= s.synced.saved && !sync {
		return nil
	}
	if err := s.syncPacks(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	b.Set(syncedKey, clockValue(t), nil)
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	if err := s.commit(b, opt); err != nil {
		return err
	}
	s.synced.saved = t
	return nil
}

// startSynced moves the mark in the background while the store is open;
// StopBackground ends it (not counted in background.wg, which tests wait
// on for read-ahead to finish).
func (s *Store) startSynced() {
	bg := &s.background
	bg.Lock()
	defer bg.Unlock()
	if bg.closing {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.synced.stop, s.synced.done = stop, done
	go func() {
		defer close(done)
		tick := time.NewTicker(syncedInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if s.guard.Err() != nil {
				continue
			}
			if err := s.saveSynced(false); err != nil {
				s.log.Debug("moving the synced mark", "err", err)
			}
		}
	}()
}

// checkUnsynced checks, after a crash, the versions stamped after the
// saved mark (see above) and drops those that lost a chunk (dropLost). A
// store with no mark (an earlier build's) has nothing to check; it gets
// one now.
func (s *Store) checkUnsynced() error {
	mark, ok, err := s.readSynced()
	if err != nil {
		return err
	}
	s.mu.Lock()
	last := s.mu.last
	vols := make([]uint64, 0, len(s.mu.vols))
	for id := range s.mu.vols {
		vols = append(vols, id)
	}
	s.mu.Unlock()
	if !ok {
		mark = last
	}
	if s.guard.Err() != nil {
		// It takes no writes: nothing can be dropped, and nothing else
		// is written. A lost chunk reads as an error, never as other
		// bytes; the next writable open checks.
		s.synced.saved = mark
		return nil
	}
	if mark < last {
		if err := s.dropLost(vols, mark); err != nil {
			return err
		}
	}
	s.synced.saved = mark
	if ok && mark == last {
		return nil
	}
	return s.saveSynced(true)
}

// dropLost deletes the versions of vols stamped after mark that lost a
// chunk, and the index entries of those chunks. A version that lost one is
// dropped whole (all its block versions: its blocks read as before it),
// and so is every later one of the same volume that writes one of its
// blocks: a block's history after a crash is its writes up to the first
// lost one, never a later write over what was lost.
func (s *Store) dropLost(vols []uint64, mark int64) error {
	start := time.Now()
	var checked, dropped int
	lost := map[blockstore.ID]bool{}
	good := map[blockstore.ID]bool{}
	var doomed [][]byte
	gone := map[uint64][]int64{} // the times of the versions dropped, by volume
	readable := func(id blockstore.ID) bool {
		if good[id] || lost[id] {
			return good[id]
		}
		_, err := s.chunks.Get(id)
		if err != nil && (errors.Is(err, blockstore.ErrCorrupt) || errors.Is(err, blockstore.ErrNotFound)) {
			lost[id] = true
			return false
		}
		if err != nil {
			// Not damage (the object store away, an I/O error): the
			// version stays; a read of it fails until the chunk can be
			// read, and never returns other bytes.
			s.log.Warn("cannot check a write made after the last sync", "chunk", id, "err", err)
		}
		good[id] = true
		return true
	}
	for _, vol := range vols {
		_, hi := volumeBounds(tagTime, vol)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: timeKey(vol, mark+1, 0), UpperBound: hi})
		if err != nil {
			return err
		}
		var times []int64
		for it.First(); it.Valid(); it.Next() {
			if _, t, part, ok := parseTimeKey(it.Key()); ok && part == summaryPart {
				times = append(times, t)
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		dead := map[uint64]bool{} // blocks with a dropped version
		for _, t := range times {
			var keys [][]byte
			var blocks []uint64
			drop := false
			var ferr error
			err := s.eachPendingBlock(vol, t, nil, func(key []byte) {
				if ferr != nil {
					return
				}
				_, block, _, _ := parseVersionKey(key)
				keys, blocks = append(keys, append([]byte(nil), key...)), append(blocks, block)
				drop = drop || dead[block]
				// Every chunk is checked, even in a version already
				// dropped: a lost one's index entry must go.
				v, closer, err := s.db.Get(key)
				if errors.Is(err, pebble.ErrNotFound) {
					return
				}
				if err != nil {
					ferr = err
					return
				}
				e, err := decodeValue(v)
				closer.Close()
				if err != nil {
					ferr = err
					return
				}
				checked++
				e.chunks(func(id blockstore.ID) {
					if !readable(id) {
						drop = true
					}
				})
			})
			if err == nil {
				err = ferr
			}
			if err != nil {
				return err
			}
			if drop {
				doomed = append(doomed, keys...)
				for _, b := range blocks {
					dead[b] = true
				}
				gone[vol] = append(gone[vol], t)
				dropped++
			}
		}
	}
	if checked > 0 {
		s.log.Info("read back the writes made after the last sync of the packs (an unclean stop)",
			"block_versions", checked, "versions_dropped", dropped, "took", time.Since(start).Round(time.Millisecond))
	}
	if len(doomed) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, k := range doomed {
		b.Delete(k, nil)
	}
	var metas []*Volume
	for vol, times := range gone {
		m, err := s.forgetVersions(b, vol, mark, times)
		if err != nil {
			return err
		}
		metas = append(metas, m)
	}
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	for _, m := range metas {
		s.publish(m)
	}
	ids := make([]blockstore.ID, 0, len(lost))
	for id := range lost {
		ids = append(ids, id)
	}
	if err := s.chunks.ForgetLost(ids); err != nil {
		return err
	}
	s.log.Warn("a crash lost writes that were not flushed: their versions are taken out of the history",
		"versions", dropped, "block versions", len(doomed), "chunks", len(lost))
	return nil
}

// forgetVersions takes the versions of vol stamped at times (ascending,
// all after mark), which a crash emptied (dropLost), out of its history
// in b: their time-index records and range records, and their count and
// bytes in the metadata, whose newest (and oldest) version becomes the
// newest (oldest) one left. `rewind log` then lists only writes the
// volume holds, and an instant after the newest left reads it. Only the
// versions after mark are read. It returns the metadata that b records;
// the caller publishes it once b is committed.
func (s *Store) forgetVersions(b *pebble.Batch, vol uint64, mark int64, times []int64) (*Volume, error) {
	m, err := s.VolumeByID(vol)
	if err != nil {
		return nil, err
	}
	m = m.clone()
	dropped := map[int64]bool{}
	for _, t := range times {
		dropped[t] = true
	}
	var first, last int64 // of the versions after mark that stay
	var gone []VersionInfo
	err = s.EachVersion(vol, mark+1, math.MaxInt64, func(v VersionInfo) {
		if dropped[v.Time] {
			gone = append(gone, v)
			return
		}
		if first == 0 {
			first = v.Time
		}
		last = v.Time
	})
	if err != nil {
		return nil, err
	}
	for _, v := range gone {
		if err := unrecord(b, m, v); err != nil {
			return nil, err
		}
		if err := b.Delete(rangeKey(vol, v.Time), nil); err != nil {
			return nil, err
		}
	}
	if m.First > mark {
		m.First = first
	}
	if m.Last = last; last == 0 {
		if m.Last, err = s.retained(vol, mark); err != nil {
			return nil, err
		}
	}
	if m.First == 0 || m.Versions <= 0 {
		// Never so: a volume's first version (an import, a clone's fork,
		// protection's first copy) is synced before it is acknowledged.
		return nil, fmt.Errorf("%w: every version of %s lost a chunk", blockstore.ErrCorrupt, m.Name)
	}
	if err := b.Set(metaKey(vol), m.marshal(), nil); err != nil {
		return nil, err
	}
	return m, nil
}
