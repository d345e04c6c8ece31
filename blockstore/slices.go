package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// Shifted duplicates. Fixed blocks deduplicate only data that sits at the
// same offset within a block; a file copied inside a guest's file system
// lands on other 4 KiB pages, shifted against the volume's blocks, and
// every block of the copy differs from every block of the original. Such
// a block is stored as a slices record: runs of bytes taken from chunks
// already stored, plus the literal bytes that are new.
//
// To find the runs, chunks stored whole leave fingerprints of some of
// their 4 KiB pages in the index: about one page in four, picked by the
// page's own hash so that the same page is picked wherever it lies, plus
// their first and last pages. A new block looks up its picked pages; each
// hit names a chunk and where the page sits in it, and the block's bytes
// are compared with that chunk's bytes around the page. A block that
// found a run this way then looks up each of its other pages, which finds
// the short runs at its edges: the head or tail of the source's
// neighbour, through that chunk's first or last page. Only bytes that
// compare equal are referenced, so a fingerprint collision, chance or
// crafted, costs a read and nothing else.
//
// Reads of a slices chunk check the assembled bytes against a CRC-32C of
// the chunk's bytes that the record keeps, as every record's stored bytes
// are checked: the record and each source pass their own checks first,
// so the sum catches a wrong assembly, not damage. Records of version 1
// have no such sum; their assembled bytes are checked against the
// chunk's BLAKE3 digest, which costs ten times as much. A chunk rebuilt
// from sources stored raw costs about as much as reading them, so the
// cache above does not keep it (see Cache.ReadMany).

// FingerprintPrefix is the first byte of page fingerprint keys in the
// index. Part of the on-disk format:
//
//	'f' | xxhash64 of a 4 KiB page u64  ->  digest prefix [8] | page u16
//
// The value names the chunk by the first 8 bytes of its digest, which
// the chunk index ('c' keys, sorted by digest) resolves; there are about
// five fingerprints per chunk, and whole digests made them the larger
// part of the index. Stores written before keep values with the whole
// digest (chunk digest [32] | page u16), which are read as well.
const FingerprintPrefix = 'f'

// printIDLen is how much of a chunk's digest a fingerprint keeps.
const printIDLen = 8

const (
	pageSize = 4096
	// A page is fingerprinted when the low bits of its hash are zero.
	fingerprintMask = 3
	// Blocks smaller than this are not worth splitting.
	minSlicedBlock = 4 * pageSize
	// A run shorter than a page is not worth a reference.
	minRun = pageSize
)

// CodecSlices marks a slices record. Its payload (part of the on-disk
// format):
//
//	version u8 (2) | literal codec u8 | segments u16 |
//	CRC-32C (Castagnoli) of the chunk's bytes u32 |
//	segments, each: length u32 | source u8 (0 literal, 1 chunk) |
//	                for a chunk: offset u32 | digest [32] |
//	the literal bytes of all literal segments in order, encoded with the
//	literal codec
//
// Version 1, written before, has no CRC field. The segments' lengths add
// up to the decoded length. A referenced chunk is never itself a slices
// record.
const CodecSlices Codec = 3

type segment struct {
	length uint32
	ref    bool
	offset uint32 // in the source chunk
	src    ID
}

func fingerprintKey(h uint64) []byte {
	k := make([]byte, 9)
	k[0] = FingerprintPrefix
	binary.BigEndian.PutUint64(k[1:], h)
	return k
}

// pageHashes are the xxhash64 of each whole 4 KiB page of a block,
// computed once for both looking up and leaving fingerprints.
type pageHashes struct {
	h    []uint64
	zero []bool // an all-zero page: never fingerprinted
}

var zeroPage [pageSize]byte

func hashPages(data []byte) pageHashes {
	n := len(data) / pageSize
	ph := pageHashes{h: make([]uint64, n), zero: make([]bool, n)}
	for p := range n {
		pg := data[p*pageSize : (p+1)*pageSize]
		if bytes.Equal(pg, zeroPage[:]) {
			ph.zero[p] = true
			continue
		}
		ph.h[p] = xxhash.Sum64(pg)
	}
	return ph
}

