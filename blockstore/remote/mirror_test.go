package remote

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
)

func openBackend(t *testing.T) objstore.Backend {
	t.Helper()
	b, err := objstore.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMirrorRestoresWhatWasSynced writes an index through flushes,
// compactions and log rotations, and after each round brings the
// object store's copy down while the database is still open (what a
// machine lost at that moment leaves): every key committed with Sync is
// there, with its value.
func TestMirrorRestoresWhatWasSynced(t *testing.T) {
	b := openBackend(t)
	dir := filepath.Join(t.TempDir(), "index")
	m, err := NewMirror(MirrorOptions{Dir: dir, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(dir, &pebble.Options{FS: m, MemTableSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want := map[string]string{}
	for round := range 4 {
		for i := range 2000 {
			k, v := fmt.Sprintf("k%05d", (i*7+round*13)%3000), fmt.Sprintf("round %d value %d", round, i)
			opt := pebble.NoSync
			if i%100 == 99 {
				opt = pebble.Sync // the NoSync ones before it are made durable too
			}
			if err := db.Set([]byte(k), []byte(v), opt); err != nil {
				t.Fatal(err)
			}
			want[k] = v
		}
		if round == 1 {
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if round == 2 {
			if err := db.Compact(t.Context(), []byte("k"), []byte("l"), true); err != nil {
				t.Fatal(err)
			}
		}
		got := filepath.Join(t.TempDir(), "restored")
		if _, err := Restore(b, vfs.Default, got, nil, nil); err != nil {
			t.Fatal(err)
		}
		rdb, err := pebble.Open(got, &pebble.Options{})
		if err != nil {
			t.Fatalf("round %d: open the restored index: %v", round, err)
		}
		for k, v := range want {
			val, closer, err := rdb.Get([]byte(k))
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, k, err)
			}
			if string(val) != v {
				t.Fatalf("round %d: %s = %q, want %q", round, k, val, v)
			}
			closer.Close()
		}
		rdb.Close()
	}
	// Removed files leave the object store: what is there is what the
	// directory holds (less the lock).
	local, _ := vfs.Default.List(dir)
	n := 0
	for _, name := range local {
		if name != "LOCK" {
			n++
		}
	}
	objs, _ := newConn(b, nil, 0, true).list(indexPrefix + "/")
	files := map[string]bool{}
	for _, o := range objs {
		base, _, _ := parseSeg(o.Name[len(indexPrefix)+1:])
		files[base] = true
	}
	if len(files) != n {
		t.Fatalf("object store holds %d index files, the directory %d: %v vs %v", len(files), n, files, local)
	}
}

// TestMirrorMergesSmallSegments: a log synced after every write leaves a
// few objects, not one per sync.
func TestMirrorMergesSmallSegments(t *testing.T) {
	b := openBackend(t)
	dir := filepath.Join(t.TempDir(), "index")
	m, err := NewMirror(MirrorOptions{Dir: dir, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := m.Create(filepath.Join(dir, "000001.log"), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range 1000 {
		p := []byte(fmt.Sprintf("record %04d;", i))
		all = append(all, p...)
		if _, err := f.Write(p); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	objs, _ := newConn(b, nil, 0, true).list(indexPrefix + "/")
	if len(objs) > 12 {
		t.Fatalf("%d objects for 1000 syncs", len(objs))
	}
	got := filepath.Join(t.TempDir(), "r")
	if _, err := Restore(b, vfs.Default, got, nil, nil); err != nil {
		t.Fatal(err)
	}
	data, err := readFile(filepath.Join(got, "000001.log"))
	if err != nil || string(data) != string(all) {
		t.Fatalf("restored log differs (%v): %d bytes, want %d", err, len(data), len(all))
	}
}
