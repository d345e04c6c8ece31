// Package parity keeps Reed-Solomon parity for a sealed pack in a
// sidecar file, finds damage in the pack or in the sidecar by per-unit
// checksums, and rebuilds what it can.
//
// # Layout
//
// A pack is cut into stripes of Data units of Unit bytes (the last
// stripe is padded with zeroes, which are not stored). Each stripe gets
// Parity units, computed with github.com/klauspost/reedsolomon: any
// Parity damaged units of a stripe, data or parity, are rebuilt from the
// others. The default, 16 data and 2 parity units of 64 KiB, adds 1/8 of
// the pack and rebuilds any two damaged 64 KiB units in every 1 MiB of
// it: a torn or overwritten run of up to 64 KiB anywhere, bit rot in a
// sector here and there. It does not rebuild a lost pack file; a second
// copy of the store (replication) is for that.
//
// The sidecar (NNNNNNNN.par next to NNNNNNNN.pack), format version 1:
//
//	header (64 bytes): magic "RWPARITY" | version u32 | data u16 |
//	    parity u16 | unit u32 | pack size u64 | stripes u32 |
//	    reserved [26]byte | CRC-32C of the bytes before it u32
//	table: for each stripe, the CRC-32C of each of its data units, then
//	    of each of its parity units, u32 each; then the CRC-32C of the
//	    table u32
//	parity units: stripe by stripe, Parity units of Unit bytes each
//
// Every unit has its own checksum (the "shard checksum"): a unit whose
// bytes do not match it is an erasure. A sidecar whose header or table
// does not verify is no parity at all; the store writes it anew from a
// pack whose records verify.
//
// Healthy reads never touch the sidecar: the store reads a record from
// the pack and checks its own CRC, and only a record that fails it sends
// the store here (see blockstore's parity.go).
package parity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// Layout is how a pack is cut into units.
type Layout struct {
	Data, Parity int
	Unit         int
}

// Default is the layout the store writes.
var Default = Layout{Data: 16, Parity: 2, Unit: 64 << 10}

// Errors.
var (
	// ErrCorrupt: the sidecar's header or table does not verify.
	ErrCorrupt = errors.New("parity file is damaged")
	// ErrUnrecoverable: more units of a stripe are damaged than its
	// parity rebuilds.
	ErrUnrecoverable = errors.New("damage beyond what parity rebuilds")
)

const (
	magic      = "RWPARITY"
	version    = 1
	headerSize = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// File is a parsed sidecar.
type File struct {
	L        Layout
	PackSize int64
	Stripes  int
	sums     []uint32 // Stripes x (Data+Parity)
}

func (l Layout) stripeBytes() int64 { return int64(l.Data) * int64(l.Unit) }

// Size is the size of the sidecar of a pack of packSize bytes.
func (l Layout) Size(packSize int64) int64 {
	stripes := (packSize + l.stripeBytes() - 1) / l.stripeBytes()
	return headerSize + stripes*int64(l.Data+l.Parity)*4 + 4 + stripes*int64(l.Parity)*int64(l.Unit)
}

func (p *File) tableOff() int64 { return headerSize }

func (p *File) parityOff(stripe, j int) int64 {
	return headerSize + int64(p.Stripes)*int64(p.L.Data+p.L.Parity)*4 + 4 +
		(int64(stripe)*int64(p.L.Parity)+int64(j))*int64(p.L.Unit)
}

// Write computes the parity of the pack's first packSize bytes and
// writes the sidecar to w.
func Write(pack io.ReaderAt, packSize int64, l Layout, w io.WriterAt) error {
	enc, err := reedsolomon.New(l.Data, l.Parity)
	if err != nil {
		return err
	}
	p := &File{L: l, PackSize: packSize, Stripes: int((packSize + l.stripeBytes() - 1) / l.stripeBytes())}
	p.sums = make([]uint32, p.Stripes*(l.Data+l.Parity))
	shards := make([][]byte, l.Data+l.Parity)
	buf := make([]byte, (l.Data+l.Parity)*l.Unit)
	for i := range shards {
		shards[i] = buf[i*l.Unit : (i+1)*l.Unit]
	}
	for s := range p.Stripes {
		if err := p.readData(pack, s, shards[:l.Data]); err != nil {
			return err
		}
		if err := enc.Encode(shards); err != nil {
			return err
		}
		for i, sh := range shards {
			p.sums[s*(l.Data+l.Parity)+i] = crc32.Checksum(sh, castagnoli)
		}
		for j := range l.Parity {
			if _, err := w.WriteAt(shards[l.Data+j], p.parityOff(s, j)); err != nil {
				return fmt.Errorf("parity: write: %w", err)
			}
		}
	}
	if _, err := w.WriteAt(p.marshalTable(), p.tableOff()); err != nil {
		return fmt.Errorf("parity: write: %w", err)
	}
	if _, err := w.WriteAt(p.marshalHeader(), 0); err != nil {
		return fmt.Errorf("parity: write: %w", err)
	}
	return nil
}

// readData reads stripe s's data units of the pack into shards, zero
// past the pack's end.
func (p *File) readData(pack io.ReaderAt, s int, shards [][]byte) error {
	p.readDataLoose(pack, s, shards)
	for i, sh := range shards {
		if sh == nil {
			off, _ := p.Range(Unit{s, i})
			return fmt.Errorf("parity: read pack at %d: %w", off, io.ErrUnexpectedEOF)
		}
	}
	return nil
}

func (p *File) marshalHeader() []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.BigEndian.PutUint32(h[8:], version)
	binary.BigEndian.PutUint16(h[12:], uint16(p.L.Data))
	binary.BigEndian.PutUint16(h[14:], uint16(p.L.Parity))
	binary.BigEndian.PutUint32(h[16:], uint32(p.L.Unit))
	binary.BigEndian.PutUint64(h[20:], uint64(p.PackSize))
	binary.BigEndian.PutUint32(h[28:], uint32(p.Stripes))
	binary.BigEndian.PutUint32(h[60:], crc32.Checksum(h[:60], castagnoli))
	return h
}

