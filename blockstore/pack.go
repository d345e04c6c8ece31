package blockstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Pack file format, version 1. These constants are part of the on-disk
// format and must not be changed; a new layout gets a new version.
//
// A pack starts with a 16-byte header:
//
//	magic "RWPACK\x00\x01" (8) | format version u32 | flags u32
//
// followed by records, each:
//
//	magic u32 | payload length u32 | decoded length u32 | codec u8 |
//	reserved [3]byte | CRC-32C u32 | digest [32]byte | payload
//
// The CRC-32C (Castagnoli) covers the whole record but its own four
// bytes: the header fields, the digest and the payload.
//
// The digest in the record lets the index be rebuilt from the packs alone.
// Flags bit 0 (packFlagParity) says the pack gets Reed-Solomon parity in
// a sidecar file once sealed (see paritystore.go); packs written before
// parity do not have it, and have none.
const (
	packMagic        = "RWPACK\x00\x01"
	packVersion      = 1
	packHeaderSize   = 16
	packFlagParity   = 1 << 0
	recordMagic      = 0x52574348 // "RWCH"
	recordHeaderSize = 4 + 4 + 4 + 1 + 3 + 4 + 32
)

// Codec says how a record's payload is encoded.
type Codec uint8

// Codecs. Part of the on-disk format.
const (
	CodecRaw  Codec = 0
	CodecZstd Codec = 1
	CodecS2   Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	case CodecS2:
		return "s2"
	case CodecSlices:
		return "slices"
	case CodecBundle:
		return "bundle"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func packHeader() []byte {
	h := make([]byte, packHeaderSize)
	copy(h, packMagic)
	binary.BigEndian.PutUint32(h[8:], packVersion)
	binary.BigEndian.PutUint32(h[12:], packFlagParity)
	return h
}

func checkPackHeader(h []byte) error {
	if len(h) < packHeaderSize || string(h[:8]) != packMagic {
		return fmt.Errorf("%w: not a pack file", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint32(h[8:]); v != packVersion {
		return fmt.Errorf("%w: pack format version %d, this build reads %d", ErrCorrupt, v, packVersion)
	}
	return nil
}

// recordHeader is the fixed part of a record.
type recordHeader struct {
	payloadLen uint32
	decodedLen uint32
	codec      Codec
	crc        uint32
	id         ID
}

func (h *recordHeader) marshal(b []byte) {
	binary.BigEndian.PutUint32(b[0:], recordMagic)
	binary.BigEndian.PutUint32(b[4:], h.payloadLen)
	binary.BigEndian.PutUint32(b[8:], h.decodedLen)
	b[12] = byte(h.codec)
	b[13], b[14], b[15] = 0, 0, 0
	binary.BigEndian.PutUint32(b[16:], h.crc)
	copy(b[20:52], h.id[:])
}

func (h *recordHeader) unmarshal(b []byte) error {
	if len(b) < recordHeaderSize || binary.BigEndian.Uint32(b[0:]) != recordMagic {
		return fmt.Errorf("%w: bad record magic", ErrCorrupt)
	}
	h.payloadLen = binary.BigEndian.Uint32(b[4:])
	h.decodedLen = binary.BigEndian.Uint32(b[8:])
	h.codec = Codec(b[12])
	h.crc = binary.BigEndian.Uint32(b[16:])
	copy(h.id[:], b[20:52])
	return nil
}

func packName(n uint32) string { return fmt.Sprintf("%08d.pack", n) }

// recordCRC is the checksum of a record: b holds the marshalled header
// followed by the payload.
func recordCRC(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b[:16])
	return crc32.Update(c, castagnoli, b[20:])
}
