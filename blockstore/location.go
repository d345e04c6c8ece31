package blockstore

import (
	"encoding/binary"
	"fmt"
)

// IndexPrefix is the first byte of every chunk index key. Part of the
// on-disk format.
const IndexPrefix = 'c'

// location is where a chunk's record sits. Its encoding is part of the
// on-disk format (version byte first):
//
//	version u8 (1) | pack u32 | offset u64 | payload length u32 |
//	decoded length u32 | codec u8
//
// and for a member of a bundle record (see CodecBundle):
//
//	version u8 (2) | pack u32 | offset u64 | payload length u32 |
//	decoded length u32 | codec u8 (4) | member offset u32 | bundle length u32
//
// where the decoded length is the member's, the member offset is where
// it starts in the decoded bundle, and the bundle length is the record's
// decoded length.
type location struct {
	pack       uint32
	offset     int64 // of the record header
	payloadLen uint32
	decodedLen uint32 // of the chunk
	codec      Codec
	member     uint32 // bundle members: offset in the decoded bundle
	bundleLen  uint32 // bundle members: the record's decoded length
}

const (
	locationSize       = 1 + 4 + 8 + 4 + 4 + 1
	bundleLocationSize = locationSize + 4 + 4
)

func (l location) marshal() []byte { return l.appendTo(make([]byte, 0, bundleLocationSize)) }

func unmarshalLocation(b []byte) (location, error) {
	bad := func() (location, error) {
		return location{}, fmt.Errorf("%w: bad chunk index entry (%d bytes)", ErrCorrupt, len(b))
	}
	if len(b) < locationSize {
		return bad()
	}
	l := location{
		pack:       binary.BigEndian.Uint32(b[1:]),
		offset:     int64(binary.BigEndian.Uint64(b[5:])),
		payloadLen: binary.BigEndian.Uint32(b[13:]),
		decodedLen: binary.BigEndian.Uint32(b[17:]),
		codec:      Codec(b[21]),
	}
	switch {
	case b[0] == 1 && len(b) == locationSize && l.codec != CodecBundle:
		return l, nil
	case b[0] == 2 && len(b) == bundleLocationSize && l.codec == CodecBundle:
		l.member = binary.BigEndian.Uint32(b[22:])
		l.bundleLen = binary.BigEndian.Uint32(b[26:])
		if uint64(l.member)+uint64(l.decodedLen) > uint64(l.bundleLen) {
			return bad()
		}
		return l, nil
	}
	return bad()
}

// recordDecodedLen is the decoded length of the record loc points into:
// the bundle's for a bundle member.
func (l location) recordDecodedLen() uint32 {
	if l.codec == CodecBundle {
		return l.bundleLen
	}
	return l.decodedLen
}

// key names the record.
func (l location) key() recordKey { return recordKey{l.pack, l.offset} }

func indexKey(id ID) []byte {
	k := make([]byte, 1+len(id))
	k[0] = IndexPrefix
	copy(k[1:], id[:])
	return k
}

// appendTo appends l's encoding (see marshal) to b.
func (l location) appendTo(b []byte) []byte {
	b = append(b, 1)
	b = binary.BigEndian.AppendUint32(b, l.pack)
	b = binary.BigEndian.AppendUint64(b, uint64(l.offset))
	b = binary.BigEndian.AppendUint32(b, l.payloadLen)
	b = binary.BigEndian.AppendUint32(b, l.decodedLen)
	b = append(b, byte(l.codec))
	if l.codec == CodecBundle {
		b[len(b)-locationSize] = 2
		b = binary.BigEndian.AppendUint32(b, l.member)
		b = binary.BigEndian.AppendUint32(b, l.bundleLen)
	}
	return b
}

// Place is where a chunk's record lay when a reference to it was
// written. The timeline keeps it beside the chunk's ID in its version
// values, so that a read need not look each chunk up in the index first:
// in a store of a million chunks the index is larger than what a freshly
// started daemon has read or keeps (see locCache), and every lookup of a
// cold read cost a table block from the disk. Readers hand places to
// Hint before they read.
//
// A place can go stale: a collection moves the live records of a pack it
// rewrites, and a chunk whose record a crash lost is stored again
// elsewhere. It is therefore only ever tried as a remembered location is
// (see locCache): a stale place costs a failed read and a lookup in the
// index, never wrong bytes, since every record is checked against its
// chunk's digest (a bundle's member against the bundle's table of
// members) and its CRC.
type Place struct {
	loc location
	ok  bool
}

// Known reports whether p names a place (the zero Place does not).
func (p Place) Known() bool { return p.ok }

// AppendTo appends p's encoding, which is a chunk index entry's (22
// bytes, 30 for a member of a bundle), to b; nothing for an unknown
// place.
func (p Place) AppendTo(b []byte) []byte {
	if !p.ok {
		return b
	}
	return p.loc.appendTo(b)
}

// ParsePlace decodes what AppendTo wrote.
func ParsePlace(b []byte) (Place, error) {
	loc, err := unmarshalLocation(b)
	if err != nil {
		return Place{}, err
	}
	return Place{loc: loc, ok: true}, nil
}

// placeRest fills in the places of results that have none from the
// chunks this Txn stored (one stored twice in a call, or before it).
func (t *Txn) placeRest(res []PutResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.placeRestLocked(res)
}

func (t *Txn) placeRestLocked(res []PutResult) {
	for i := range res {
		if res[i].Place.ok {
			continue
		}
		if loc, ok := t.mu.locs[res[i].ID]; ok {
			res[i].Place = Place{loc: loc, ok: true}
		}
	}
}

// placed is the result for a chunk this Txn stored already.
func (t *Txn) placed(id ID) PutResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	loc, ok := t.mu.locs[id]
	return PutResult{ID: id, Place: Place{loc: loc, ok: ok}}
}

// Hint offers the places of chunks about to be read (ids[i] at
// places[i]; unknown places are skipped): a chunk whose location the
// cache of locations lacks is then read there first, as a remembered
// location is, instead of being looked up in the index.
func (s *Store) Hint(ids []ID, places []Place) {
	s.locs.hint(ids, places)
}

// IndexLookups is how many chunks were looked up in the index to be read
// since the store opened: places (Hint) and the cache of locations spare
// the rest.
func (s *Store) IndexLookups() int64 { return s.indexLookups.Load() }

// Where returns the pack and the offset in it that p names.
func (p Place) Where() (pack uint32, offset int64) { return p.loc.pack, p.loc.offset }
