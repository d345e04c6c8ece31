package remote

import (
	"bytes"
	"context"
	"errors"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func objectNames(t *testing.T, p *Packs, prefix string) []string {
	objs, err := p.c.list(prefix)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Name)
	}
	return names
}

// TestPacksLifecycle follows a pack: written and synced (ranges go up as
// segments), sealed (it goes up whole, the local file and segments go,
// an open handle reads on from the object store), read by a new process
// with nothing local (through the cache, past its size), and removed.
func TestPacksLifecycle(t *testing.T) {
	b := openBackend(t)
	dir := filepath.Join(t.TempDir(), "packs")
	p, err := NewPacks(PacksOptions{Dir: dir, CacheDir: dir + ".cache", CacheBytes: 2 * blockSize, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "00000001.pack")
	f, err := p.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(5*blockSize+1234, 11)
	half := len(data) / 2
	if _, err := f.WriteAt(data[half:], int64(half)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[:half], 0); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
	if segs, want := objectNames(t, p, segPrefix+"/"), (len(data)+partSize-1)/partSize; len(segs) != want {
		t.Fatalf("after a sync: segments %v, want %d: one span's parts (adjacent writes coalesce)", segs, want)
	}
	// A second process (another machine) reads the segments.
	q, err := NewPacks(PacksOptions{Dir: filepath.Join(t.TempDir(), "packs"), CacheDir: filepath.Join(t.TempDir(), "c"), Backend: b, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, q, filepath.Join(q.dir, "00000001.pack"), data)

	if err := p.SealPack(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("the local pack is still there after sealing: %v", err)
	}
	// One sync left it in one span's parts: that is how it stays.
	if segs, whole := objectNames(t, p, segPrefix+"/"), objectNames(t, p, packsPrefix+"/"); len(segs) != (len(data)+partSize-1)/partSize || len(whole) != 0 {
		t.Fatalf("after sealing: segments %v, whole %v; want the parts of the one sync", segs, whole)
	}
	got := make([]byte, 100)
	if _, err := f.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data[4096:4196]) {
		t.Fatalf("the writer's handle reads wrong after sealing: %v", err)
	}
	if _, err := f.WriteAt([]byte("x"), 10); err == nil {
		t.Fatal("a sealed pack took a write")
	}
	f.Close()
	checkRead(t, p, path, data)
	if c := p.CacheBytes(); c > 2*blockSize {
		t.Fatalf("cache holds %d bytes, bound %d", c, 2*blockSize)
	}
	// The reader, whose segments are gone, finds the whole pack.
	checkRead(t, q, filepath.Join(q.dir, "00000001.pack"), data)

	names, _ := p.List(dir)
	if len(names) != 1 || names[0] != "00000001.pack" {
		t.Fatalf("List = %v", names)
	}
	if err := p.Remove(path); err != nil {
		t.Fatal(err)
	}
	if names, _ := p.List(dir); len(names) != 0 {
		t.Fatalf("List after Remove = %v", names)
	}
	p.Close() // deletes the removed pack's objects now
	if objs := append(objectNames(t, p, packsPrefix+"/"), objectNames(t, p, segPrefix+"/")...); len(objs) != 0 {
		t.Fatalf("objects left after Remove and Close: %v", objs)
	}
}

func checkRead(t *testing.T, p *Packs, path string, data []byte) {
	t.Helper()
	fi, err := p.Stat(path)
	if err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("Stat = %v, %v; want size %d", fi, err, len(data))
	}
	f, err := p.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// In order (read-ahead), then across a block boundary, then past the end.
	readInOrder(t, f, data)
	b := make([]byte, 10)
	if len(data) > blockSize+5 {
		if _, err := f.ReadAt(b, blockSize-5); err != nil || !bytes.Equal(b, data[blockSize-5:blockSize+5]) {
			t.Fatalf("read across a block boundary: %v", err)
		}
	}
	if n, err := f.ReadAt(b, int64(len(data))-4); n != 4 || err == nil {
		t.Fatalf("read past the end: %d, %v", n, err)
	}
}

