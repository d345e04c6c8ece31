package timeline

import (
	"encoding/binary"
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

// blockRef is what one block holds as of an instant: a base (a hole or a
// whole-block chunk) and the patches written over it since, oldest first.
type blockRef struct {
	kind    refKind
	id      blockstore.ID
	place   blockstore.Place // where id's record lay when written, if known
	patches []patch          // nil for most blocks; never mutated once resolved
	// asm names the block put together, for a patched block (see
	// assembledID); resolve sets it.
	asm blockstore.ID
}

// patch is part of a block written by itself (see View.write): bytes
// [off, off+n) of the block are the chunk id, or zeroes.
type patch struct {
	off, n uint32
	zero   bool
	id     blockstore.ID
	place  blockstore.Place // where id's record lay when written, if known
}

// same reports whether p and q write the same bytes (their places may
// differ: a place is only a hint).
func (p patch) same(q patch) bool {
	return p.off == q.off && p.n == q.n && p.zero == q.zero && p.id == q.id
}

// hole reports whether the block reads as all zeroes for certain.
func (r *blockRef) hole() bool {
	if r.kind == refChunk {
		return false
	}
	for _, p := range r.patches {
		if !p.zero {
			return false
		}
	}
	return true
}

// plain reports whether the block is its base alone.
func (r *blockRef) plain() bool { return len(r.patches) == 0 }

// chunks calls fn with every chunk the block reads from.
func (r *blockRef) chunks(fn func(blockstore.ID)) {
	if r.kind == refChunk {
		fn(r.id)
	}
	for _, p := range r.patches {
		if !p.zero {
			fn(p.id)
		}
	}
}

// entry is one decoded version value: a base, or a patch.
type entry struct {
	ref     blockRef
	patch   patch
	isPatch bool
}

// chunks calls fn with every chunk the value names: a patch's, or its
// base's.
func (e *entry) chunks(fn func(blockstore.ID)) {
	if e.isPatch {
		if !e.patch.zero {
			fn(e.patch.id)
		}
		return
	}
	e.ref.chunks(fn)
}

const idLen = len(blockstore.ID{})

func decodeValue(v []byte) (entry, error) {
	var e entry
	var place []byte
	switch {
	case len(v) == 1 && v[0] == valueZero:
		return entry{ref: blockRef{kind: refZero}}, nil
	case len(v) >= 1+idLen && v[0] == valueChunk:
		e.ref.kind = refChunk
		copy(e.ref.id[:], v[1:])
		place = v[1+idLen:]
	case len(v) >= 9+idLen && v[0] == valuePatch:
		e = entry{isPatch: true, patch: patch{off: binary.BigEndian.Uint32(v[1:]), n: binary.BigEndian.Uint32(v[5:])}}
		copy(e.patch.id[:], v[9:])
		place = v[9+idLen:]
	case len(v) == 9 && v[0] == valueZeroPatch:
		return entry{isPatch: true, patch: patch{off: binary.BigEndian.Uint32(v[1:]), n: binary.BigEndian.Uint32(v[5:]), zero: true}}, nil
	default:
		return entry{}, fmt.Errorf("timeline: bad version value (%d bytes)", len(v))
	}
	if len(place) > 0 {
		p, err := blockstore.ParsePlace(place)
		if err != nil {
			return entry{}, fmt.Errorf("timeline: bad version value (%d bytes): %w", len(v), err)
		}
		e.ref.place, e.patch.place = p, p
	}
	return e, nil
}

func encodeValue(r blockRef) []byte {
	if r.kind == refZero {
		return []byte{valueZero}
	}
	return r.place.AppendTo(append([]byte{valueChunk}, r.id[:]...))
}

func encodePatch(p patch) []byte {
	v := appendPatch(nil, p)
	if p.zero {
		return v
	}
	return p.place.AppendTo(v)
}

// appendPatch appends p's value without its place.
func appendPatch(v []byte, p patch) []byte {
	if p.zero {
		v = append(v, valueZeroPatch)
		v = binary.BigEndian.AppendUint32(v, p.off)
		return binary.BigEndian.AppendUint32(v, p.n)
	}
	v = append(v, valuePatch)
	v = binary.BigEndian.AppendUint32(v, p.off)
	v = binary.BigEndian.AppendUint32(v, p.n)
	return append(v, p.id[:]...)
}

// resolve fills out[i] with what block b0+i of v holds as of t, following
// clones to their parents. Blocks no volume in the chain wrote read as
// zero (refAbsent stays only when v's chain ends).
func (s *Store) resolve(v *Volume, t int64, b0 uint64, out []blockRef) error {
	if err := s.resolveChain(v, t, b0, out); err != nil {
		return err
	}
	for i := range out {
		if !out[i].plain() {
			out[i].asm = assembledID(&out[i])
		}
	}
	s.hint(out)
	return nil
}

// hint hands the chunk store the places that the resolved blocks' values
// carry, so that reading them looks nothing up in its index (see
// blockstore.Place).
func (s *Store) hint(refs []blockRef) {
	var idBuf [8]blockstore.ID
	var placeBuf [8]blockstore.Place
	ids, places := idBuf[:0], placeBuf[:0]
	if len(refs) > len(idBuf) { // a long range: one allocation, not a doubling series
		ids, places = make([]blockstore.ID, 0, len(refs)), make([]blockstore.Place, 0, len(refs))
	}
	for i := range refs {
		r := &refs[i]
		if r.kind == refChunk && r.place.Known() {
			ids, places = append(ids, r.id), append(places, r.place)
		}
		for _, p := range r.patches {
			if !p.zero && p.place.Known() {
				ids, places = append(ids, p.id), append(places, p.place)
			}
		}
	}
	if len(ids) > 0 {
		s.chunks.Hint(ids, places)
	}
}

func (s *Store) resolveChain(v *Volume, t int64, b0 uint64, out []blockRef) error {
	for i := range out {
		out[i] = blockRef{}
	}
	if err := s.resolveOwn(v, t, b0, out); err != nil {
		return err
	}
	if !v.IsClone() {
		return nil
	}
	// Blocks with no base of their own read from the parent as of the
	// fork, with their own patches over it.
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
	if err := s.resolveChain(parent, min(t, v.ForkTime), b0+uint64(lo), sub); err != nil {
		return err
	}
	for i := lo; i <= hi; i++ {
		if out[i].kind != refAbsent {
			continue
		}
		own := out[i].patches
		out[i] = sub[i-lo]
		if len(own) > 0 {
			out[i].patches = append(append([]patch(nil), sub[i-lo].patches...), own...)
		}
	}
	return nil
}

// resolveOwn looks only at v's own versions and range records, with one
// iterator. A single block uses SeekPrefixGE (bloom filters skip tables);
// a range uses SeekGE, which steps over blocks that have no versions at
// all. A block that a range record covers reads it as a hole base (see
// ranges.go), never refAbsent.
func (s *Store) resolveOwn(v *Volume, t int64, b0 uint64, out []blockRef) error {
	vol := v.ID
	n := uint64(len(out))
	var floor []int64 // the newest range record over each block, if any
	if len(v.ranges) > 0 {
		var small [4]int64
		if n <= uint64(len(small)) {
			floor = small[:n]
		} else {
			floor = make([]int64, n)
		}
		if !v.floors(t, b0, floor) {
			floor = nil
		}
	}
	floorOf := func(b uint64) int64 {
		if floor == nil {
			return 0
		}
		return floor[b-b0]
	}
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
			if out[0], err = chainAt(it, vol, b0, floorOf(b0)); err != nil {
				return err
			}
		}
		if err := it.Error(); err != nil {
			return err
		}
		floorHoles(out, floor)
		return nil
	}
	b := b0
	for valid := it.SeekGE(lo); valid; {
		_, vb, vt, ok := parseVersionKey(it.Key())
		if !ok {
			return fmt.Errorf("timeline: bad version key %x", it.Key())
		}
		if vt <= t {
			if out[vb-b0], err = chainAt(it, vol, vb, floorOf(vb)); err != nil {
				return err
			}
			b = vb + 1
		} else {
			b = vb
		}
		if b >= b0+n {
			break
		}
		valid = it.SeekGE(versionKey(kbuf[:0], vol, b, t))
	}
	if err := it.Error(); err != nil {
		return err
	}
	floorHoles(out, floor)
	return nil
}

