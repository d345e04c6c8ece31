package timeline

import (
	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// Affected is what damaged chunks touch in one volume: the block
// versions that read them, and the times those were written. Every
// instant from First on may read one of them, until the block is written
// again.
type Affected struct {
	Volume        *Volume
	BlockVersions int
	First, Last   int64
}

// Affected lists, per volume, the block versions whose base or patches
// are among ids.
func (s *Store) Affected(ids []blockstore.ID) ([]Affected, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	gone := make(map[blockstore.ID]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagVersion}, UpperBound: []byte{tagVersion + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	by := map[uint64]*Affected{}
	var order []uint64
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeValue(it.Value())
		if err != nil {
			continue
		}
		hit := false
		e.chunks(func(id blockstore.ID) { hit = hit || gone[id] })
		if !hit {
			continue
		}
		vol, _, t, ok := parseVersionKey(it.Key())
		if !ok {
			continue
		}
		a := by[vol]
		if a == nil {
			m, err := s.VolumeByID(vol)
			if err != nil {
				continue // a volume being removed
			}
			a = &Affected{Volume: m, First: t, Last: t}
			by[vol] = a
			order = append(order, vol)
		}
		a.BlockVersions++
		a.First, a.Last = min(a.First, t), max(a.Last, t)
	}
	out := make([]Affected, 0, len(order))
	for _, v := range order {
		out = append(out, *by[v])
	}
	return out, it.Error()
}
