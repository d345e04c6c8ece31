package blockstore

import (
	"bytes"
	"fmt"
	"runtime"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sync/errgroup"
)

// maxSpan bounds one coalesced read of neighbouring records.
const maxSpan = 4 << 20

// ManyGetter reads several chunks at once.
type ManyGetter interface {
	GetMany(ids []ID) ([][]byte, error)
}

var _ ManyGetter = (*Store)(nil)

// GetMany returns the decoded bytes of each chunk of ids, verified as Get
// verifies them. Records that lie next to each other in a pack, as the
// blocks of one import do, are read with one pread; records are decoded in
// parallel.
func (s *Store) GetMany(ids []ID) ([][]byte, error) {
	locs := make([]location, len(ids))
	for i, id := range ids {
		v, closer, err := s.db.Get(indexKey(id))
		if err == pebble.ErrNotFound {
			return nil, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("blockstore: index lookup %s: %w", id, err)
		}
		locs[i], err = unmarshalLocation(v)
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("chunk %s: %w", id, err)
		}
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		la, lb := locs[order[a]], locs[order[b]]
		return la.pack < lb.pack || la.pack == lb.pack && la.offset < lb.offset
	})
	out := make([][]byte, len(ids))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for start := 0; start < len(order); {
		end, span := start+1, locs[order[start]].size()
		for end < len(order) {
			prev, next := locs[order[end-1]], locs[order[end]]
			if next.pack != prev.pack || next.offset != prev.offset+prev.size() || span+next.size() > maxSpan {
				break
			}
			span += next.size()
			end++
		}
		group := order[start:end]
		g.Go(func() error { return s.readGroup(ids, locs, group, span, out) })
		start = end
	}
	return out, g.Wait()
}

// readGroup reads the neighbouring records of group with one pread and
// verifies and decodes each into out.
func (s *Store) readGroup(ids []ID, locs []location, group []int, span int64, out [][]byte) error {
	first := locs[group[0]]
	f, err := s.file(first.pack)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", ids[group[0]], err)
	}
	buf := make([]byte, span)
	if n, err := f.ReadAt(buf, first.offset); int64(n) != span {
		return fmt.Errorf("chunk %s: %w: pack %d truncated at %d: %v", ids[group[0]], ErrCorrupt, first.pack, first.offset, err)
	}
	decode := func(i int) error {
		rec := buf[locs[i].offset-first.offset:][:locs[i].size()]
		data, err := s.verify(ids[i], locs[i], rec)
		if err == nil && locs[i].codec == CodecRaw && len(group) > 1 {
			// A raw chunk is a slice of buf; its own copy keeps a cached
			// chunk from pinning the whole span.
			data = bytes.Clone(data)
		}
		out[i] = data
		return err
	}
	if len(group) == 1 {
		return decode(group[0])
	}
	// Decoding is the costly part: spread it over the cores, so that even
	// one large read (a FUSE request of 1 MiB) uses them all.
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, i := range group {
		g.Go(func() error { return decode(i) })
	}
	return g.Wait()
}

// size is the length of the record, header included.
func (l location) size() int64 { return recordHeaderSize + int64(l.payloadLen) }