// floorHoles makes the blocks that a range record covers, and that have
// no base of their own above it, hole bases.
func floorHoles(out []blockRef, floor []int64) {
	for i, f := range floor {
		if f != 0 && out[i].kind == refAbsent {
			out[i].kind = refZero
		}
	}
}

// chainAt decodes the block version it is positioned on and, while that
// is a patch, the older versions of the same block down to the base they
// patch (refAbsent when the volume has none of its own). A version
// stamped before floor (a range record over the block; 0: none) is
// below a hole base: the chain ends there, refZero. It may leave the
// iterator anywhere.
func chainAt(it *pebble.Iterator, vol, block uint64, floor int64) (blockRef, error) {
	var newestFirst []patch
	for {
		if floor != 0 {
			if _, _, vt, _ := parseVersionKey(it.Key()); vt < floor {
				return blockRef{kind: refZero, patches: reversed(newestFirst)}, nil
			}
		}
		e, err := decodeValue(it.Value())
		if err != nil {
			return blockRef{}, err
		}
		if !e.isPatch {
			r := e.ref
			r.patches = reversed(newestFirst)
			return r, nil
		}
		newestFirst = append(newestFirst, e.patch)
		if !it.Next() {
			break
		}
		if v, b, _, ok := parseVersionKey(it.Key()); !ok || v != vol || b != block {
			break
		}
	}
	if err := it.Error(); err != nil {
		return blockRef{}, err
	}
	return blockRef{patches: reversed(newestFirst)}, nil
}

func reversed(p []patch) []patch {
	if len(p) == 0 {
		return nil
	}
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
	return p
}
