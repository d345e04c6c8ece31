package timeline

import (
	"errors"
	"maps"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// Clustering. A patch is a small record stored where its write landed in
// the packs, in the order the writes came. After 10,000 random 4 KiB
// writes over a 256 MiB clone most blocks carry one to three patches
// (folding leaves runs shorter than foldAt alone), and a cold read of the
// newest instant fetched each of them from wherever it lay: 194 MB read
// from the disk where the imported volume's read takes 118 MB, at about
// twice its time. So once the store is idle and nothing is left to fold,
// the patches of the blocks written since are copied next to each other
// in the order of their blocks (oldest first within a block, as a read
// applies them; blockstore.Store.Relocate), and the versions that name
// them get the new places: a read in block order then finds them in the
// read-ahead of one stream.
//
// It costs a second write of the patches' bytes, while nothing writes,
// and their old records stay in the packs until a collection's
// compaction gives them back (the patches of a protected disk's writes
// fill packs of their own, which end up holding nothing live). A pass
// moves only the patches stamped after the volume's last complete pass.
// Which blocks wait is kept in memory: a daemon that stops before a pass
// leaves their patches where they are, which reads as before.

// clusterGroup is the most blocks of one volume whose patches are moved
// together: read, written and synced at once.
const clusterGroup = 1024

// clusterBytes bounds the patch bytes moved at once (Relocate holds them
// in memory).
const clusterBytes = 16 << 20

// queueCluster notes that block of vol took a patch.
func (s *Store) queueCluster(vol, block uint64) {
	f := &s.fold
	f.mu.Lock()
	if f.cluster == nil {
		f.cluster = map[foldKey]bool{}
	}
	if len(f.cluster) < maxFoldQueue {
		f.cluster[foldKey{vol, block}] = true
	}
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		s.startFolding()
	}
}

// clusterBlocks moves the patches of blocks (ascending, one group) that
// vol's versions after its newest base stamped after `after`, and gives
// their versions the new places. It returns blockstore.ErrCollecting,
// moving nothing, while a collection runs.
func (s *Store) clusterBlocks(vol uint64, blocks []uint64, after int64) error {
	vs, err := s.state(vol)
	if err != nil {
		return nil // removed
	}
	// Imports, removal and prune wait: nothing else changes or deletes a
	// version that is there (writes add new ones, and folding runs on
	// this goroutine), so the blocks' writers need not wait.
	vs.writeMu.RLock()
	defer vs.writeMu.RUnlock()
	vs.pruneMu.RLock()
	defer vs.pruneMu.RUnlock()
	if err := s.guard.Err(); err != nil {
		return err
	}
	m, err := s.VolumeByID(vol)
	if err != nil || m.Versions == 0 {
		return nil
	}
	type named struct {
		key []byte
		p   patch
	}
	var found []named
	var ids []blockstore.ID
	var bytes int64
	// move relocates what was found so far and gives the versions the
	// new places.
	move := func() error {
		if len(ids) == 0 {
			return nil
		}
		places, err := s.chunks.Relocate(ids)
		moved := found
		found, ids, bytes = nil, nil, 0
		if err != nil || len(places) == 0 {
			return err
		}
		b := s.db.NewBatch()
		defer b.Close()
		for _, n := range moved {
			pl, ok := places[n.p.id]
			if !ok {
				continue
			}
			n.p.place = pl
			if err := b.Set(n.key, encodePatch(n.p), nil); err != nil {
				return err
			}
		}
		// Not synced: a version that a crash leaves with its old place
		// reads the old record, there until a collection, and after it
		// looks the chunk up (a stale place).
		return s.commit(b, pebble.NoSync)
	}
	var newestFirst []named
	for _, block := range blocks {
		lo := versionKey(nil, vol, block, m.Last)
		hi := versionKey(nil, vol, block+1, -1)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo[:versionPrefixLen], UpperBound: hi[:versionPrefixLen]})
		if err != nil {
			return err
		}
		newestFirst = newestFirst[:0]
		for valid := it.SeekGE(lo); valid; valid = it.Next() {
			_, _, t, ok := parseVersionKey(it.Key())
			if !ok || t <= after {
				break
			}
			e, err := decodeValue(it.Value())
			if err != nil || !e.isPatch {
				break
			}
			if !e.patch.zero {
				newestFirst = append(newestFirst, named{append([]byte(nil), it.Key()...), e.patch})
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		for i := len(newestFirst) - 1; i >= 0; i-- {
			found = append(found, newestFirst[i])
			ids = append(ids, newestFirst[i].p.id)
			bytes += int64(newestFirst[i].p.n)
		}
		if bytes >= clusterBytes {
			if err := move(); err != nil {
				return err
			}
		}
	}
	return move()
}

// takeCluster takes every block waiting for clustering, in order of
// volume and block.
func (f *folder) takeCluster() []foldKey {
	f.mu.Lock()
	keys := make([]foldKey, 0, len(f.cluster))
	for k := range f.cluster {
		keys = append(keys, k)
	}
	clear(f.cluster)
	f.mu.Unlock()
	sortFoldKeys(keys)
	return keys
}

// requeue puts blocks back, for the next pause.
func (f *folder) requeue(keys []foldKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		if len(f.cluster) < maxFoldQueue {
			f.cluster[k] = true
		}
	}
}

// clustering moves the queued blocks' patches while the store stays
// idle; it returns false once none wait, true when a write came or a
// collection runs (look again after a pause).
func (s *Store) clustering(idle int64) bool {
	f := &s.fold
	keys := f.takeCluster()
	if len(keys) == 0 {
		return false
	}
	// Each volume's newest time as this run began: once all its blocks
	// are done, its patches up to then have moved.
	starts := map[uint64]int64{}
	for _, k := range keys {
		if _, seen := starts[k.vol]; !seen {
			if m, err := s.VolumeByID(k.vol); err == nil {
				starts[k.vol] = m.Last
			}
		}
	}
	f.mu.Lock()
	after := maps.Clone(f.clustered)
	f.mu.Unlock()
	for len(keys) > 0 {
		if monoNow()-f.lastWrite.Load() < idle || s.closing() {
			f.requeue(keys)
			return true
		}
		n := 1
		for n < len(keys) && n < clusterGroup && keys[n].vol == keys[0].vol {
			n++
		}
		blocks := make([]uint64, n)
		for i, k := range keys[:n] {
			blocks[i] = k.block
		}
		err := s.clusterBlocks(keys[0].vol, blocks, after[keys[0].vol])
		if errors.Is(err, blockstore.ErrCollecting) {
			f.requeue(keys)
			time.Sleep(time.Second) // Close waits at most this
			return true
		}
		if err != nil {
			s.log.Debug("laying blocks' patches together", "volume", keys[0].vol, "blocks", n, "err", err)
		}
		keys = keys[n:]
	}
	f.mu.Lock()
	if f.clustered == nil {
		f.clustered = map[uint64]int64{}
	}
	for v, t := range starts {
		f.clustered[v] = max(f.clustered[v], t)
	}
	f.mu.Unlock()
	return f.pendingClusters() > 0
}

// pendingClusters is how many blocks wait for clustering.
func (f *folder) pendingClusters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cluster)
}
