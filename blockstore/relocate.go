package blockstore

import (
	"errors"
	"fmt"
	"hash/crc32"
	"sort"

	"github.com/cockroachdb/pebble/v2"
)

// ErrCollecting is what Relocate returns while a collection runs or is
// held off (a replication copying packs): it moves nothing then.
var ErrCollecting = errors.New("blockstore: a collection runs or is held off")

// Relocate copies the records of chunks ids, in that order, one after
// another to the end of the active pack, and points their index entries
// at the copies. It returns the new place of each chunk it moved.
//
// The timeline lays with it the small records of a block's patches,
// which its writes left all over the packs, next to each other in block
// order: a cold read of the newest instant then finds them in the
// read-ahead of one stream instead of a read each. The old records are
// garbage, which a collection's compaction gives back once their packs
// are mostly garbage.
//
// Left where they are: members of bundles (moving one moves the others),
// records that a live import may still cut back, records past their
// pack's end or known damaged, and records that do not check (rewind
// verify names those). Places that name the old records stay right
// until a collection removes their packs, and are stale after (see
// Place). No collection starts meanwhile; while one runs, Relocate moves
// nothing and returns ErrCollecting.
func (s *Store) Relocate(ids []ID) (map[ID]Place, error) {
	if !s.gcMu.TryLock() {
		return nil, ErrCollecting
	}
	defer s.gcMu.Unlock()
	type rec struct {
		id  ID
		loc location
	}
	var recs []rec
	seen := make(map[ID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		loc, err := s.locateIndex(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if loc.codec == CodecBundle {
			continue
		}
		s.mu.Lock()
		ok := loc.offset+loc.size() <= s.packEndLocked(loc.pack) && !s.inLiveRegionLocked(nil, loc) && !s.isDamaged(id, loc)
		s.mu.Unlock()
		if ok {
			recs = append(recs, rec{id, loc})
		}
	}
	if len(recs) == 0 {
		return nil, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	out := make(map[ID]Place, len(recs))
	c := s.newRecordCopier(b)
	defer c.release()
	c.onMove = func(id ID, loc location) { out[id] = Place{loc: loc, ok: true} }
	// Read in the packs' order (one stream for the read-ahead), written
	// in the order asked.
	byPlace := make([]int, len(recs))
	for i := range byPlace {
		byPlace[i] = i
	}
	sort.Slice(byPlace, func(a, b int) bool {
		la, lb := recs[byPlace[a]].loc, recs[byPlace[b]].loc
		return la.pack < lb.pack || la.pack == lb.pack && la.offset < lb.offset
	})
	raw := make([][]byte, len(recs))
	for _, i := range byPlace {
		c := recs[i]
		f, err := s.file(c.loc.pack)
		if err != nil {
			continue // gone: a read finds out and says so
		}
		buf := make([]byte, c.loc.size())
		var h recordHeader
		if n, _ := f.ReadAt(buf, c.loc.offset); n != len(buf) || h.unmarshal(buf) != nil {
			continue
		}
		payload := buf[recordHeaderSize:]
		if h.id != c.id || int64(len(payload)) != int64(h.payloadLen) ||
			crc32.Update(recordCRC(buf[:recordHeaderSize]), castagnoli, payload) != h.crc {
			continue
		}
		raw[i] = buf
	}
	var h recordHeader
	for i, rc := range recs {
		if raw[i] == nil {
			continue
		}
		h.unmarshal(raw[i])
		if err := c.add(&h, raw[i][recordHeaderSize:], []ID{rc.id}, []location{rc.loc}); err != nil {
			return nil, err
		}
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	if len(c.moved) == 0 {
		return nil, nil
	}
	if err := s.SyncPacks(); err != nil {
		return nil, err
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return nil, fmt.Errorf("blockstore: relocate: move index entries: %w", err)
	}
	s.locs.forget(c.moved...)
	return out, nil
}
