package timeline

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// Collect removes the chunks that no version of any volume references,
// and rewrites the packs that are mostly garbage (see
// blockstore.Store.Collect). It runs beside reads and writes: a chunk
// that a write relies on while it runs is kept. Versions that prune
// removed stop keeping their chunks here.
func (s *Store) Collect(ctx context.Context, o blockstore.GCOptions) (blockstore.GCResult, error) {
	if err := s.guard.Err(); err != nil {
		return blockstore.GCResult{}, err
	}
	return s.chunks.Collect(ctx, markChunks, o)
}

// markChunks calls fn with every chunk a version value in snap
// references: bases and patches, of visible versions and of the parts of
// versions being written. A value it cannot read stops the collection:
// what it would reference is unknown.
func markChunks(snap *pebble.Snapshot, fn func(blockstore.ID)) error {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{tagVersion}, UpperBound: []byte{tagVersion + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeValue(it.Value())
		if err != nil {
			return fmt.Errorf("timeline: gc: %v: %w", formatKey(it.Key()), err)
		}
		e.chunks(fn)
	}
	return it.Error()
}
