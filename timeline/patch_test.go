package timeline

import (
	"bytes"
	"context"
	"math"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Writes of parts of blocks are patches over the block's base. Against a
// model of the disk: every version of a clone of a clone reads what the
// model held then, before and after the store is reopened, with runs of
// patches long enough to be cut by whole-block writes; holes that
// Extents reports read as zeroes; Diff between two versions covers every
// byte that differs.
func TestPatchesMatchModel(t *testing.T) {
	for _, rb := range rangeSettings {
		t.Run(rb.name, func(t *testing.T) { testPatchesMatchModel(t, rb.blocks) })
	}
}

func testPatchesMatchModel(t *testing.T, rangeBlocks int64) {
	const bs = 16 << 10
	const size = 8*bs - 512 // a short last block
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1000, rangeBlocks: rangeBlocks}
	e.open()
	defer func() { e.close() }()
	rng := rand.New(rand.NewSource(7))
	disk := make([]byte, size)
	rng.Read(disk[:3*bs])
	rng.Read(disk[5*bs : 6*bs])
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(disk), Size: size, At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	type version struct {
		vol  string
		t    int64
		want []byte
	}
	var versions []version
	write := func(vol string, writes int) {
		m, err := e.s.Volume(vol)
		if err != nil {
			t.Fatal(err)
		}
		v, err := e.s.Head(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		for range writes {
			off := rng.Int63n(size)
			n := 1 + rng.Int63n(min(size-off, int64(rng.Intn(3)+1)*6000))
			if rng.Intn(4) == 0 { // hot spots: the first 4 KiB of blocks 1 and 6
				off, n = int64(1+5*rng.Intn(2))*bs+int64(rng.Intn(4096)), 1+rng.Int63n(4096)
			}
			switch k := rng.Intn(10); {
			case k < 6:
				p := make([]byte, n)
				rng.Read(p)
				if _, err := v.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
				copy(disk[off:], p)
			case k < 8:
				if rangeBlocks != 0 && rng.Intn(2) == 0 { // runs of whole blocks
					n = 1 + rng.Int63n(size-off)
				}
				if err := v.WriteZeroes(off, n); err != nil {
					t.Fatal(err)
				}
				clear(disk[off : off+n])
			default:
				if rangeBlocks != 0 && rng.Intn(2) == 0 {
					n = 1 + rng.Int63n(size-off)
				}
				if err := v.Trim(off, n); err != nil {
					t.Fatal(err)
				}
				clear(disk[off : off+n])
			}
			e.clock += 10
			m, err := e.s.Volume(vol)
			if err != nil {
				t.Fatal(err)
			}
			versions = append(versions, version{vol, m.Last, bytes.Clone(disk)})
		}
	}
	check := func(when string) {
		t.Helper()
		for i, ver := range versions {
			m, err := e.s.Volume(ver.vol)
			if err != nil {
				t.Fatal(err)
			}
			v, err := e.s.ViewAt(m.ID, ver.t)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := v.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, ver.want) {
				t.Fatalf("%s: %s version %d reads other bytes than were written", when, ver.vol, i)
			}
			// Unaligned reads across blocks, through the cache.
			for range 4 {
				off := rng.Int63n(size)
				p := make([]byte, 1+rng.Int63n(size-off))
				if _, err := v.ReadAt(p, off); err != nil || !bytes.Equal(p, ver.want[off:off+int64(len(p))]) {
					t.Fatalf("%s: %s version %d: a read of %d bytes at %d differs (%v)", when, ver.vol, i, len(p), off, err)
				}
			}
			exts, err := v.Extents(0, size)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range exts {
				if x.Hole && !isZero(ver.want[x.Offset:x.Offset+x.Length]) {
					t.Fatalf("%s: %s version %d: a hole at %d holds data", when, ver.vol, i, x.Offset)
				}
			}
			v.Close()
			if i == 0 || versions[i-1].vol != ver.vol {
				continue
			}
			prev := versions[i-1]
			ranges, err := e.s.Diff(m.ID, prev.t, ver.t)
			if err != nil {
				t.Fatal(err)
			}
			covered := make([]bool, size)
			for _, r := range ranges {
				for o := r.Offset; o < r.Offset+r.Length; o++ {
					covered[o] = true
				}
			}
			for o := range covered {
				if !covered[o] && prev.want[o] != ver.want[o] {
					t.Fatalf("%s: %s diff of versions %d and %d misses byte %d", when, ver.vol, i-1, i, o)
				}
			}
		}
	}
	if _, err := e.s.Clone("a", 100, "c1"); err != nil {
		t.Fatal(err)
	}
	write("c1", 150)
	m, err := e.s.Volume("c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("c1", m.Last, "c2"); err != nil {
		t.Fatal(err)
	}
	write("c2", 150)
	check("open")
	e.close()
	e.open()
	check("reopened")
	// Writes go on after a reopen, which forgot the runs' lengths.
	write("c2", 100)
	check("written after reopen")
	if n := allRanges(t, e.db); rangeBlocks == 1 && n == 0 {
		t.Fatal("no range record was written: the model checked none")
	}
}

// A block's run of patches is bounded: past maxPatches a write of part of
// it stores the whole block, so a read never applies more than that.
func TestPatchRunsAreBounded(t *testing.T) {
	const bs = 64 << 10
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1000}
	e.open()
	defer e.close()
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(randomBytes(1, bs)), Size: bs, At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("a", 100, "c"); err != nil {
		t.Fatal(err)
	}
	v := cloneView(t, e)
	defer v.Close()
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	longest := 0
	for i := range 5 * maxPatches {
		if _, err := v.WriteAt(randomBytes(int64(i), 4096), int64(i%16)*4096); err != nil {
			t.Fatal(err)
		}
		var ref [1]blockRef
		if err := e.s.resolve(m, math.MaxInt64, 0, ref[:]); err != nil {
			t.Fatal(err)
		}
		longest = max(longest, len(ref[0].patches))
		if ref[0].kind != refChunk && i >= maxPatches {
			t.Fatalf("after %d writes the block has no base of its own", i+1)
		}
	}
	if longest != maxPatches {
		t.Fatalf("the longest run of patches was %d, want %d", longest, maxPatches)
	}
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}
