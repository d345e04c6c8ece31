package timeline

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// refKind says what a block holds as of an instant.
type refKind uint8

const (
	refAbsent refKind = iota // no version in this volume: ask the parent, or zero
	refZero                  // an all-zero block
	refChunk                 // a chunk in the store
)

// blockRef is what one block holds as of an instant.
type blockRef struct {
	kind refKind
	id   blockstore.ID
}

func decodeValue(v []byte) (blockRef, error) {
	switch {
	case len(v) == 1 && v[0] == valueZero:
		return blockRef{kind: refZero}, nil
	case len(v) == 33 && v[0] == valueChunk:
		var r blockRef
		r.kind = refChunk
		copy(r.id[:], v[1:])
		return r, nil
	}
	return blockRef{}, fmt.Errorf("timeline: bad version value (%d bytes)", len(v))
}

func encodeValue(r blockRef) []byte {
	if r.kind == refZero {
		return []byte{valueZero}
	}
	return append([]byte{valueChunk}, r.id[:]...)
}

// resolve fills out[i] with what block b0+i of v holds as of t, following
// clones to their parents. Blocks no volume in the chain wrote read as
// zero (refAbsent stays only when v's chain ends).
func (s *Store) resolve(v *Volume, t int64, b0 uint64, out []blockRef) error {
	for i := range out {
		out[i] = blockRef{}
	}
	if err := s.resolveOwn(v.ID, t, b0, out); err != nil {
		return err
	}
	if !v.IsClone() {
		return nil
	}
	// Blocks with no version of their own read from the parent as of the
	// fork.
	lo, hi := -1, -1
	for i, r := range out {
		if r.kind == refAbsent {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if lo < 0 {
		return nil
	}
	parent, err := s.VolumeByID(v.Parent)
	if err != nil {
		return fmt.Errorf("timeline: clone %s lost its parent: %w", v.Name, err)
	}
	sub := make([]blockRef, hi-lo+1)
	if err := s.resolve(parent, min(t, v.ForkTime), b0+uint64(lo), sub); err != nil {
		return err
	}
	for i := lo; i <= hi; i++ {
		if out[i].kind == refAbsent {
			out[i] = sub[i-lo]
		}
	}
	return nil
}

// resolveOwn looks only at vol's own versions, with one iterator. A single
// block uses SeekPrefixGE (bloom filters skip tables); a range uses SeekGE,
// which steps over blocks that have no versions at all.
func (s *Store) resolveOwn(vol uint64, t int64, b0 uint64, out []blockRef) error {
	n := uint64(len(out))
	var kbuf [versionKeyLen]byte
	lo := versionKey(nil, vol, b0, t)
	hi := versionKey(nil, vol, b0+n, int64(-1)) // ^uint64(-1) == 0: the smallest key of block b0+n
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo[:versionPrefixLen], UpperBound: hi[:versionPrefixLen]})
	if err != nil {
		return err
	}
	defer it.Close()
	if n == 1 {
		if it.SeekPrefixGE(lo) {
			r, err := decodeValue(it.Value())
			if err != nil {
				return err
			}
			out[0] = r
		}
		return it.Error()
	}
	b := b0
	for valid := it.SeekGE(lo); valid; {
		_, vb, vt, ok := parseVersionKey(it.Key())
		if !ok {
			return fmt.Errorf("timeline: bad version key %x", it.Key())
		}
		if vt <= t {
			r, err := decodeValue(it.Value())
			if err != nil {
				return err
			}
			out[vb-b0] = r
			b = vb + 1
		} else {
			b = vb
		}
		if b >= b0+n {
			break
		}
		valid = it.SeekGE(versionKey(kbuf[:0], vol, b, t))
	}
	return it.Error()
}
