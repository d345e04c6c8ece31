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

func (l location) marshal() []byte {
	n := locationSize
	if l.codec == CodecBundle {
		n = bundleLocationSize
	}
	b := make([]byte, n)
	b[0] = 1
	binary.BigEndian.PutUint32(b[1:], l.pack)
	binary.BigEndian.PutUint64(b[5:], uint64(l.offset))
	binary.BigEndian.PutUint32(b[13:], l.payloadLen)
	binary.BigEndian.PutUint32(b[17:], l.decodedLen)
	b[21] = byte(l.codec)
	if l.codec == CodecBundle {
		b[0] = 2
		binary.BigEndian.PutUint32(b[22:], l.member)
		binary.BigEndian.PutUint32(b[26:], l.bundleLen)
	}
	return b
}

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
