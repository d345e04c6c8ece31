package timeline

import (
	"github.com/cockroachdb/pebble/v2"
)

// VersionInfo describes one recorded version.
type VersionInfo struct {
	Time   int64       `json:"time"`
	Kind   VersionKind `json:"-"`
	Blocks int64       `json:"blocks"`
	Bytes  int64       `json:"bytes"`
	Stored int64       `json:"stored"`
	Size   int64       `json:"size"`
}

// Log lists the versions of vol recorded in [since, until], oldest first.
func (s *Store) Log(vol uint64, since, until int64) ([]VersionInfo, error) {
	var out []VersionInfo
	err := s.EachVersion(vol, since, until, func(v VersionInfo) { out = append(out, v) })
	return out, err
}

// EachVersion calls fn with each version of vol recorded in [since,
// until], oldest first, in one pass over the index and without keeping
// them: for summaries of long histories.
func (s *Store) EachVersion(vol uint64, since, until int64, fn func(VersionInfo)) error {
	lo := timeKey(vol, max(since, 0), 0)
	hi := timeKey(vol+1, 0, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		_, t, part, ok := parseTimeKey(it.Key())
		if !ok || part != summaryPart {
			continue
		}
		if t > until {
			break
		}
		sum, err := unmarshalSummary(it.Value())
		if err != nil {
			return err
		}
		fn(VersionInfo{Time: t, Kind: sum.Kind, Blocks: int64(sum.Blocks),
			Bytes: int64(sum.Bytes), Stored: int64(sum.Stored), Size: int64(sum.Size)})
	}
	return it.Error()
}

// Range is a run of bytes.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Diff returns the byte ranges whose contents differ between vol as of t1
// and as of t2 (both must be within the volume's history).
func (s *Store) Diff(vol uint64, t1, t2 int64) ([]Range, error) {
	m, err := s.VolumeByID(vol)
	if err != nil {
		return nil, err
	}
	bs := m.BlockSize
	size := max(m.SizeAt(t1), m.SizeAt(t2))
	nblocks := uint64((size + bs - 1) / bs)
	a := make([]blockRef, maxExtentBlocks)
	b := make([]blockRef, maxExtentBlocks)
	var out []Range
	for first := uint64(0); first < nblocks; first += maxExtentBlocks {
		n := min(maxExtentBlocks, nblocks-first)
		if err := s.resolve(m, t1, first, a[:n]); err != nil {
			return nil, err
		}
		if err := s.resolve(m, t2, first, b[:n]); err != nil {
			return nil, err
		}
		for i := range n {
			if same(a[i], b[i]) {
				continue
			}
			off := int64(first+i) * bs
			length := min(bs, size-off)
			if k := len(out); k > 0 && out[k-1].Offset+out[k-1].Length == off {
				out[k-1].Length += length
				continue
			}
			out = append(out, Range{Offset: off, Length: length})
		}
	}
	return out, nil
}

// same reports whether a and b are known to read the same. Patched
// blocks are the same only when made of the same base and patches.
func same(a, b blockRef) bool {
	if a.hole() && b.hole() {
		return true // both read as zeroes
	}
	if a.kind != b.kind || a.id != b.id || len(a.patches) != len(b.patches) {
		return false
	}
	for i := range a.patches {
		if !a.patches[i].same(b.patches[i]) {
			return false
		}
	}
	return true
}
