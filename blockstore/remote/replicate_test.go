package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// The bucket's arithmetic on a clock of its own: a second of rate is
// free, every byte past it waits its share, and a pause refills it.
func TestBucketWaits(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept time.Duration
	b := newBucket(1<<20, func() time.Time { return now }, func(_ context.Context, d time.Duration) error {
		slept += d
		now = now.Add(d)
		return nil
	})
	ctx := context.Background()
	for range 16 { // 4 MiB in steps of 256 KiB
		if err := b.Take(ctx, 256<<10); err != nil {
			t.Fatal(err)
		}
	}
	if slept != 3*time.Second {
		t.Fatalf("4 MiB at 1 MiB/s with a second's burst waited %v, want 3s", slept)
	}
	now = now.Add(10 * time.Second) // idle: the bucket holds a second, no more
	slept = 0
	for range 8 {
		b.Take(ctx, 256<<10)
	}
	if slept != time.Second {
		t.Fatalf("2 MiB after a long pause waited %v, want 1s", slept)
	}
	if NewBucket(0) != nil {
		t.Fatal("a rate of 0 limits")
	}
	var none *Bucket
	if err := none.Take(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
}

// counting counts what is put into a backend.
type counting struct {
	objstore.Backend
	mu    sync.Mutex
	bytes int64
	puts  map[string]int
	order []string
}

func (c *counting) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	// Parts go up side by side: the count is taken whole, once read.
	data, err := io.ReadAll(io.LimitReader(r, size))
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.puts == nil {
		c.puts = map[string]int{}
	}
	c.puts[name]++
	c.order = append(c.order, name)
	c.bytes += int64(len(data))
	c.mu.Unlock()
	return c.Backend.Put(ctx, name, bytes.NewReader(data), size)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func packsOf(data map[string][]byte, mutable string) []PackSource {
	var out []PackSource
	for _, n := range []string{"00000001.pack", "00000002.pack"} {
		if d, ok := data[n]; ok {
			out = append(out, PackSource{Name: n, Size: int64(len(d)), R: bytes.NewReader(d), Mutable: n == mutable})
		}
	}
	return out
}

// readPack reads a pack from the target as the chunk store of a data
// directory serving it would.
func readPack(t *testing.T, b objstore.Backend, name string, size int64) []byte {
	t.Helper()
	p, err := NewPacks(PacksOptions{Dir: filepath.Join(t.TempDir(), "packs"), CacheDir: filepath.Join(t.TempDir(), "cache"), Backend: b, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := make([]byte, size)
	if _, err := p.readRemote(name, got, 0); err != nil {
		t.Fatalf("read %s from the target: %v", name, err)
	}
	return got
}

// A run stopped part way (its window closed, or it was killed) leaves
// what it sent; the next run sends only the rest, counted in bytes, and
// the target then holds every pack as it is at the source.
func TestReplicateResumes(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	target := &counting{Backend: dir}
	data := map[string][]byte{
		"00000001.pack": randomBytes(3*PartSize+100, 1), // 4 parts
		"00000002.pack": randomBytes(PartSize+7, 2),     // 2 parts, being written
	}
	total := int64(len(data["00000001.pack"]) + len(data["00000002.pack"]))
	jpath := filepath.Join(t.TempDir(), "target.journal")
	j, err := OpenJournal(jpath)
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("window closed")
	parts := 0
	r, err := NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j, Stop: func() error {
		if parts == 3 {
			return stop
		}
		parts++
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CopyPacks(ctx, packsOf(data, "00000002.pack")); !errors.Is(err, stop) {
		t.Fatalf("first run: %v, want it stopped", err)
	}
	first := target.bytes
	if first != 3*PartSize || r.Stats().BytesSent != first || r.Stats().PartsSent != 3 {
		t.Fatalf("first run sent %d bytes (counted %+v), want 3 parts of %d", first, r.Stats(), PartSize)
	}
	j.Close()

	// The next run, with the journal read back from its file.
	if j, err = OpenJournal(jpath); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r, err = NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CopyPacks(ctx, packsOf(data, "00000002.pack")); err != nil {
		t.Fatal(err)
	}
	if sent := target.bytes - first; sent != total-first || r.Stats().PartsSkipped != 3 || r.Stats().PartsSent != 3 {
		t.Fatalf("second run sent %d bytes (%+v), want the %d not sent before, in 3 parts", sent, r.Stats(), total-first)
	}
	for name, d := range data {
		if got := readPack(t, target, name, int64(len(d))); !bytes.Equal(got, d) {
			t.Fatalf("%s differs on the target", name)
		}
	}

	// The pack being written changed below its end (its tail was cut
	// and written again): the changed part goes again, though its size
	// is the same; a part the target holds that this source never sent
	// goes again too, and a segment off the grid is deleted.
	data["00000002.pack"][10] ^= 0xff
	if err := target.Backend.Delete(ctx, partName("00000001.pack", PartSize)); err != nil {
		t.Fatal(err)
	}
	foreign := bytes.Repeat([]byte{7}, PartSize)
	if err := target.Backend.Put(ctx, partName("00000001.pack", PartSize), bytes.NewReader(foreign), PartSize); err != nil {
		t.Fatal(err)
	}
	j.Record(partName("00000001.pack", PartSize), PartSize+1, "") // not what is there
	if err := target.Backend.Put(ctx, partName("00000001.pack", 12345), bytes.NewReader([]byte("stale")), 5); err != nil {
		t.Fatal(err)
	}
	before := target.bytes
	if r, err = NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j}); err != nil {
		t.Fatal(err)
	}
	if err := r.CopyPacks(ctx, packsOf(data, "00000002.pack")); err != nil {
		t.Fatal(err)
	}
	if sent := target.bytes - before; sent != 2*PartSize || r.Stats().PartsSent != 2 {
		t.Fatalf("third run sent %d bytes (%+v), want the changed part and the foreign one", sent, r.Stats())
	}
	for name, d := range data {
		if got := readPack(t, target, name, int64(len(d))); !bytes.Equal(got, d) {
			t.Fatalf("%s differs on the target after the third run", name)
		}
	}
	if _, err := target.Stat(ctx, partName("00000001.pack", 12345)); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a segment off the grid is still there: %v", err)
	}

	// A data directory that opened the target for writing may have made
	// a pack one object of its parts (one synced in many small segments
	// goes up whole): nothing goes again for it; once the pack being
	// written changes, its parts go again, and the whole object, which
	// would be read instead, is deleted.
	whole := data["00000002.pack"]
	if err := target.Backend.Put(ctx, packsPrefix+"/00000002.pack", bytes.NewReader(whole), int64(len(whole))); err != nil {
		t.Fatal(err)
	}
	if err := target.Backend.List(ctx, segPrefix+"/00000002.pack/", func(o objstore.Object) error {
		return target.Backend.Delete(ctx, o.Name)
	}); err != nil {
		t.Fatal(err)
	}
	before = target.bytes
	if r, err = NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j}); err != nil {
		t.Fatal(err)
	}
	if err := r.CopyPacks(ctx, packsOf(data, "00000002.pack")); err != nil || target.bytes != before {
		t.Fatalf("after the writer: sent %d bytes (%v), want none", target.bytes-before, err)
	}
	data["00000002.pack"][PartSize+1] ^= 0xff
	if r, err = NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j}); err != nil {
		t.Fatal(err)
	}
	if err := r.CopyPacks(ctx, packsOf(data, "00000002.pack")); err != nil || target.bytes-before != int64(len(data["00000002.pack"])) {
		t.Fatalf("after a change: sent %d bytes (%v), want the pack's %d", target.bytes-before, err, len(data["00000002.pack"]))
	}
	if _, err := target.Stat(ctx, packsPrefix+"/00000002.pack"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("the whole object of a changed pack is still there: %v", err)
	}
	if got := readPack(t, target, "00000002.pack", int64(len(data["00000002.pack"]))); !bytes.Equal(got, data["00000002.pack"]) {
		t.Fatal("00000002.pack differs on the target after it changed")
	}
}

