package timeline

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
)

// Range records. A TRIM or WRITE_ZEROES of many whole blocks is recorded
// as one record, 'z' | volume | time -> [first, end) (keys.go), instead of
// a hole version per block (16,384 keys for 1 GiB of 64 KiB blocks).
//
// A range record is a hole base for each block it covers, stamped with
// its version's time. Block b of a volume as of T is its newest base at or
// before T, a range record covering b counting as one, with the patches
// stamped after that base and at or before T applied over it; a range
// record newer than every own version of b hides the parent of a clone
// too. The partial blocks at a range's edges are written as a write's
// are, as patches or whole blocks, in the same version.
//
// Range records are rare, and every read would otherwise seek for them:
// each volume keeps its own in memory, in its metadata (Volume.ranges),
// with a map of the newest record over each block (Volume.cover), loaded
// at Open and replaced with the metadata when a version commits or Prune
// drops some. Reading costs nothing for a volume with none; as of its
// newest record or later (a head), a binary search of the map; as of an
// older instant, a look through the records, newest first. Short runs of
// whole blocks (fewer than Store.rangeBlocks) are written block by block,
// so that the records stay few and large.

// defaultRangeBlocks is the least run of whole blocks that zeroing records
// as a range record; shorter runs get a hole version per block.
const defaultRangeBlocks = 16

// zeroRange is a range record: blocks [first, end) read as zeroes from t
// on, until a newer version of each.
type zeroRange struct {
	t          int64
	first, end uint64
	kind       VersionKind
}

// Range record values. Part of the on-disk format:
//
//	version u8 (1) | kind u8 | first block u64 | end block u64
const rangeValueLen = 1 + 1 + 8 + 8

func (r zeroRange) marshal() []byte {
	b := []byte{1, byte(r.kind)}
	b = binary.BigEndian.AppendUint64(b, r.first)
	return binary.BigEndian.AppendUint64(b, r.end)
}

func unmarshalRange(t int64, b []byte) (zeroRange, error) {
	if len(b) != rangeValueLen || b[0] != 1 {
		return zeroRange{}, fmt.Errorf("timeline: bad range record (%d bytes)", len(b))
	}
	r := zeroRange{t: t, kind: VersionKind(b[1]), first: binary.BigEndian.Uint64(b[2:]), end: binary.BigEndian.Uint64(b[10:])}
	if r.first >= r.end {
		return zeroRange{}, fmt.Errorf("timeline: bad range record [%d, %d)", r.first, r.end)
	}
	return r, nil
}

// coverSeg says that blocks [first, end) read the range record stamped t
// as of the newest range record on: it is the newest over them.
type coverSeg struct {
	first, end uint64
	t          int64
}

// overlay returns cover (sorted, disjoint) with r, newer than every
// record in it, laid over it.
func overlay(cover []coverSeg, r zeroRange) []coverSeg {
	out := make([]coverSeg, 0, len(cover)+2)
	i := 0
	for i < len(cover) && cover[i].end <= r.first {
		out = append(out, cover[i])
		i++
	}
	if i < len(cover) && cover[i].first < r.first {
		out = append(out, coverSeg{cover[i].first, r.first, cover[i].t})
	}
	out = append(out, coverSeg{r.first, r.end, r.t})
	for ; i < len(cover) && cover[i].first < r.end; i++ {
		if cover[i].end > r.end {
			out = append(out, coverSeg{r.end, cover[i].end, cover[i].t})
		}
	}
	return append(out, cover[i:]...)
}

// setRanges installs rs (oldest first) as v's range records, with the
// map of the newest over each block.
func (v *Volume) setRanges(rs []zeroRange) {
	var cover []coverSeg
	for _, r := range rs {
		cover = overlay(cover, r)
	}
	v.ranges, v.cover = slices.Clip(rs), cover
}

// addRange adds r, newer than every record of v.
func (v *Volume) addRange(r zeroRange) {
	rs := make([]zeroRange, len(v.ranges), len(v.ranges)+1)
	copy(rs, v.ranges)
	v.ranges, v.cover = append(rs, r), overlay(v.cover, r)
}

// floors sets floor[i] to the time of the newest range record of v at or
// before t that covers block b0+i (0 where none does) and reports whether
// any does. floor holds zeroes on entry. As of the newest record or later
// (a head, a recent instant), a binary search of the map of the newest
// over each block answers; an older instant looks through the records.
func (v *Volume) floors(t int64, b0 uint64, floor []int64) bool {
	rs := v.ranges
	if len(rs) == 0 {
		return false
	}
	b1 := b0 + uint64(len(floor))
	any := false
	if t >= rs[len(rs)-1].t {
		c := v.cover
		i := sort.Search(len(c), func(i int) bool { return c[i].end > b0 })
		for ; i < len(c) && c[i].first < b1; i++ {
			for b := max(c[i].first, b0); b < min(c[i].end, b1); b++ {
				floor[b-b0] = c[i].t
			}
			any = true
		}
		return any
	}
	left := len(floor)
	// Oldest first: the newest covering record wins, so walk newest first
	// and fill only blocks not yet set.
	i := sort.Search(len(rs), func(i int) bool { return rs[i].t > t })
	for i--; i >= 0 && left > 0; i-- {
		r := &rs[i]
		lo, hi := max(r.first, b0), min(r.end, b1)
		for b := lo; b < hi; b++ {
			if floor[b-b0] == 0 {
				floor[b-b0] = r.t
				left--
				any = true
			}
		}
	}
	return any
}