// each calls fn for each non-zero page that is picked by its hash, or,
// with edges, is the first or last page, or, with all, any page.
func (ph pageHashes) each(edges, all bool, fn func(page int, h uint64)) {
	last := len(ph.h) - 1
	for p, h := range ph.h {
		picked := all || h&fingerprintMask == 0 || edges && (p == 0 || p == last)
		if picked && !ph.zero[p] {
			fn(p, h)
		}
	}
}

// fingerprintEntries returns the index entries for the picked pages of a
// chunk stored whole.
func fingerprintEntries(id ID, data []byte, ph pageHashes) [][2][]byte {
	if len(data) < minSlicedBlock {
		return nil
	}
	var out [][2][]byte
	ph.each(true, false, func(page int, h uint64) {
		v := make([]byte, printIDLen+2)
		copy(v, id[:printIDLen])
		binary.BigEndian.PutUint16(v[printIDLen:], uint16(page))
		out = append(out, [2][]byte{fingerprintKey(h), v})
	})
	return out
}

// match is a run of the new block equal to bytes of a stored chunk.
type match struct {
	lo, hi int // in the new block
	src    ID
	shift  int // new offset - source offset
}

// findSlices looks for runs of data already stored in other chunks and
// returns the segments that cover data, or nil when it found none.
// lookup resolves a fingerprint (also those of chunks this transaction
// stored); read returns a chunk's bytes and a function to call once done
// with them.
func findSlices(data []byte, ph pageHashes, lookup func(h uint64) (ID, int, bool), read func(ID) ([]byte, func(), error)) []segment {
	if len(data) < minSlicedBlock {
		return nil
	}
	// Many pages of a block find the same source: read it once.
	sources := map[ID][]byte{}
	var releases []func()
	defer func() {
		for _, release := range releases {
			release()
		}
	}()
	readOnce := func(id ID) ([]byte, error) {
		if d, ok := sources[id]; ok {
			return d, nil
		}
		d, release, err := read(id)
		if err == nil {
			sources[id] = d
			releases = append(releases, release)
		}
		return d, err
	}
	var matches []match
	covered := func(off int) bool {
		for _, m := range matches {
			if off >= m.lo && off < m.hi {
				return true
			}
		}
		return false
	}
	try := func(page int, h uint64) {
		if covered(page * pageSize) {
			return // a run found already takes this page
		}
		src, srcPage, ok := lookup(h)
		if !ok {
			return
		}
		shift := (page - srcPage) * pageSize
		sdata, err := readOnce(src)
		if err != nil {
			return // gone or damaged: store the bytes instead
		}
		// The run: the page itself, grown both ways while bytes agree.
		lo, hi := page*pageSize, (page+1)*pageSize
		if hi-shift > len(sdata) || lo-shift < 0 || !bytes.Equal(data[lo:hi], sdata[lo-shift:hi-shift]) {
			return
		}
		for lo > 0 && lo-shift > 0 && data[lo-1] == sdata[lo-1-shift] {
			lo--
		}
		for hi < len(data) && hi-shift < len(sdata) && data[hi] == sdata[hi-shift] {
			hi++
		}
		matches = append(matches, match{lo: lo, hi: hi, src: src, shift: shift})
	}
	ph.each(false, false, try)
	if len(matches) > 0 { // a copy: look for the short runs at its edges
		ph.each(false, true, try)
	}
	if len(matches) == 0 {
		return nil
	}
	// The longest runs first; later ones keep only what is still free.
	sort.Slice(matches, func(a, b int) bool { return matches[a].hi-matches[a].lo > matches[b].hi-matches[b].lo })
	var taken []match
	for _, m := range matches {
		for _, t := range taken {
			if m.lo < t.hi && t.lo < m.hi { // overlap: keep the larger free side
				if m.lo < t.lo && t.lo-m.lo >= m.hi-t.hi {
					m.hi = t.lo
				} else {
					m.lo = max(m.lo, t.hi)
				}
			}
		}
		if m.hi-m.lo >= minRun {
			taken = append(taken, m)
		}
	}
	sort.Slice(taken, func(a, b int) bool { return taken[a].lo < taken[b].lo })
	if len(taken) == 0 {
		return nil
	}
	var segs []segment
	at := 0
	for _, m := range taken {
		if m.lo > at {
			segs = append(segs, segment{length: uint32(m.lo - at)})
		}
		segs = append(segs, segment{length: uint32(m.hi - m.lo), ref: true, offset: uint32(m.lo - m.shift), src: m.src})
		at = m.hi
	}
	if at < len(data) {
		segs = append(segs, segment{length: uint32(len(data) - at)})
	}
	return segs
}

