package hydrate

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The saved progress layout. These constants are part of the on-disk
// format and must not change; a new layout gets a new version.
//
//	magic "RWHY" | version u32 | generation u64 | watermark i64 |
//	size u64 | granularity u64 | words u32 |
//	dirty [words]u64 | zero [words]u64 | crc32c u32 (of all before it)
//
// All integers are little-endian.
const (
	formatMagic   = "RWHY"
	formatVersion = 1
	headerLen     = 4 + 4 + 8 + 8 + 8 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// saved is the decoded progress of a copy.
type saved struct {
	gen       uint64
	watermark int64
	size      int64
	gran      int64
	dirty     bitmap // granules not known to be on the target
	zero      bitmap // granules known to read as zeroes on the target
}

func (s *saved) encode() []byte {
	words := len(s.dirty.w)
	p := make([]byte, 0, headerLen+16*words+4)
	p = append(p, formatMagic...)
	p = binary.LittleEndian.AppendUint32(p, formatVersion)
	p = binary.LittleEndian.AppendUint64(p, s.gen)
	p = binary.LittleEndian.AppendUint64(p, uint64(s.watermark))
	p = binary.LittleEndian.AppendUint64(p, uint64(s.size))
	p = binary.LittleEndian.AppendUint64(p, uint64(s.gran))
	p = binary.LittleEndian.AppendUint32(p, uint32(words))
	for _, w := range s.dirty.w {
		p = binary.LittleEndian.AppendUint64(p, w)
	}
	for _, w := range s.zero.w {
		p = binary.LittleEndian.AppendUint64(p, w)
	}
	return binary.LittleEndian.AppendUint32(p, crc32.Checksum(p, castagnoli))
}

// decodeSaved parses p for a copy of size bytes at granularity gran.
func decodeSaved(p []byte, size, gran int64) (*saved, error) {
	if len(p) < headerLen+4 || string(p[:4]) != formatMagic {
		return nil, fmt.Errorf("%w: not a progress file", ErrProgressMismatch)
	}
	body, sum := p[:len(p)-4], binary.LittleEndian.Uint32(p[len(p)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrProgressMismatch)
	}
	if v := binary.LittleEndian.Uint32(p[4:]); v != formatVersion {
		return nil, fmt.Errorf("%w: format version %d", ErrProgressMismatch, v)
	}
	s := &saved{
		gen:       binary.LittleEndian.Uint64(p[8:]),
		watermark: int64(binary.LittleEndian.Uint64(p[16:])),
		size:      int64(binary.LittleEndian.Uint64(p[24:])),
		gran:      int64(binary.LittleEndian.Uint64(p[32:])),
	}
	if s.size != size || s.gran != gran {
		return nil, fmt.Errorf("%w: saved for %d bytes at granularity %d, copying %d at %d",
			ErrProgressMismatch, s.size, s.gran, size, gran)
	}
	n := granules(size, gran)
	words := int(binary.LittleEndian.Uint32(p[40:]))
	if words != (n+63)/64 || len(body) != headerLen+16*words {
		return nil, fmt.Errorf("%w: bad length", ErrProgressMismatch)
	}
	s.dirty, s.zero = newBitmap(n), newBitmap(n)
	q := body[headerLen:]
	for i := range words {
		s.dirty.w[i] = binary.LittleEndian.Uint64(q[8*i:])
		s.zero.w[i] = binary.LittleEndian.Uint64(q[8*(words+i):])
	}
	if tail := n % 64; tail != 0 && words > 0 {
		mask := uint64(1)<<uint(tail) - 1
		s.dirty.w[words-1] &= mask
		s.zero.w[words-1] &= mask
	}
	s.dirty.recount()
	s.zero.recount()
	return s, nil
}

func granules(size, gran int64) int { return int((size + gran - 1) / gran) }
