package blockstore

import (
	"hash/crc32"
	"sync/atomic"
)

// runBufferBytes holds the encoded records of a PutMany of 4 MiB of
// blocks (an import's segment) with room to spare.
const runBufferBytes = 4<<20 + 64<<10

// run is the records of one PutMany on their way to a pack: headers and
// encoded payloads in buf, raw payloads left in the caller's memory, so
// that they reach the pack with one pwritev and are not copied first.
type run struct {
	bp     *[]byte
	buf    []byte
	pieces []piece // in pack order
	size   int64
}

// piece is buf[lo:hi], or ext.
type piece struct {
	lo, hi int
	ext    []byte
}

func newRun() *run {
	bp := runPool.Get()
	return &run{bp: bp, buf: (*bp)[:0]}
}

func (r *run) release() { runPool.Put(r.bp) }

// take adds buf[lo:] to the pieces.
func (r *run) take(lo int) {
	hi := len(r.buf)
	r.size += int64(hi - lo)
	if k := len(r.pieces) - 1; k >= 0 && r.pieces[k].ext == nil && r.pieces[k].hi == lo {
		r.pieces[k].hi = hi
		return
	}
	r.pieces = append(r.pieces, piece{lo: lo, hi: hi})
}

var noHeader [recordHeaderSize]byte

// add appends the record of chunk id (decodedLen bytes, encoded as
// payload with codec) and returns where it starts in the run and its
// location, which lacks the pack and offset. With inPlace, the payload is
// written from where it is, and must stay unchanged until the run is.
func (r *run) add(id ID, decodedLen int, payload []byte, codec Codec, inPlace bool) (int64, location) {
	at, lo := r.size, len(r.buf)
	r.buf = append(r.buf, noHeader[:]...)
	if !inPlace {
		r.buf = append(r.buf, payload...)
	}
	loc := sealHeader(r.buf[lo:lo+recordHeaderSize], id, decodedLen, payload, codec)
	r.take(lo)
	if inPlace {
		r.pieces = append(r.pieces, piece{ext: payload})
		r.size += int64(len(payload))
	}
	return at, loc
}

// addBundle appends a bundle record of the chunks datas (digests ids), or
// returns false, adding nothing, when they do not compress.
func (r *run) addBundle(cs *codecs, ids []ID, datas [][]byte, decodedLen int) (int64, location, bool) {
	at, lo := r.size, len(r.buf)
	var ok bool
	r.buf, ok = cs.appendBundle(append(r.buf, noHeader[:]...), ids, datas)
	if !ok {
		r.buf = r.buf[:lo]
		return 0, location{}, false
	}
	loc := sealHeader(r.buf[lo:lo+recordHeaderSize], ids[0], decodedLen, r.buf[lo+recordHeaderSize:], CodecBundle)
	r.take(lo)
	return at, loc, true
}

// sealHeader fills in hdr, the header of a record with payload, and
// returns the record's location, which lacks the pack and offset.
func sealHeader(hdr []byte, id ID, decodedLen int, payload []byte, codec Codec) location {
	h := recordHeader{payloadLen: uint32(len(payload)), decodedLen: uint32(decodedLen), codec: codec, id: id}
	h.marshal(hdr)
	h.crc = crc32.Update(recordCRC(hdr), castagnoli, payload)
	h.marshal(hdr)
	return location{payloadLen: h.payloadLen, decodedLen: h.decodedLen, codec: codec}
}

// maxS2Chunk is the largest chunk stored alone that a zstd store
// compresses with s2: zstd's setup costs more than its work on a few KiB
// (45 µs for 4 KiB, a fifth of a 4 KiB clone write's CPU), s2 passes over
// them in one or two, and such chunks (the bytes of a small write, see
// timeline's patches) are a small part of a store.
const maxS2Chunk = 16 << 10

// addChunk appends the record of chunk id stored whole, compressed with
// the store's codec where that pays (s2 for a small chunk of a zstd
// store; see smallTries for when a small one is not even tried).
func (r *run) addChunk(s *Store, id ID, data []byte) (int64, location) {
	c := s.codec
	small := len(data) <= maxS2Chunk
	if c == CodecZstd && small {
		c = CodecS2
	}
	if c == CodecRaw || small && !s.small.try() {
		return r.add(id, len(data), data, CodecRaw, true)
	}
	sp := bufPool.Get()
	defer bufPool.Put(sp)
	payload, codec := s.codecs.encode(c, data, (*sp)[:0])
	if small {
		s.small.tried(codec != CodecRaw)
	}
	return r.add(id, len(data), payload, codec, codec == CodecRaw)
}

// smallTries decides whether a small chunk stored alone (a small write's
// bytes: a patch, see timeline) is worth compressing. Their compression
// was a ninth of a protected disk's 4 KiB random write's CPU, and on an
// encrypted disk, or one that holds compressed files, it saves nothing.
// So after smallMisses such chunks in a row that did not shrink, only
// one in smallProbe is tried, and the first that shrinks has every small
// chunk tried again. A compressible chunk among the skipped is stored
// raw: some space (small writes' bytes, a small part of a store; a
// block folded is stored whole and compressed), never other bytes.
type smallTries struct {
	misses  atomic.Int64 // small chunks in a row that did not shrink
	skipped atomic.Int64 // small chunks not tried, all told
}

const (
	smallMisses = 64
	smallProbe  = 16
)

// try says whether to compress the next small chunk.
func (t *smallTries) try() bool {
	return t.misses.Load() < smallMisses || t.skipped.Add(1)%smallProbe == 0
}

// tried records whether a small chunk that was tried shrank.
func (t *smallTries) tried(shrank bool) {
	if shrank {
		t.misses.Store(0)
	} else {
		t.misses.Add(1)
	}
}
