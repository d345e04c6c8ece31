package blockstore

import (
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// Get returns the decoded bytes of chunk id, verified against the CRC-32C
// in its record and its decoded length. A chunk that does not verify is an
// error wrapping ErrCorrupt; its bytes are never returned.
func (s *Store) Get(id ID) ([]byte, error) {
	loc, remembered, err := s.locateCached(id)
	if err != nil {
		return nil, err
	}
	data, err := s.read(id, loc)
	if err != nil && errors.Is(err, ErrCorrupt) { // stale? see locCache and gc.go
		if remembered {
			s.locs.forget(id)
		}
		now, lerr := s.locateIndex(id)
		if lerr != nil {
			return nil, lerr
		}
		s.locs.add(id, now) // so that a stale place is not tried again
		if now != loc || remembered {
			loc = now
			data, err = s.read(id, loc)
		}
		if err != nil && errors.Is(err, ErrCorrupt) && s.healRead(id, loc) {
			return s.read(id, loc)
		}
	}
	return data, err
}

func (s *Store) read(id ID, loc location) ([]byte, error) {
	return s.readInto(id, loc, make([]byte, loc.size()))
}

// readPooled is read into a recycled buffer, which the function it
// returns gives back; the bytes are valid until then.
func (s *Store) readPooled(id ID, loc location) ([]byte, func(), error) {
	bp := getSpan(loc.size())
	data, err := s.readInto(id, loc, (*bp)[:loc.size()])
	if err != nil {
		putSpan(bp)
		return nil, nil, err
	}
	return data, func() { putSpan(bp) }, nil
}

// readInto reads the record of chunk id into buf (its size) and returns
// its verified, decoded bytes, which may lie in buf.
func (s *Store) readInto(id ID, loc location, buf []byte) ([]byte, error) {
	f, err := s.file(loc.pack)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	if n, err := f.ReadAt(buf, loc.offset); n != len(buf) {
		if errors.Is(err, objstore.ErrUnreachable) {
			return nil, fmt.Errorf("chunk %s: pack %d: %w", id, loc.pack, err) // not damage: try later
		}
		return nil, fmt.Errorf("chunk %s: %w: pack %d truncated at %d: %v", id, ErrCorrupt, loc.pack, loc.offset, err)
	}
	return s.verify(id, loc, buf)
}

// verify checks the record buf against the index entry and its checksum
// and returns its decoded bytes.
func (s *Store) verify(id ID, loc location, buf []byte) ([]byte, error) {
	data, _, err := s.verifyParts(id, loc, buf[:recordHeaderSize], buf[recordHeaderSize:], nil)
	return data, err
}

// verifyParts is verify for a record whose header and payload were read
// into separate buffers. A compressed or sliced chunk is decoded into dst
// when it has room (see codecs.decode), else into a new buffer. A bundle
// member is decoded with its whole bundle and returned as a copy. cheap
// reports a slices chunk that was about as cheap to rebuild as its
// sources are to read (see assemble).
func (s *Store) verifyParts(id ID, loc location, hdr, payload, dst []byte) (data []byte, cheap bool, err error) {
	if err := checkRecord(id, loc, hdr, payload); err != nil {
		return nil, false, err
	}
	switch loc.codec {
	case CodecSlices:
		return s.assemble(id, payload, int(loc.decodedLen), dst)
	case CodecBundle:
		bp := s.bundles.buffer()
		defer s.bundles.recycle(bp)
		members, data, err := s.decodeBundle(payload, int(loc.bundleLen), *bp)
		if err != nil {
			return nil, false, fmt.Errorf("chunk %s: %w", id, err)
		}
		k, err := bundleMemberOf(members, id, loc)
		if err != nil {
			return nil, false, err
		}
		m := members[k]
		return append(dst[:0], data[m.off:m.off+m.length]...), false, nil
	}
	out, err := s.codecs.decode(loc.codec, payload, int(loc.decodedLen), dst)
	if err != nil {
		return nil, false, fmt.Errorf("chunk %s: %w", id, err)
	}
	return out, false, nil
}

// checkRecord checks a record's header against the index entry of chunk
// id, and its checksum.
func checkRecord(id ID, loc location, hdr, payload []byte) error {
	var h recordHeader
	if err := h.unmarshal(hdr); err != nil {
		return fmt.Errorf("chunk %s in pack %d at %d: %w", id, loc.pack, loc.offset, err)
	}
	switch {
	case h.id != id && loc.codec != CodecBundle: // a bundle's members are checked in its table
		return fmt.Errorf("chunk %s: %w: record at pack %d offset %d holds chunk %s", id, ErrCorrupt, loc.pack, loc.offset, h.id)
	case h.payloadLen != loc.payloadLen || h.decodedLen != loc.recordDecodedLen() || h.codec != loc.codec || len(payload) != int(h.payloadLen):
		return fmt.Errorf("chunk %s: %w: record header disagrees with the index", id, ErrCorrupt)
	case crc32.Update(recordCRC(hdr), castagnoli, payload) != h.crc:
		return fmt.Errorf("chunk %s: %w: checksum mismatch in pack %d at %d", id, ErrCorrupt, loc.pack, loc.offset)
	}
	return nil
}

// Stats describes what the store holds.
type Stats struct {
	Chunks       int64
	DecodedBytes int64 // sum of chunk sizes before compression
	// Chunks stored as slices of others (shifted duplicates), and their
	// size; their bytes are mostly references, not stored again.
	SlicedChunks int64
	SlicedBytes  int64
	StoredBytes  int64 // sum of record sizes in packs
	PackBytes    int64 // size of all pack files on disk
	Packs        int
}

// Stats scans the chunk index.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return st, err
	}
	for it.First(); it.Valid(); it.Next() {
		loc, err := unmarshalLocation(it.Value())
		if err != nil {
			it.Close()
			return st, err
		}
		st.Chunks++
		st.DecodedBytes += int64(loc.decodedLen)
		if loc.codec == CodecSlices {
			st.SlicedChunks++
			st.SlicedBytes += int64(loc.decodedLen)
		}
		if loc.codec != CodecBundle || loc.member == 0 { // a bundle counts once
			st.StoredBytes += recordHeaderSize + int64(loc.payloadLen)
		}
	}
	if err := it.Close(); err != nil {
		return st, err
	}
	packs, err := s.listPacks()
	if err != nil {
		return st, err
	}
	st.Packs = len(packs)
	for _, p := range packs {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(p))); err == nil {
			st.PackBytes += fi.Size()
		}
	}
	return st, nil
}
