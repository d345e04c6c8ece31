package mount

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"strconv"
)

// On-disk partition table layouts (UEFI spec 2.10 §5, and the classic PC
// MBR). These offsets are the formats' own; do not change them.
const (
	mbrSigOff     = 510 // 0x55 0xAA
	mbrTableOff   = 446 // four 16-byte entries
	mbrTypeGPT    = 0xEE
	gptSignature  = "EFI PART"
	gptHdrMinSize = 92
	maxGPTEntries = 1024
	maxLogical    = 128 // EBR chain bound against loops
)

// partition is one filesystem candidate: a partition or the whole disk.
type partition struct {
	Name string // "p1", "p5"; empty for a whole-disk filesystem
	Off  int64
	Size int64
}

// findPartitions reads a GPT (512- or 4096-byte sectors) or an MBR with
// its extended partitions. It returns nil when the disk has no partition
// table, or starts with a filesystem (a FAT boot sector looks like an MBR).
func findPartitions(r io.ReaderAt, size int64) []partition {
	if typ, note := identify(r, 0); typ != "" || note != "" {
		return nil
	}
	for _, sector := range []int64{512, 4096} {
		if ps, ok := readGPT(r, size, sector, sector); ok {
			return ps
		}
		if ps, ok := readGPT(r, size, sector, size-sector); ok { // backup header
			return ps
		}
	}
	return readMBR(r, size)
}

func readAt(r io.ReaderAt, n int, off int64) []byte {
	b := make([]byte, n)
	if off < 0 {
		return nil
	}
	if m, _ := r.ReadAt(b, off); m != n {
		return nil
	}
	return b
}

func readGPT(r io.ReaderAt, size, sector, hdrOff int64) ([]partition, bool) {
	h := readAt(r, int(sector), hdrOff)
	if h == nil || string(h[:8]) != gptSignature {
		return nil, false
	}
	le := binary.LittleEndian
	hsize := le.Uint32(h[12:])
	if hsize < gptHdrMinSize || int64(hsize) > sector {
		return nil, false
	}
	hdr := bytes.Clone(h[:hsize])
	clear(hdr[16:20]) // the CRC is computed with its own field zeroed
	if crc32.ChecksumIEEE(hdr) != le.Uint32(h[16:]) {
		return nil, false
	}
	entryLBA, count, esize := le.Uint64(h[72:]), le.Uint32(h[80:]), le.Uint32(h[84:])
	if count > maxGPTEntries || esize < 128 || esize > 4096 {
		return nil, false
	}
	table := readAt(r, int(count*esize), int64(entryLBA)*sector)
	if table == nil || crc32.ChecksumIEEE(table) != le.Uint32(h[88:]) {
		return nil, false
	}
	var ps []partition
	for i := range int64(count) {
		e := table[i*int64(esize):]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue // unused entry
		}
		first, last := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		if first <= 0 || last < first || (last+1)*sector > size {
			continue
		}
		// The kernel numbers GPT partitions by entry index.
		ps = append(ps, partition{Name: "p" + strconv.FormatInt(i+1, 10), Off: first * sector, Size: (last - first + 1) * sector})
	}
	return ps, len(ps) > 0
}

// mbrEntry is one 16-byte MBR or EBR partition entry.
type mbrEntry struct {
	status, typ byte
	start, n    int64 // in 512-byte sectors
}

func parseMBR(b []byte) ([4]mbrEntry, bool) {
	var es [4]mbrEntry
	if b == nil || b[mbrSigOff] != 0x55 || b[mbrSigOff+1] != 0xAA {
		return es, false
	}
	for i := range es {
		e := b[mbrTableOff+16*i:]
		es[i] = mbrEntry{status: e[0], typ: e[4],
			start: int64(binary.LittleEndian.Uint32(e[8:])), n: int64(binary.LittleEndian.Uint32(e[12:]))}
		if es[i].status != 0 && es[i].status != 0x80 {
			return es, false // not a partition table
		}
	}
	return es, true
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0F || typ == 0x85 }

func readMBR(r io.ReaderAt, size int64) []partition {
	es, ok := parseMBR(readAt(r, 512, 0))
	if !ok {
		return nil
	}
	valid := func(start, n int64) bool { return start > 0 && n > 0 && (start+n)*512 <= size }
	var ps []partition
	for i, e := range es {
		if e.typ == 0 || e.typ == mbrTypeGPT || !valid(e.start, e.n) {
			continue
		}
		if isExtended(e.typ) {
			ps = append(ps, readLogical(r, e.start, valid)...)
			continue
		}
		ps = append(ps, partition{Name: "p" + strconv.Itoa(i+1), Off: e.start * 512, Size: e.n * 512})
	}
	return ps
}

// readLogical walks the chain of extended boot records; logical
// partitions are numbered from 5, as the kernel does.
func readLogical(r io.ReaderAt, extStart int64, valid func(start, n int64) bool) []partition {
	var ps []partition
	ebr := extStart
	for num := 5; num < 5+maxLogical; num++ {
		es, ok := parseMBR(readAt(r, 512, ebr*512))
		if !ok {
			break
		}
		if l := es[0]; l.typ != 0 && valid(ebr+l.start, l.n) {
			ps = append(ps, partition{Name: "p" + strconv.Itoa(num), Off: (ebr + l.start) * 512, Size: l.n * 512})
		}
		next := es[1]
		if !isExtended(next.typ) || next.start == 0 || extStart+next.start <= ebr {
			break
		}
		ebr = extStart + next.start
	}
	return ps
}