// encodeSlices builds a slices payload for data from segs, encoding the
// literal bytes with c.
func (cs *codecs) encodeSlices(c Codec, data []byte, segs []segment) []byte {
	out := make([]byte, slicesHeaderSize, slicesHeaderSize+len(segs)*41)
	out[0] = 2
	binary.BigEndian.PutUint16(out[2:], uint16(len(segs)))
	binary.BigEndian.PutUint32(out[4:], crc32.Checksum(data, castagnoli))
	var lit []byte
	at := 0
	for _, sg := range segs {
		var h [4 + 1 + 4 + 32]byte
		binary.BigEndian.PutUint32(h[0:], sg.length)
		if sg.ref {
			h[4] = 1
			binary.BigEndian.PutUint32(h[5:], sg.offset)
			copy(h[9:], sg.src[:])
			out = append(out, h[:]...)
		} else {
			out = append(out, h[:5]...)
			lit = append(lit, data[at:at+int(sg.length)]...)
		}
		at += int(sg.length)
	}
	payload, lc := cs.encode(c, lit, make([]byte, 0, len(lit)))
	out[1] = byte(lc)
	return append(out, payload...)
}

// slicesHeaderSize is the fixed start of a version 2 slices payload.
const slicesHeaderSize = 8

// slicesSum is what the assembled bytes of a slices chunk are checked
// against: a CRC-32C (version 2), or, when hasCRC is false, the chunk's
// digest (version 1).
type slicesSum struct {
	hasCRC bool
	crc    uint32
}

// parseSlices decodes a slices payload into its segments, its literal
// bytes and the sum its assembled bytes must match.
func (cs *codecs) parseSlices(payload []byte, decodedLen int) ([]segment, []byte, slicesSum, error) {
	var sum slicesSum
	bad := func(why string) ([]segment, []byte, slicesSum, error) {
		return nil, nil, sum, fmt.Errorf("%w: slices record: %s", ErrCorrupt, why)
	}
	if len(payload) < 4 || payload[0] < 1 || payload[0] > 2 {
		return bad("unknown version")
	}
	lc := Codec(payload[1])
	if lc == CodecSlices {
		return bad("literal codec is slices")
	}
	n := int(binary.BigEndian.Uint16(payload[2:]))
	p := payload[4:]
	if payload[0] == 2 {
		if len(p) < 4 {
			return bad("truncated header")
		}
		sum = slicesSum{hasCRC: true, crc: binary.BigEndian.Uint32(p)}
		p = p[4:]
	}
	segs := make([]segment, 0, n)
	total, litLen := 0, 0
	for range n {
		if len(p) < 5 {
			return bad("truncated segment")
		}
		sg := segment{length: binary.BigEndian.Uint32(p), ref: p[4] == 1}
		if p[4] > 1 {
			return bad("unknown segment source")
		}
		p = p[5:]
		if sg.ref {
			if len(p) < 36 {
				return bad("truncated segment")
			}
			sg.offset = binary.BigEndian.Uint32(p)
			copy(sg.src[:], p[4:36])
			p = p[36:]
		} else {
			litLen += int(sg.length)
		}
		total += int(sg.length)
		if total > decodedLen {
			return bad("segments longer than the chunk")
		}
		segs = append(segs, sg)
	}
	if total != decodedLen {
		return bad("segments shorter than the chunk")
	}
	lit, err := cs.decode(lc, p, litLen, nil)
	if err != nil {
		return nil, nil, sum, err
	}
	return segs, lit, sum, nil
}

