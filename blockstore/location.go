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
type location struct {
	pack       uint32
	offset     int64 // of the record header
	payloadLen uint32
	decodedLen uint32
	codec      Codec
}

const locationSize = 1 + 4 + 8 + 4 + 4 + 1

func (l location) marshal() []byte {
	b := make([]byte, locationSize)
	b[0] = 1
	binary.BigEndian.PutUint32(b[1:], l.pack)
	binary.BigEndian.PutUint64(b[5:], uint64(l.offset))
	binary.BigEndian.PutUint32(b[13:], l.payloadLen)
	binary.BigEndian.PutUint32(b[17:], l.decodedLen)
	b[21] = byte(l.codec)
	return b
}

func unmarshalLocation(b []byte) (location, error) {
	if len(b) != locationSize || b[0] != 1 {
		return location{}, fmt.Errorf("%w: bad chunk index entry (%d bytes)", ErrCorrupt, len(b))
	}
	return location{
		pack:       binary.BigEndian.Uint32(b[1:]),
		offset:     int64(binary.BigEndian.Uint64(b[5:])),
		payloadLen: binary.BigEndian.Uint32(b[13:]),
		decodedLen: binary.BigEndian.Uint32(b[17:]),
		codec:      Codec(b[21]),
	}, nil
}

func indexKey(id ID) []byte {
	k := make([]byte, 1+len(id))
	k[0] = IndexPrefix
	copy(k[1:], id[:])
	return k
}
