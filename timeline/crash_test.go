package timeline

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	randv2 "math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// crashingSource reads from data and, once offset reaches at, takes a
// crash image of the filesystem and fails.
type crashingSource struct {
	data    []byte
	at      int64
	fs      *vfs.MemFS
	crashed *vfs.MemFS
	rng     *randv2.Rand
}

var errKilled = errors.New("killed")

func (c *crashingSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= c.at {
		if c.crashed == nil {
			c.crashed = c.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: c.rng})
		}
		return 0, errKilled
	}
	return copy(p, c.data[off:]), nil
}

func pattern(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	for i := 0; i < n; i += 7 * testBS { // some holes
		clear(b[i:min(i+testBS, n)])
	}
	return b
}

// TestImportKilledAnywhere kills imports at many points: the crashed store
// must reopen cleanly, hold no trace of the killed version, and read every
// earlier version back bit for bit.
func TestImportKilledAnywhere(t *testing.T) {
	const seg = 4 << 20 // imports read in segments of 4 MiB
	const size = 4 * seg
	v1, v2 := pattern(1, size), pattern(2, size)
	for i, at := range []int64{0, seg, 2 * seg, 3 * seg} {
		rng := randv2.New(randv2.NewPCG(uint64(i), 1))
		e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
		e.open()
		e.s.partBlocks = 16 // many parts, so a kill lands between them
		ctx := context.Background()
		if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(v1), Size: size, At: 100, BlockSize: testBS}); err != nil {
			t.Fatal(err)
		}
		src := &crashingSource{data: v2, at: at, fs: e.fs, rng: rng}
		_, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: src, Size: size, At: 200, Workers: 1})
		if !errors.Is(err, errKilled) {
			t.Fatalf("kill at %d: import returned %v", at, err)
		}
		// The failed import undid itself in the live store...
		checkOnlyV1(t, e, v1)
		e.close()
		// ...and the store as a crash left it reopens and recovers.
		e.fs = src.crashed
		e.open()
		checkOnlyV1(t, e, v1)
		// A new import after recovery works.
		if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(v2), Size: size, At: 300}); err != nil {
			t.Fatal(err)
		}
		checkRead(t, e, 300, v2)
		checkRead(t, e, 100, v1)
		e.close()
	}
}

func checkOnlyV1(t *testing.T, e *scriptEnv, v1 []byte) {
	t.Helper()
	m, err := e.s.Volume("a")
	if err != nil {
		t.Fatal(err)
	}
	if m.Versions != 1 || m.Last != 100 {
		t.Fatalf("volume after a killed import: %d versions, last %d", m.Versions, m.Last)
	}
	checkRead(t, e, 100, v1)
	// No version keys at 200 survive, even beyond what reads would see.
	lo, hi := volumeBounds(tagVersion, m.ID)
	it, _ := e.db.NewIter(nil)
	defer it.Close()
	for it.SeekGE(lo); it.Valid() && bytes.Compare(it.Key(), hi) < 0; it.Next() {
		if _, _, vt, _ := parseVersionKey(it.Key()); vt != 100 {
			t.Fatalf("version key of the killed import left behind: %s", formatKey(it.Key()))
		}
	}
	lo, hi = []byte{tagPending}, []byte{tagPending + 1}
	if it.SeekGE(lo); it.Valid() && bytes.Compare(it.Key(), hi) < 0 {
		t.Fatalf("pending marker left behind")
	}
}

func checkRead(t *testing.T, e *scriptEnv, at int64, want []byte) {
	t.Helper()
	m, _ := e.s.Volume("a")
	v, err := e.s.ViewAt(m.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("as of %d: contents differ", at)
	}
}

// TestNewVolumeImportKilled: a killed first import leaves no volume.
func TestNewVolumeImportKilled(t *testing.T) {
	const size = 12 << 20
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	e.s.partBlocks = 8
	src := &crashingSource{data: pattern(3, size), at: 8 << 20, fs: e.fs, rng: randv2.New(randv2.NewPCG(9, 9))}
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "n", Source: src, Size: size, At: 100, BlockSize: testBS, Workers: 1}); !errors.Is(err, errKilled) {
		t.Fatalf("import returned %v", err)
	}
	if _, err := e.s.Volume("n"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("half-imported volume is visible: %v", err)
	}
	e.close()
	e.fs = src.crashed
	e.open()
	defer e.close()
	if vs := e.s.Volumes(); len(vs) != 0 {
		t.Fatalf("volumes after a killed first import: %v", vs)
	}
}