// loadRanges puts every volume's range records into its metadata.
func (s *Store) loadRanges() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagRange}, UpperBound: []byte{tagRange + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	byVol := map[uint64][]zeroRange{}
	for it.First(); it.Valid(); it.Next() {
		vol, t, ok := parseRangeKey(it.Key())
		if !ok {
			return fmt.Errorf("timeline: bad range key %x", it.Key())
		}
		r, err := unmarshalRange(t, it.Value())
		if err != nil {
			return err
		}
		vs, ok := s.mu.vols[vol]
		if !ok || t > vs.meta.Last {
			// Removal deletes a volume's records with its metadata, in
			// one batch, and a record commits with its version: neither
			// is left by this build.
			s.log.Warn("a range record of no visible version is ignored", "volume", vol, "time", t)
			continue
		}
		byVol[vol] = append(byVol[vol], r) // keys sort oldest first
	}
	for vol, rs := range byVol {
		s.mu.vols[vol].meta.setRanges(rs)
	}
	return it.Error()
}

// rangeNeeds works out which range records of a volume Prune keeps: a
// record is read by a kept instant K when some block it covers has no
// newer base (own hole or chunk version, or range record) stamped after
// it and at or before K. It is enough to look at the oldest kept instant
// at or after the record: newer ones only have more bases.
type rangeNeeds struct {
	rs    []zeroRange
	kstar []int64  // the oldest kept instant at or after each record
	gaps  [][]run  // the blocks of each that no newer record up to kstar covers
	left  []uint64 // how many of those blocks no own base supersedes yet
}

func newRangeNeeds(rs []zeroRange, kept []int64) *rangeNeeds {
	n := &rangeNeeds{rs: rs, kstar: make([]int64, len(rs)), gaps: make([][]run, len(rs)), left: make([]uint64, len(rs))}
	for i, r := range rs {
		k := sort.Search(len(kept), func(k int) bool { return kept[k] >= r.t })
		if k == len(kept) {
			// No kept instant reads it: it is after the history pruned.
			n.kstar[i] = 0
			continue
		}
		n.kstar[i] = kept[k]
		var over []run // newer records, up to kstar, over r
		for _, o := range rs[i+1:] {
			if o.t > n.kstar[i] {
				break
			}
			if lo, hi := max(o.first, r.first), min(o.end, r.end); lo < hi {
				over = append(over, run{lo, hi - lo})
			}
		}
		sort.Slice(over, func(a, b int) bool { return over[a].start < over[b].start })
		at := r.first
		for _, o := range over {
			if o.start > at {
				n.gaps[i] = append(n.gaps[i], run{at, o.start - at})
			}
			at = max(at, o.start+o.n)
		}
		if at < r.end {
			n.gaps[i] = append(n.gaps[i], run{at, r.end - at})
		}
		for _, g := range n.gaps[i] {
			n.left[i] += g.n
		}
	}
	return n
}

// covering returns the times of the records covering block b, oldest
// first, into dst.
func (n *rangeNeeds) covering(dst []int64, b uint64) []int64 {
	for _, r := range n.rs {
		if r.first <= b && b < r.end {
			dst = append(dst, r.t)
		}
	}
	return dst
}

// block notes the own versions of block b (times and whether each is a
// base, newest first): a base stamped after a record and up to its kstar
// supersedes it for b.
func (n *rangeNeeds) block(b uint64, times []int64, base []bool) {
	for i, r := range n.rs {
		if n.left[i] == 0 || b < r.first || b >= r.end || !inRuns(n.gaps[i], b) {
			continue
		}
		for j, t := range times {
			if base[j] && t > r.t && t <= n.kstar[i] {
				n.left[i]--
				break
			}
		}
	}
}

// dead returns the times of the records that no kept instant reads.
func (n *rangeNeeds) dead() []int64 {
	var out []int64
	for i, r := range n.rs {
		if n.kstar[i] != 0 && n.left[i] == 0 {
			out = append(out, r.t)
		}
	}
	return out
}

func inRuns(rs []run, b uint64) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].start+rs[i].n > b })
	return i < len(rs) && rs[i].start <= b
}

// clearRange forgets the runs of blocks [first, end), which a range
// record made holes: a block the map does not hold has none when it is
// complete, and is looked up otherwise.
func (p *patchRuns) clearRange(first, end uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if uint64(len(p.n)) < end-first {
		for b := range p.n {
			if b >= first && b < end {
				delete(p.n, b)
			}
		}
		return
	}
	for b := first; b < end; b++ {
		delete(p.n, b)
	}
}