// The index goes up file by file; a table the target holds is not sent
// again, and files the snapshot no longer has are deleted.
func TestReplicateIndex(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	target := &counting{Backend: dir}
	j, err := OpenJournal(filepath.Join(t.TempDir(), "j"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	snap := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(snap, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 000005 comes from the source's index; 000007 the snapshot made.
	fromSource := map[string]bool{"000005.sst": true}
	write("000005.sst", "table five")
	write("000007.sst", "table seven")
	write("MANIFEST-000001", "manifest one")
	write("marker.manifest.000001.MANIFEST-000001", "")
	write("LOCK", "")
	r, _ := NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j})
	if err := r.CopyIndex(ctx, snap, fromSource); err != nil {
		t.Fatal(err)
	}
	if r.Stats().IndexFiles != 4 || target.puts[segName(indexPrefix, "LOCK", 0)] != 0 {
		t.Fatalf("first index: %+v, puts %v", r.Stats(), target.puts)
	}
	os.Remove(filepath.Join(snap, "MANIFEST-000001"))
	os.Remove(filepath.Join(snap, "marker.manifest.000001.MANIFEST-000001"))
	write("MANIFEST-000009", "manifest nine")
	write("marker.manifest.000002.MANIFEST-000009", "")
	write("000010.sst", "table ten")
	// The source's own table 000007 now, of the same size as the one the
	// last snapshot made: sent all the same.
	write("000007.sst", "table SEVEN")
	fromSource = map[string]bool{"000005.sst": true, "000007.sst": true, "000010.sst": true}
	r, _ = NewReplicator(ctx, ReplicateOptions{Target: target, Journal: j})
	target.order = nil
	if err := r.CopyIndex(ctx, snap, fromSource); err != nil {
		t.Fatal(err)
	}
	// Tables first, the manifest next, the marker that names it last.
	wantOrder := []string{"index/000007.sst/0000000000000000", "index/000010.sst/0000000000000000",
		"index/MANIFEST-000009/0000000000000000", "index/marker.manifest.000002.MANIFEST-000009/0000000000000000"}
	if strings.Join(target.order, " ") != strings.Join(wantOrder, " ") {
		t.Fatalf("sent %v, want %v in that order", target.order, wantOrder)
	}
	if target.puts[segName(indexPrefix, "000005.sst", 0)] != 1 || r.Stats().PartsSkipped != 1 {
		t.Fatalf("an unchanged table was sent again: puts %v, %+v", target.puts, r.Stats())
	}
	// The journal forgets what the target no longer holds.
	if err := r.Forget(); err != nil {
		t.Fatal(err)
	}
	if _, ok := j.entry(segName(indexPrefix, "MANIFEST-000001", 0)); ok {
		t.Fatal("the journal still has a file the target no longer holds")
	}
	if err := j.Record("x", 1, ""); err != nil {
		t.Fatalf("record after a rewrite: %v", err)
	}
	var names []string
	target.List(ctx, indexPrefix+"/", func(o objstore.Object) error { names = append(names, o.Name); return nil })
	want := []string{"index/000005.sst/0000000000000000", "index/000007.sst/0000000000000000", "index/000010.sst/0000000000000000",
		"index/MANIFEST-000009/0000000000000000", "index/marker.manifest.000002.MANIFEST-000009/0000000000000000"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("target index %v, want %v", names, want)
	}
}

// A replication's bytes go through its bucket: 8 MiB at 1 MiB/s wait 7 s
// of the bucket's clock (a second of rate is free).
func TestReplicateHoldsRate(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	var slept time.Duration
	b := newBucket(1<<20, func() time.Time { return now }, func(_ context.Context, d time.Duration) error {
		slept += d
		now = now.Add(d)
		return nil
	})
	// One part at a time: the fake clock adds up sleeps, where parts
	// sent side by side wait side by side.
	r, err := NewReplicator(ctx, ReplicateOptions{Target: dir, Limit: b, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{"00000001.pack": randomBytes(2*PartSize, 3)}
	if err := r.CopyPacks(ctx, packsOf(data, "")); err != nil {
		t.Fatal(err)
	}
	if r.Stats().BytesSent != 2*PartSize || slept != 7*time.Second {
		t.Fatalf("sent %d bytes waiting %v; want %d bytes, 7s", r.Stats().BytesSent, slept, 2*PartSize)
	}
}