// TestCloneWritesCrash: clone writes commit without a sync, so a power
// loss may keep any part of what they wrote. Whatever it keeps, no block
// reads as an error afterwards: an index entry never reaches the disk
// before the pack bytes it points at.
func TestCloneWritesCrash(t *testing.T) {
	for seed := range uint64(8) {
		e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
		e.open()
		const size = 256 * testBS
		v := cloneOf(t, e, pattern(1, size), testBS)
		rng := randv2.New(randv2.NewPCG(seed, 2))
		orig := pattern(1, size)
		written := map[int][]byte{} // the values written to each block
		// Enough writes that the index's log reaches its file without a
		// sync several times over.
		for i := range 600 {
			b := rng.IntN(256)
			if _, err := v.WriteAt(block(byte(i)), int64(b)*testBS); err != nil {
				t.Fatal(err)
			}
			written[b] = append(written[b], byte(i))
		}
		crashed := e.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
		v.Close()
		e.close()
		e.fs = crashed
		e.open()
		v = cloneView(t, e)
		buf := make([]byte, size)
		if _, err := v.ReadAt(buf, 0); err != nil {
			t.Fatalf("seed %d: after a power loss the clone reads as %v", seed, err)
		}
		// Each block reads as it was or as one of the writes to it: a
		// lost write never leaves other bytes.
		for b := range 256 {
			got := buf[b*testBS : (b+1)*testBS]
			ok := bytes.Equal(got, orig[b*testBS:(b+1)*testBS])
			for _, w := range written[b] {
				ok = ok || bytes.Equal(got, block(w))
			}
			if !ok {
				t.Fatalf("seed %d: block %d reads as neither its old bytes nor a write to it", seed, b)
			}
		}
		// Every chunk the index names can be read.
		it, _ := e.db.NewIter(nil)
		for it.SeekGE([]byte{'c'}); it.Valid() && it.Key()[0] == 'c'; it.Next() {
			var id [32]byte
			copy(id[:], it.Key()[1:])
			if _, err := e.bs.Get(id); err != nil {
				t.Fatalf("seed %d: chunk %x indexed without its bytes: %v", seed, id[:8], err)
			}
		}
		it.Close()
		v.Close()
		e.close()
	}
}

// packBytes is the size of every pack in fs.
func packBytes(t *testing.T, fs vfs.FS) int64 {
	t.Helper()
	names, err := fs.List("packs")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, name := range names {
		if !strings.HasSuffix(name, ".pack") {
			continue // parity files come and go as packs are sealed
		}
		fi, err := fs.Stat(fs.PathJoin("packs", name))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestFailedImportGivesSpaceBack: an import that fails gives its pack
// bytes back at once; one killed gives them back at the next open.
func TestFailedImportGivesSpaceBack(t *testing.T) {
	const seg = 4 << 20
	const size = 4 * seg
	v1, v2 := pattern(1, size), pattern(2, size)
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem()}
	e.open()
	e.s.partBlocks = 64 // parts commit chunk entries before the failure
	ctx := context.Background()
	if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(v1), Size: size, At: 100, BlockSize: testBS}); err != nil {
		t.Fatal(err)
	}
	before := packBytes(t, e.fs)
	src := &crashingSource{data: v2, at: 3 * seg, fs: e.fs, rng: randv2.New(randv2.NewPCG(5, 5))}
	if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: src, Size: size, At: 200, Workers: 1}); !errors.Is(err, errKilled) {
		t.Fatalf("import returned %v", err)
	}
	if after := packBytes(t, e.fs); after != before {
		t.Fatalf("packs hold %d bytes after a failed import, %d before", after, before)
	}
	if killed := packBytes(t, src.crashed); killed <= before {
		t.Fatalf("the killed import left %d bytes of packs, %d before: it stored nothing", killed, before)
	}
	// The same import killed instead: its bytes go at the next open.
	e.close()
	e.fs = src.crashed
	e.open()
	defer e.close()
	if after := packBytes(t, e.fs); after != before {
		t.Fatalf("packs hold %d bytes after reopening from a killed import, %d before", after, before)
	}
	checkOnlyV1(t, e, v1)
	if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(v2), Size: size, At: 300}); err != nil {
		t.Fatal(err)
	}
	checkRead(t, e, 300, v2)
	checkRead(t, e, 100, v1)
}
