package parity

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

// mem is a growable in-memory file.
type mem struct{ b []byte }

func (m *mem) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, errors.New("eof")
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, errors.New("eof")
	}
	return n, nil
}

func (m *mem) WriteAt(p []byte, off int64) (int, error) {
	if need := off + int64(len(p)); need > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

// TestRepair: damage in up to Parity units of a stripe, in the pack or
// in the sidecar, is found and rebuilt; more is refused and changes
// nothing; a damaged table makes the sidecar unusable.
func TestRepair(t *testing.T) {
	l := Layout{Data: 4, Parity: 2, Unit: 1024}
	orig := make([]byte, 4096*3+777) // three stripes and a bit
	rand.New(rand.NewSource(1)).Read(orig)
	pack := &mem{b: bytes.Clone(orig)}
	side := &mem{}
	if err := Write(pack, int64(len(orig)), l, side); err != nil {
		t.Fatal(err)
	}
	if int64(len(side.b)) != l.Size(int64(len(orig))) {
		t.Fatalf("sidecar of %d bytes, Size says %d", len(side.b), l.Size(int64(len(orig))))
	}
	p, err := Open(side)
	if err != nil {
		t.Fatal(err)
	}
	for s := range p.Stripes {
		if bad, err := p.Check(pack, side, s); err != nil || len(bad) != 0 {
			t.Fatalf("stripe %d of a healthy pack: %v %v", s, bad, err)
		}
	}
	// Two units of stripe 1: one in the pack, one parity unit.
	pack.b[4096+100] ^= 0xff
	side.b[p.parityOff(1, 1)+5] ^= 0xff
	// The tail stripe's only data unit, cut short.
	pack.b = pack.b[:len(orig)-10]
	if bad, _ := p.Check(pack, side, 1); len(bad) != 2 {
		t.Fatalf("check found %v, want 2 damaged units", bad)
	}
	for s := range p.Stripes {
		if _, err := p.Repair(pack, pack, side, side, s); err != nil {
			t.Fatalf("repair stripe %d: %v", s, err)
		}
	}
	if !bytes.Equal(pack.b, orig) {
		t.Fatal("the repaired pack differs from the original")
	}
	for s := range p.Stripes {
		if bad, _ := p.Check(pack, side, s); len(bad) != 0 {
			t.Fatalf("stripe %d damaged after repair: %v", s, bad)
		}
	}
	// Three units of stripe 0: beyond repair, and nothing is written.
	for i := range 3 {
		pack.b[i*1024+1] ^= 0xff
	}
	before := bytes.Clone(pack.b)
	if _, err := p.Repair(pack, pack, side, side, 0); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("repair of 3 damaged units: %v", err)
	}
	if !bytes.Equal(pack.b, before) {
		t.Fatal("a failed repair wrote to the pack")
	}
	side.b[headerSize+3] ^= 1
	if _, err := Open(side); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a damaged table: %v", err)
	}
}

// BenchmarkWrite: computing a full pack's sidecar in memory (the CPU
// that parity adds to every sealed pack; docs/benchmarks.md, Integrity).
func BenchmarkWrite(b *testing.B) {
	const size = 64 << 20
	pack := &mem{b: make([]byte, size)}
	rand.New(rand.NewSource(1)).Read(pack.b)
	side := &mem{b: make([]byte, Default.Size(size))}
	b.SetBytes(size)
	for b.Loop() {
		if err := Write(pack, size, Default, side); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck: a scrub's check of every stripe of a full pack.
func BenchmarkCheck(b *testing.B) {
	const size = 64 << 20
	pack := &mem{b: make([]byte, size)}
	rand.New(rand.NewSource(1)).Read(pack.b)
	side := &mem{}
	if err := Write(pack, size, Default, side); err != nil {
		b.Fatal(err)
	}
	p, err := Open(side)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		for s := range p.Stripes {
			if bad, err := p.Check(pack, side, s); err != nil || len(bad) > 0 {
				b.Fatalf("stripe %d: %v %v", s, bad, err)
			}
		}
	}
}