// assemble rebuilds the bytes of slices chunk id from its payload. cheap
// reports that it cost about what reading its sources costs: a version 2
// record whose sources are all stored raw (a source in a bundle means
// decoding the bundle, a version 1 record hashing the bytes).
func (s *Store) assemble(id ID, payload []byte, decodedLen int, dst []byte) (out []byte, cheap bool, err error) {
	segs, lit, sum, err := s.codecs.parseSlices(payload, decodedLen)
	if err != nil {
		return nil, false, fmt.Errorf("chunk %s: %w", id, err)
	}
	var srcs []ID
	index := map[ID]int{}
	for _, sg := range segs {
		if _, ok := index[sg.src]; sg.ref && !ok {
			index[sg.src] = len(srcs)
			srcs = append(srcs, sg.src)
		}
	}
	// Copy each source's runs into place as it arrives; sources come
	// through a small cache, since a run of copied blocks reads each source
	// twice, one after the other.
	type run struct{ at, offset, length int }
	runs := make([][]run, len(srcs))
	out = dst[:0]
	if cap(out) < decodedLen {
		out = make([]byte, decodedLen)
	}
	out = out[:decodedLen]
	at := 0
	for _, sg := range segs {
		if sg.ref {
			k := index[sg.src]
			runs[k] = append(runs[k], run{at, int(sg.offset), int(sg.length)})
		} else {
			copy(out[at:], lit[:sg.length])
			lit = lit[sg.length:]
		}
		at += int(sg.length)
	}
	errs := make([]error, len(srcs))
	err = s.sources.ReadMany(srcs, nil, func(k int, d []byte) {
		for _, r := range runs[k] {
			if r.offset+r.length > len(d) {
				errs[k] = fmt.Errorf("%w: segment past the end of source %s", ErrCorrupt, srcs[k])
				return
			}
			copy(out[r.at:], d[r.offset:r.offset+r.length])
		}
	})
	if err == nil {
		err = errors.Join(errs...)
	}
	if err != nil {
		return nil, false, fmt.Errorf("chunk %s: source %w", id, err)
	}
	if !sum.hasCRC {
		if Sum(out) != id {
			return nil, false, fmt.Errorf("chunk %s: %w: assembled bytes do not match the digest", id, ErrCorrupt)
		}
		return out, false, nil
	}
	if crc32.Checksum(out, castagnoli) != sum.crc {
		return nil, false, fmt.Errorf("chunk %s: %w: assembled bytes do not match the record's checksum", id, ErrCorrupt)
	}
	cheap = true
	for _, src := range srcs {
		if loc, err := s.locate(src); err != nil || loc.codec != CodecRaw {
			cheap = false
			break
		}
	}
	return out, cheap, nil
}

// wholeChunks reads the sources of slices records: chunks stored whole.
// A source that is itself a slices record is damage, not a second level.
type wholeChunks struct{ s *Store }

func (w wholeChunks) Get(id ID) ([]byte, error) {
	var out []byte
	err := w.ReadMany([]ID{id}, nil, func(_ int, data []byte) { out = bytes.Clone(data) })
	return out, err
}

func (w wholeChunks) ReadMany(ids []ID, into [][]byte, fn func(int, []byte)) error {
	return w.s.readMany(ids, into, true, nil, func(i int, data []byte, _ bool) { fn(i, data) })
}

// maxSourceCache bounds the store's cache of sources of slices records.
const maxSourceCache = 8 << 20

// locate returns the index entry of id, from the cache of them if it has
// it.
func (s *Store) locate(id ID) (location, error) {
	loc, _, err := s.locateCached(id)
	return loc, err
}

// locateCached is locate that also reports whether the entry came from
// the cache.
func (s *Store) locateCached(id ID) (location, bool, error) {
	if loc, ok := s.locs.get(id); ok {
		return loc, true, nil
	}
	loc, err := s.locateIndex(id)
	if err == nil {
		s.locs.add(id, loc)
	}
	return loc, false, err
}

// locateIndex returns the index entry of id as the index has it.
func (s *Store) locateIndex(id ID) (location, error) {
	s.indexLookups.Add(1)
	v, closer, err := s.db.Get(indexKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return location{}, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return location{}, fmt.Errorf("blockstore: index lookup %s: %w", id, err)
	}
	defer closer.Close()
	loc, err := unmarshalLocation(v)
	if err != nil {
		return location{}, fmt.Errorf("chunk %s: %w", id, err)
	}
	return loc, nil
}
