package timeline

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every version value that names a chunk also says where the chunk lay
// (blockstore.Place): imports, whole-block and partial writes, patches
// and folded blocks alike.
func TestVersionValuesCarryPlaces(t *testing.T) {
	p := newPruneEnv(t, 0)
	p.e.s.fold.idle.Store(int64(time.Millisecond))
	p.write(t, 300)
	p.e.s.waitFolds()
	requireFolded(t, p)
	known, unknown := countPlaces(t, p.e.db)
	if unknown != 0 || known < 100 {
		t.Fatalf("%d chunk references with a place, %d without", known, unknown)
	}
}

func countPlaces(t *testing.T, db *pebble.DB) (known, unknown int) {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagVersion}, UpperBound: []byte{tagVersion + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		e, err := decodeValue(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.isPatch && !e.patch.zero && e.patch.place.Known(), !e.isPatch && e.ref.kind == refChunk && e.ref.place.Known():
			known++
		case e.isPatch && e.patch.zero, !e.isPatch && e.ref.kind != refChunk:
		default:
			unknown++
		}
	}
	return known, unknown
}

// A store opened afresh reads an import and a clone's whole blocks and
// patches, at every instant, without looking one chunk up in the index:
// the versions' places say where they are.
func TestReadsFollowPlaces(t *testing.T) {
	const bs = 16 << 10
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1000}
	e.open()
	t.Cleanup(func() { e.close() })
	rng := rand.New(rand.NewSource(9))
	disk := make([]byte, 8*bs)
	rng.Read(disk[:6*bs])
	copy(disk[6*bs:], bytes.Repeat([]byte("compressible "), bs/4)) // bundled
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(disk), Size: int64(len(disk)), At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	m, err := e.s.Clone("a", 100, "c")
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[int64][]byte{m.Last: bytes.Clone(disk)}
	v := openAs(t, e, "c", 0)
	for _, w := range []struct{ off, n int64 }{{0, bs}, {bs + 100, 4096}, {bs + 9000, 3000}, {7 * bs, 512}} {
		b := make([]byte, w.n)
		rng.Read(b)
		copy(disk[w.off:], b)
		imgs[mustWrite(t, e, v, b, w.off)] = bytes.Clone(disk)
	}
	v.Close()
	e.close()
	e.open()
	before := e.bs.IndexLookups()
	for at, want := range imgs {
		if !bytes.Equal(readAs(t, e, "c", at), want) {
			t.Fatalf("instant %d reads other bytes", at)
		}
	}
	if n := e.bs.IndexLookups() - before; n != 0 {
		t.Fatalf("reading every instant looked %d chunks up in the index", n)
	}
}
