package timeline

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Resident says a read needs nothing from storage only when every block's
// content is known and every chunk is in the cache.
// viewOf imports 64 blocks of pattern(seed) (random blocks, stored raw,
// and a hole every 7th) as volume "a" at 100 and opens a view of it.
func viewOf(t *testing.T, e *scriptEnv, seed int64) (*View, []byte) {
	t.Helper()
	const size = 64 * testBS
	data := pattern(seed, size)
	v, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(data), Size: size, At: 100, BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	view, err := e.s.ViewAt(v.Volume.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	return view, data
}

func TestViewResident(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	defer e.close()
	const size = 64 * testBS
	view, data := viewOf(t, e, 3)
	const blk = 1 * testBS // a data block
	if view.Resident(blk, 512) {
		t.Fatal("resident before anything was read")
	}
	// Read in part by a scan: not cached.
	part := make([]byte, 512)
	if _, err := view.ReadAtScan(part, blk+512); err != nil || !bytes.Equal(part, data[blk+512:blk+1024]) {
		t.Fatalf("read: %v", err)
	}
	if view.Resident(blk, 512) {
		t.Fatal("a scan filled the cache")
	}
	// Read in part: cached.
	if _, err := view.ReadAt(part, blk+512); err != nil || !bytes.Equal(part, data[blk+512:blk+1024]) {
		t.Fatalf("read: %v", err)
	}
	if !view.Resident(blk, 512) || !view.Resident(blk, testBS) {
		t.Fatal("a cached block is not resident")
	}
	// A hole (block 0) once resolved, alone or with the cached block.
	if _, err := view.Extents(0, 2*testBS); err != nil {
		t.Fatal(err)
	}
	if !view.Resident(0, 2*testBS) {
		t.Fatal("a hole and a cached block are not resident")
	}
	if view.Resident(0, 3*testBS) {
		t.Fatal("an unread block counted as resident")
	}
	for _, bad := range [][2]int64{{-1, 10}, {0, 0}, {size, 1}, {size - 10, 20}} {
		if view.Resident(bad[0], bad[1]) {
			t.Fatalf("Resident(%d, %d) outside the volume", bad[0], bad[1])
		}
	}
	// A clone head looks its blocks up in the index.
	if _, err := e.s.Clone("a", 100, "c"); err != nil {
		t.Fatal(err)
	}
	cv, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	head, err := e.s.Head(cv.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !head.Resident(blk, 512) {
		t.Fatal("a clone's block whose chunk is cached is not resident")
	}
	if head.Resident(3*testBS, 512) {
		t.Fatal("a clone's unread block is resident")
	}
}

// Small reads in order read the blocks that follow into the cache ahead
// of the reader; reads out of order and whole blocks do not.
func TestViewReadAhead(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	defer e.close()
	view, data := viewOf(t, e, 4)
	resident := func(from, to int) []int {
		var in []int
		for b := from; b < to; b++ {
			if bytes.Equal(data[b*testBS:(b+1)*testBS], make([]byte, testBS)) {
				continue // a hole: nothing to read
			}
			if view.Resident(int64(b)*testBS, 512) {
				in = append(in, b)
			}
		}
		return in
	}
	read := func(off, n int64) {
		t.Helper()
		p := make([]byte, n)
		if _, err := view.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+n]) {
			t.Fatalf("read %d bytes at %d: %v", n, off, err)
		}
		e.s.background.wg.Wait()
	}
	// Out of order: nothing beyond the block read.
	read(40*testBS+512, 512)
	if in := resident(41, 64); len(in) != 0 {
		t.Fatalf("blocks %v read ahead after a read out of order", in)
	}
	// Whole blocks in order: nothing read ahead.
	read(20*testBS, testBS)
	read(21*testBS, testBS)
	if in := resident(22, 40); len(in) != 0 {
		t.Fatalf("blocks %v read ahead after whole-block reads", in)
	}
	// Small reads in order, from the start: the next readAheadBlocks.
	read(0, 512)
	read(512, 512)
	if in := resident(1, 1+readAheadBlocks); len(in) != len(dataBlocks(data, 1, 1+readAheadBlocks)) {
		t.Fatalf("blocks %v of %v read ahead", in, dataBlocks(data, 1, 1+readAheadBlocks))
	}
	if in := resident(1+readAheadBlocks, 20); len(in) != 0 {
		t.Fatalf("blocks %v read ahead, beyond the window", in)
	}
	// Reading on, in order, keeps ahead of the reader.
	for off := int64(1024); off < 10*testBS; off += 1024 {
		read(off, 1024)
	}
	if in := resident(10, 18); len(in) != len(dataBlocks(data, 10, 18)) {
		t.Fatalf("blocks %v of %v ahead of an in-order reader", in, dataBlocks(data, 10, 18))
	}
}

// dataBlocks lists the blocks of [from, to) of data that are not zero.
func dataBlocks(data []byte, from, to int) []int {
	var out []int
	for b := from; b < to; b++ {
		if !bytes.Equal(data[b*testBS:(b+1)*testBS], make([]byte, testBS)) {
			out = append(out, b)
		}
	}
	return out
}

// TestProtectedHead: an import of kind protected makes a new volume (not
// an existing name) whose head takes writes while its instants stay
// read-only; an imported volume has no head.
func TestProtectedHead(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	defer e.close()
	const size = 8 * testBS
	imported, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(pattern(1, size)), Size: size, BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Head(imported.Volume.ID); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("the head of an imported volume: %v", err)
	}
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(pattern(2, size)), Size: size, Kind: KindProtected}); !errors.Is(err, ErrExists) {
		t.Fatalf("a protected import over an existing name: %v", err)
	}
	p, err := e.s.Import(context.Background(), ImportOptions{Name: "p", Source: bytes.NewReader(pattern(2, size)), Size: size, BlockSize: testBS, Kind: KindProtected})
	if err != nil {
		t.Fatal(err)
	}
	if p.Volume.Kind != KindProtected || !p.Created {
		t.Fatalf("protected import: %+v", p.Volume)
	}
	head, err := e.s.Head(p.Volume.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := head.WriteAt(bytes.Repeat([]byte{7}, 100), 10); err != nil {
		t.Fatal(err)
	}
	at, err := e.s.ViewAt(p.Volume.ID, p.Time)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := at.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("a write to an instant of a protected volume: %v", err)
	}
	got := make([]byte, size)
	if _, err := at.ReadAt(got, 0); err != nil || !bytes.Equal(got, pattern(2, size)) {
		t.Fatalf("the instant of the import changed: %v", err)
	}
}