func (p *File) marshalTable() []byte {
	t := make([]byte, 0, len(p.sums)*4+4)
	for _, c := range p.sums {
		t = binary.BigEndian.AppendUint32(t, c)
	}
	return binary.BigEndian.AppendUint32(t, crc32.Checksum(t, castagnoli))
}

// Open reads and checks a sidecar's header and table.
func Open(r io.ReaderAt) (*File, error) {
	h := make([]byte, headerSize)
	if n, _ := r.ReadAt(h, 0); n != headerSize || string(h[:8]) != magic ||
		binary.BigEndian.Uint32(h[60:]) != crc32.Checksum(h[:60], castagnoli) {
		return nil, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint32(h[8:]); v != version {
		return nil, fmt.Errorf("%w: format version %d, this build reads %d", ErrCorrupt, v, version)
	}
	p := &File{
		L: Layout{Data: int(binary.BigEndian.Uint16(h[12:])), Parity: int(binary.BigEndian.Uint16(h[14:])),
			Unit: int(binary.BigEndian.Uint32(h[16:]))},
		PackSize: int64(binary.BigEndian.Uint64(h[20:])),
		Stripes:  int(binary.BigEndian.Uint32(h[28:])),
	}
	if p.L.Data <= 0 || p.L.Parity <= 0 || p.L.Data+p.L.Parity > 256 || p.L.Unit <= 0 || p.L.Unit > 16<<20 ||
		int64(p.Stripes) != (p.PackSize+p.L.stripeBytes()-1)/p.L.stripeBytes() || p.Stripes > 1<<24 {
		return nil, fmt.Errorf("%w: bad layout", ErrCorrupt)
	}
	t := make([]byte, p.Stripes*(p.L.Data+p.L.Parity)*4+4)
	if n, _ := r.ReadAt(t, p.tableOff()); n != len(t) ||
		binary.BigEndian.Uint32(t[len(t)-4:]) != crc32.Checksum(t[:len(t)-4], castagnoli) {
		return nil, fmt.Errorf("%w: bad checksum table", ErrCorrupt)
	}
	p.sums = make([]uint32, p.Stripes*(p.L.Data+p.L.Parity))
	for i := range p.sums {
		p.sums[i] = binary.BigEndian.Uint32(t[i*4:])
	}
	return p, nil
}

// StripesOf returns the stripes that bytes [off, off+n) of the pack lie
// in.
func (p *File) StripesOf(off, n int64) (first, last int) {
	sb := p.L.stripeBytes()
	return int(off / sb), int((off + max(n, 1) - 1) / sb)
}

// Unit names a unit of a stripe: Index < Data is a data unit of the
// pack, the rest parity units in the sidecar.
type Unit struct {
	Stripe, Index int
}

// Range is the bytes of the pack a data unit holds.
func (p *File) Range(u Unit) (off, n int64) {
	off = int64(u.Stripe)*p.L.stripeBytes() + int64(u.Index)*int64(p.L.Unit)
	return off, max(0, min(int64(p.L.Unit), p.PackSize-off))
}

// Check reads stripe s from the pack and the sidecar and returns its
// damaged units.
func (p *File) Check(pack, side io.ReaderAt, s int) ([]Unit, error) {
	need := (p.L.Data + p.L.Parity) * p.L.Unit
	bp, _ := stripeBufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < need {
		b := make([]byte, need)
		bp = &b
	}
	defer stripeBufs.Put(bp)
	shards, err := p.read(pack, side, s, (*bp)[:need])
	if err != nil {
		return nil, err
	}
	return p.bad(s, shards), nil
}

// stripeBufs holds Check's stripe buffers. A scrub checks every MiB of
// every pack: a new 1.1 MiB buffer for each stripe cost more than reading
// and checksumming it (fresh memory is dear, see docs/benchmarks.md).
var stripeBufs sync.Pool

// read reads stripe s into buf, or into a new buffer when buf is nil.
func (p *File) read(pack, side io.ReaderAt, s int, buf []byte) ([][]byte, error) {
	l := p.L
	shards := make([][]byte, l.Data+l.Parity)
	if buf == nil {
		buf = make([]byte, (l.Data+l.Parity)*l.Unit)
	}
	for i := range shards {
		shards[i] = buf[i*l.Unit : (i+1)*l.Unit]
	}
	p.readDataLoose(pack, s, shards[:l.Data])
	for j := range l.Parity {
		if n, _ := side.ReadAt(shards[l.Data+j], p.parityOff(s, j)); n != l.Unit {
			shards[l.Data+j] = nil // missing: an erasure
		}
	}
	return shards, nil
}

// readDataLoose reads stripe s's data units of the pack into shards,
// zero past the pack's end; a unit that cannot be read whole is left nil
// (an erasure).
func (p *File) readDataLoose(pack io.ReaderAt, s int, shards [][]byte) {
	base := int64(s) * p.L.stripeBytes()
	for i, sh := range shards {
		off := base + int64(i)*int64(p.L.Unit)
		n := max(0, min(int64(p.L.Unit), p.PackSize-off))
		if n > 0 {
			if m, _ := pack.ReadAt(sh[:n], off); int64(m) < n {
				shards[i] = nil
				continue
			}
		}
		clear(sh[n:])
	}
}

func (p *File) bad(s int, shards [][]byte) []Unit {
	var out []Unit
	for i, sh := range shards {
		if sh == nil || crc32.Checksum(sh, castagnoli) != p.sums[s*(p.L.Data+p.L.Parity)+i] {
			out = append(out, Unit{s, i})
		}
	}
	return out
}

// Repair rebuilds the damaged units of stripe s and writes them back:
// data units to pack, parity units to side. It returns the units it
// rewrote, or ErrUnrecoverable (writing nothing) when more than Parity
// are damaged.
func (p *File) Repair(pack io.ReaderAt, packW io.WriterAt, side io.ReaderAt, sideW io.WriterAt, s int) ([]Unit, error) {
	shards, err := p.read(pack, side, s, nil)
	if err != nil {
		return nil, err
	}
	bad := p.bad(s, shards)
	if len(bad) == 0 {
		return nil, nil
	}
	if len(bad) > p.L.Parity {
		return bad, fmt.Errorf("stripe %d: %d of %d units damaged: %w", s, len(bad), p.L.Data+p.L.Parity, ErrUnrecoverable)
	}
	for _, u := range bad {
		shards[u.Index] = nil
	}
	enc, err := reedsolomon.New(p.L.Data, p.L.Parity)
	if err != nil {
		return nil, err
	}
	if err := enc.Reconstruct(shards); err != nil {
		return bad, fmt.Errorf("stripe %d: %w: %v", s, ErrUnrecoverable, err)
	}
	for _, u := range bad {
		sh := shards[u.Index]
		if crc32.Checksum(sh, castagnoli) != p.sums[s*(p.L.Data+p.L.Parity)+u.Index] {
			return bad, fmt.Errorf("stripe %d: rebuilt unit %d does not match its checksum: %w", s, u.Index, ErrUnrecoverable)
		}
	}
	for _, u := range bad {
		if u.Index < p.L.Data {
			off, n := p.Range(u)
			if _, err := packW.WriteAt(shards[u.Index][:n], off); err != nil {
				return nil, fmt.Errorf("parity: rewrite pack at %d: %w", off, err)
			}
		} else if _, err := sideW.WriteAt(shards[u.Index], p.parityOff(s, u.Index-p.L.Data)); err != nil {
			return nil, fmt.Errorf("parity: rewrite parity: %w", err)
		}
	}
	return bad, nil
}
