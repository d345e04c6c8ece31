package timeline

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// recordingReader records the ranges read from it.
type recordingReader struct {
	*bytes.Reader
	mu    sync.Mutex
	reads []Range
}

func (r *recordingReader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.reads = append(r.reads, Range{Offset: off, Length: int64(len(p))})
	r.mu.Unlock()
	return r.Reader.ReadAt(p, off)
}

func (r *recordingReader) bytes() int64 {
	var n int64
	for _, x := range r.reads {
		n += x.Length
	}
	return n
}

// An import of changed blocks (a dirty bitmap) reads only those blocks,
// and every other block keeps its version even where the new source
// differs or is a hole.
func TestImportChangedReadsOnlyChangedBlocks(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	defer e.close()
	const size = 2048 * testBS // 8 MiB: two segments
	v1 := pattern(1, size)
	ctx := context.Background()
	if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(v1), Size: size, At: 100, BlockSize: testBS}); err != nil {
		t.Fatal(err)
	}
	// The source now differs everywhere, but only two runs are marked
	// changed: one of data, one that became a hole (and Data says so).
	v2 := pattern(2, size)
	clear(v2[1500*testBS : 1504*testBS])
	changed := []Range{{Offset: 10 * testBS, Length: 3 * testBS}, {Offset: 1500 * testBS, Length: 4 * testBS}}
	data := []Range{{Offset: 0, Length: 1500 * testBS}, {Offset: 1504 * testBS, Length: size - 1504*testBS}}
	src := &recordingReader{Reader: bytes.NewReader(v2)}
	res, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: src, Size: size, At: 200, Changed: changed, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if got := src.bytes(); got != 3*testBS {
		t.Fatalf("read %d bytes (%v), want only the 3 changed data blocks", got, src.reads)
	}
	if res.Blocks != 7 {
		t.Fatalf("%d blocks got a new version, want 7", res.Blocks)
	}
	want := bytes.Clone(v1)
	copy(want[10*testBS:13*testBS], v2[10*testBS:13*testBS])
	clear(want[1500*testBS : 1504*testBS])
	view, err := e.s.ViewAt(res.Volume.ID, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	got := make([]byte, size)
	if _, err := view.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the version holds other than the old blocks with the changed ones replaced")
	}

	// Changed blocks need a volume to keep the others from.
	_, err = e.s.Import(ctx, ImportOptions{Name: "new", Source: bytes.NewReader(v2), Size: size, At: 300, Changed: changed})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("changed-only import of a new volume: %v, want ErrNotFound", err)
	}
}

// TestImportComparesPatchedBlocksByContent: an import over a protected
// volume (the comparison after an unclean stop) stores only the blocks
// whose bytes differ; a block that writes left in patches, and that the
// source holds as it is, is not a change.
func TestImportComparesPatchedBlocksByContent(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer func() { e.close() }()
	const size = 8 * testBS
	primary := pattern(2, size)
	p, err := e.s.Import(context.Background(), ImportOptions{Name: "p", Source: bytes.NewReader(primary), Size: size, BlockSize: testBS, Kind: KindProtected})
	if err != nil {
		t.Fatal(err)
	}
	head, err := e.s.Head(p.Volume.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer head.Close()
	for _, w := range []struct {
		off int64
		b   byte
	}{{1*testBS + 10, 7}, {3*testBS + 100, 8}, {3*testBS + 2000, 9}, {5 * testBS, 10}} {
		data := bytes.Repeat([]byte{w.b}, 512)
		if _, err := head.WriteAt(data, w.off); err != nil {
			t.Fatal(err)
		}
		copy(primary[w.off:], data)
	}
	// The primary kept one more write that the timeline did not.
	copy(primary[5*testBS+1000:], bytes.Repeat([]byte{11}, 512))
	res, err := e.s.Import(context.Background(), ImportOptions{Name: "p", Source: bytes.NewReader(primary), Size: size,
		Changed: []Range{{Offset: 0, Length: size}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks != 1 {
		t.Fatalf("the comparison recorded %d blocks, want 1 (the one that differs)", res.Blocks)
	}
	at, err := e.s.ViewAt(p.Volume.ID, res.Time)
	if err != nil {
		t.Fatal(err)
	}
	defer at.Close()
	got := make([]byte, size)
	if _, err := at.ReadAt(got, 0); err != nil || !bytes.Equal(got, primary) {
		t.Fatalf("after the comparison the volume does not read as the primary: %v", err)
	}
}

// TestImportSkipUnchanged: with SkipUnchanged, an import that finds no
// block different records no version and leaves nothing pending; one
// that finds a difference records it as any import does.
func TestImportSkipUnchanged(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer func() { e.close() }()
	const size = 8 * testBS
	src := pattern(3, size)
	ctx := context.Background()
	first, err := e.s.Import(ctx, ImportOptions{Name: "p", Source: bytes.NewReader(src), Size: size, BlockSize: testBS})
	if err != nil {
		t.Fatal(err)
	}
	for _, changed := range [][]Range{nil, {{Offset: 0, Length: size}}} {
		res, err := e.s.Import(ctx, ImportOptions{Name: "p", Source: bytes.NewReader(src), Size: size, Changed: changed, SkipUnchanged: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Time != 0 || res.Blocks != 0 {
			t.Fatalf("an unchanged source (changed ranges %v) recorded a version at %d with %d blocks", changed, res.Time, res.Blocks)
		}
	}
	m, err := e.s.Volume("p")
	if err != nil {
		t.Fatal(err)
	}
	log, err := e.s.Log(m.ID, 0, m.Last)
	if err != nil {
		t.Fatal(err)
	}
	if m.Versions != 1 || len(log) != 1 || m.Last != first.Time {
		t.Fatalf("after two unchanged imports: %d versions (log %d), newest %d; want only the first, %d", m.Versions, len(log), m.Last, first.Time)
	}
	// Reopened, nothing was left pending to undo, and a change is a
	// version.
	e.close()
	e.open()
	copy(src[2*testBS:], bytes.Repeat([]byte{9}, 100))
	res, err := e.s.Import(ctx, ImportOptions{Name: "p", Source: bytes.NewReader(src), Size: size, SkipUnchanged: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Time == 0 || res.Blocks != 1 {
		t.Fatalf("a changed source: version at %d with %d blocks, want one block recorded", res.Time, res.Blocks)
	}
	if m, _ = e.s.Volume("p"); m.Versions != 2 {
		t.Fatalf("%d versions after a changed import, want 2", m.Versions)
	}
}
