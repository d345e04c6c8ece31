package timeline

import (
	"encoding/binary"
	"fmt"
)

// VersionKind says what made a version.
type VersionKind uint8

// Version kinds. Part of the on-disk format.
const (
	VersionImport VersionKind = 1
	VersionWrite  VersionKind = 2
	VersionCreate VersionKind = 3
	VersionClone  VersionKind = 4
	VersionZero   VersionKind = 5
	VersionTrim   VersionKind = 6
)

func (k VersionKind) String() string {
	switch k {
	case VersionImport:
		return "import"
	case VersionWrite:
		return "write"
	case VersionCreate:
		return "create"
	case VersionClone:
		return "clone"
	case VersionZero:
		return "zero"
	case VersionTrim:
		return "trim"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// summary is the record under 't'|vol|time|summaryPart, written in the
// batch that makes a version visible. Encoding (part of the format):
//
//	version u8 (1) | kind u8 | uvarint blocks | uvarint bytes | uvarint stored | uvarint size
type summary struct {
	Kind   VersionKind
	Blocks uint64 // blocks that got a new version
	Bytes  uint64 // logical bytes those versions hold (of a patch: the bytes it writes)
	Stored uint64 // bytes appended to the chunk store
	Size   uint64 // volume size from this version on
}

func (s summary) marshal() []byte {
	b := []byte{1, byte(s.Kind)}
	b = binary.AppendUvarint(b, s.Blocks)
	b = binary.AppendUvarint(b, s.Bytes)
	b = binary.AppendUvarint(b, s.Stored)
	return binary.AppendUvarint(b, s.Size)
}

func unmarshalSummary(b []byte) (summary, error) {
	var s summary
	if len(b) < 2 || b[0] != 1 {
		return s, fmt.Errorf("timeline: bad version summary")
	}
	s.Kind = VersionKind(b[1])
	b = b[2:]
	for _, p := range []*uint64{&s.Blocks, &s.Bytes, &s.Stored, &s.Size} {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return s, fmt.Errorf("timeline: bad version summary")
		}
		*p, b = v, b[n:]
	}
	return s, nil
}

// runs is a set of block ranges written by one batch of a version, stored
// under 't'|vol|time|part. Encoding (part of the format): version u8 (1),
// then pairs of uvarint (gap since the end of the previous run, length).
type runs struct {
	r    []run
	last uint64
}

type run struct{ start, n uint64 }

func (rs *runs) add(block uint64) {
	if k := len(rs.r); k > 0 && rs.r[k-1].start+rs.r[k-1].n == block {
		rs.r[k-1].n++
		return
	}
	rs.r = append(rs.r, run{block, 1})
}

func (rs *runs) marshal() []byte {
	b := []byte{1}
	var end uint64
	for _, r := range rs.r {
		b = binary.AppendUvarint(b, r.start-end)
		b = binary.AppendUvarint(b, r.n)
		end = r.start + r.n
	}
	return b
}

func unmarshalRuns(b []byte) ([]run, error) {
	if len(b) < 1 || b[0] != 1 {
		return nil, fmt.Errorf("timeline: bad block runs record")
	}
	b = b[1:]
	var out []run
	var end uint64
	for len(b) > 0 {
		gap, n1 := binary.Uvarint(b)
		if n1 <= 0 {
			return nil, fmt.Errorf("timeline: bad block runs record")
		}
		cnt, n2 := binary.Uvarint(b[n1:])
		if n2 <= 0 {
			return nil, fmt.Errorf("timeline: bad block runs record")
		}
		b = b[n1+n2:]
		out = append(out, run{end + gap, cnt})
		end += gap + cnt
	}
	return out, nil
}
