package timeline

import (
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// recoverPending undoes every version whose writer committed parts but
// never the final batch (a crash or kill mid-import).
func (s *Store) recoverPending() error {
	if err := s.guard.Err(); err != nil {
		return nil // undone at the next open that can write
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagPending}, UpperBound: []byte{tagPending + 1}})
	if err != nil {
		return err
	}
	type pend struct {
		vol   uint64
		t     int64
		start []byte // where its chunks began in the packs, if known
	}
	var todo []pend
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 17 {
			it.Close()
			return fmt.Errorf("timeline: bad pending key %x", k)
		}
		todo = append(todo, pend{binary.BigEndian.Uint64(k[1:]), int64(binary.BigEndian.Uint64(k[9:])), append([]byte(nil), it.Value()...)})
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, p := range todo {
		s.log.Warn("undoing a version left half written", "volume", p.vol, "time", FormatTime(p.t))
		if start, ok := blockstore.UnmarshalPosition(p.start); ok {
			if err := s.reclaim(p.vol, p.t, start); err != nil {
				return err
			}
		}
		if err := s.undoPending(p.vol, p.t); err != nil {
			return err
		}
	}
	return nil
}

// reclaim gives back the pack bytes of the half-written version (vol, t),
// whose chunks began at start: every chunk stored there is its own or
// garbage, but for chunks that other writers stored and indexed.
func (s *Store) reclaim(vol uint64, t int64, start blockstore.Position) error {
	ids := map[blockstore.ID]bool{}
	err := s.eachPendingBlock(vol, t, nil, func(key []byte) {
		v, closer, err := s.db.Get(key)
		if err != nil {
			return
		}
		if e, err := decodeValue(v); err == nil {
			e.chunks(func(id blockstore.ID) { ids[id] = true })
		}
		closer.Close()
	})
	if err != nil {
		return err
	}
	freed, err := s.chunks.Reclaim(start, ids)
	if freed > 0 {
		s.log.Info("gave back the pack space of a version left half written", "bytes", freed)
	}
	return err
}

// eachPendingBlock calls onPart (if not nil) with the key of every
// time-index part of version (vol, t), and onBlock with the version key of
// every block that the part wrote; keys are valid only during the call.
func (s *Store) eachPendingBlock(vol uint64, t int64, onPart, onBlock func(key []byte)) error {
	lo, hi := timeKey(vol, t, 0), timeKey(vol, t, summaryPart)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var key []byte
	for it.First(); it.Valid(); it.Next() {
		rs, err := unmarshalRuns(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		for _, r := range rs {
			for blk := r.start; blk < r.start+r.n; blk++ {
				key = versionKey(key, vol, blk, t)
				onBlock(key)
			}
		}
		if onPart != nil {
			onPart(it.Key())
		}
	}
	return it.Close()
}

// undoPending deletes the block versions that the parts of version (vol,
// t) wrote, their time-index parts and the pending marker, in one batch.
func (s *Store) undoPending(vol uint64, t int64) error {
	b := s.db.NewBatch()
	defer b.Close()
	del := func(key []byte) { b.Delete(key, nil) } // the batch copies key
	err := s.eachPendingBlock(vol, t, del, del)
	if err != nil {
		return err
	}
	b.Delete(pendingKey(vol, t), nil)
	b.Delete(rangeKey(vol, t), nil) // none is written in parts; for certainty
	return s.commit(b, pebble.Sync)
}