// readInOrder reads f from the start in 64 KiB pieces, as a disk is
// read, and checks that it holds data.
func readInOrder(t *testing.T, f vfs.File, data []byte) {
	t.Helper()
	got := make([]byte, len(data))
	for off := 0; off < len(data); off += 65536 {
		n := min(65536, len(data)-off)
		if m, err := f.ReadAt(got[off:off+n], int64(off)); m != n || err != nil {
			t.Fatalf("read %d at %d: %d, %v", n, off, m, err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
}

// TestPacksSettleAndCut: a pack cut back after a sync leaves no stale
// segment past its end, and a pack a killed process left (in the
// directory, or in segments only) goes up whole at the next open.
func TestPacksSettleAndCut(t *testing.T) {
	b := openBackend(t)
	dir := filepath.Join(t.TempDir(), "packs")
	p, err := NewPacks(PacksOptions{Dir: dir, CacheDir: dir + ".cache", Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "00000007.pack")
	f, _ := p.Create(path, vfs.WriteCategoryUnspecified)
	data := randomBytes(3000, 12)
	f.WriteAt(data[:1000], 0)
	f.Sync()
	f.WriteAt(data[1000:], 1000)
	f.Sync()
	if segs := objectNames(t, p, segPrefix+"/"); len(segs) != 2 {
		t.Fatalf("segments %v, want 2", segs)
	}
	// Cut back to 500 bytes the way the chunk store does without a
	// descriptor: the head written anew.
	nf, _ := p.Create(path, vfs.WriteCategoryUnspecified)
	nf.WriteAt(data[:500], 0)
	nf.Sync()
	f.Close()
	nf.Close()
	q, err := NewPacks(PacksOptions{Dir: filepath.Join(t.TempDir(), "packs"), CacheDir: filepath.Join(t.TempDir(), "c"), Backend: b, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkRead(t, q, filepath.Join(q.dir, "00000007.pack"), data[:500])

	// The next open seals what the last left; a pack in one segment
	// stays so.
	p2, err := NewPacks(PacksOptions{Dir: dir, CacheDir: dir + ".cache", Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	if segs := objectNames(t, p2, segPrefix+"/"); len(segs) != 1 {
		t.Fatalf("segments after settling: %v, want the one", segs)
	}
	if _, err := os.Stat(path); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatal("the local pack was not settled")
	}
	checkRead(t, p2, path, data[:500])

	// A pack synced after every small write, in more segments than
	// maxSegs (the machine is gone): a new directory puts it up whole.
	g, _ := p2.Create(filepath.Join(dir, "00000008.pack"), vfs.WriteCategoryUnspecified)
	for off := 0; off < len(data); off += 50 {
		g.WriteAt(data[off:off+50], int64(off))
		g.Sync()
	}
	p3, err := NewPacks(PacksOptions{Dir: filepath.Join(t.TempDir(), "packs"), CacheDir: filepath.Join(t.TempDir(), "c"), Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	if segs := objectNames(t, p3, segPrefix+"/"); len(segs) != 1 {
		t.Fatalf("segments after settling: %v, want only pack 7's", segs)
	}
	checkRead(t, p3, filepath.Join(p3.dir, "00000008.pack"), data)
}

// countingGets counts the range reads of a backend.
type countingGets struct {
	objstore.Backend
	gets atomic.Int64
}

func (c *countingGets) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	c.gets.Add(1)
	return c.Backend.GetRange(ctx, name, off, n)
}

// TestPacksReadInRuns: segments end at multiples of the part size after
// the first of each sync, and a pack read in order comes down in runs of
// aheadRun blocks, each one range of one object: 8 GETs for 22 blocks,
// where a GET a block took 23 (a block straddles two segments).
func TestPacksReadInRuns(t *testing.T) {
	b := &countingGets{Backend: openBackend(t)}
	dir := filepath.Join(t.TempDir(), "packs")
	p, err := NewPacks(PacksOptions{Dir: dir, CacheDir: dir + ".cache", Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "00000009.pack")
	f, err := p.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(21*blockSize+blockSize/2, 9)
	for _, w := range [][2]int{{0, 3 * blockSize / 2}, {3 * blockSize / 2, len(data)}} {
		if _, err := f.WriteAt(data[w[0]:w[1]], int64(w[0])); err != nil {
			t.Fatal(err)
		}
		if err := f.SyncData(); err != nil {
			t.Fatal(err)
		}
	}
	var offs []int64
	for _, name := range objectNames(t, p, segPrefix+"/") {
		_, off, ok := parseSeg(strings.TrimPrefix(name, segPrefix+"/"))
		if !ok {
			t.Fatalf("segment name %q", name)
		}
		offs = append(offs, off)
	}
	slices.Sort(offs)
	want := []int64{0, 3 * blockSize / 2}
	for off := int64(partSize); off < int64(len(data)); off += partSize {
		want = append(want, off)
	}
	if !slices.Equal(offs, want) {
		t.Fatalf("segments at %v, want %v", offs, want)
	}

	q, err := NewPacks(PacksOptions{Dir: filepath.Join(t.TempDir(), "packs"), CacheDir: filepath.Join(t.TempDir(), "c"), Backend: b, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	b.gets.Store(0)
	g, err := q.Open(filepath.Join(q.dir, "00000009.pack"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	readInOrder(t, g, data)
	// Block 0 alone, blocks 1-3 in two ranges (a sync ended at 1.5 MiB),
	// then 4-7, 8-11, 12-15, 16-19 and 20-21.
	if n := b.gets.Load(); n > 8 {
		t.Fatalf("%d GETs for a pack of 22 blocks read in order, want 8", n)
	}
}
