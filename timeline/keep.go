package timeline

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// KeepVolumes deletes from db every volume but the named ones and the
// volumes they are clones of (a clone reads its parent), and returns the
// volumes kept. db is a copy of an index that no Store has open (a
// replication's snapshot); the batch is not synced. With no names, every
// volume is kept.
func KeepVolumes(db *pebble.DB, names []string) (kept, dropped []*Volume, err error) {
	lo, hi := []byte{tagMeta}, []byte{tagMeta + 1}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, nil, err
	}
	byID := map[uint64]*Volume{}
	byName := map[string]*Volume{}
	for it.First(); it.Valid(); it.Next() {
		v, err := unmarshalVolume(it.Value())
		if err != nil {
			it.Close()
			return nil, nil, err
		}
		byID[v.ID], byName[v.Name] = v, v
	}
	if err := it.Close(); err != nil {
		return nil, nil, err
	}
	keep := map[uint64]bool{}
	for _, n := range names {
		v, ok := byName[n]
		if !ok {
			return nil, nil, fmt.Errorf("%w: no volume %q", ErrNotFound, n)
		}
		for ; v != nil && !keep[v.ID]; v = byID[v.Parent] {
			keep[v.ID] = true
		}
	}
	b := db.NewBatch()
	defer b.Close()
	for id, v := range byID {
		if len(names) == 0 || keep[id] {
			kept = append(kept, v)
			continue
		}
		dropped = append(dropped, v)
		for _, tag := range []byte{tagVersion, tagTime, tagPending, tagRange} {
			lo, hi := volumeBounds(tag, id)
			if err := b.DeleteRange(lo, hi, nil); err != nil {
				return nil, nil, err
			}
		}
		b.Delete(metaKey(id), nil)
		b.Delete(nameKey(v.Name), nil)
	}
	return kept, dropped, b.Commit(pebble.NoSync)
}
