package timeline

import (
	"bytes"
	"fmt"
	"math/rand"
	randv2 "math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Writers that share blocks run side by side; none may lose another's
// bytes (a partial-block write reads the rest of the block first), and
// each write is a version of its own: going through the clone's history
// version by version, each one changes exactly one writer's range, to
// that writer's next payload.
func TestConcurrentWritesShareBlocks(t *testing.T) {
	const bs = 64 << 10
	const size = 4 * bs
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer e.close()
	base := pattern(1, size)
	v := cloneOf(t, e, base, bs)
	defer v.Close()
	// Each writer's range: 4 KiB at offsets that are not page aligned,
	// seven in block 0, one across blocks 0 and 1, four in block 1.
	var ranges [][2]int64
	for g := range 7 {
		ranges = append(ranges, [2]int64{int64(g)*8192 + 1024, 4096})
	}
	ranges = append(ranges, [2]int64{bs - 2048, 4096})
	for g := range 4 {
		ranges = append(ranges, [2]int64{bs + 4096 + int64(g)*8192 + 512, 4096})
	}
	const rounds = 15
	payload := func(g, i int) []byte {
		b := make([]byte, 4096)
		rand.New(rand.NewSource(int64(1000*g + i))).Read(b)
		return b
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ranges))
	for g, r := range ranges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if _, err := v.WriteAt(payload(g, i), r[0]); err != nil {
					errs <- fmt.Errorf("writer %d, write %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := bytes.Clone(base)
	for g, r := range ranges {
		copy(want[r[0]:], payload(g, rounds-1))
	}
	got := make([]byte, size)
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the writes the clone holds other bytes (%v)", err)
	}
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	log, err := e.s.Log(m.ID, 0, m.Last)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 1+len(ranges)*rounds {
		t.Fatalf("%d versions, want the clone's and %d writes'", len(log), len(ranges)*rounds)
	}
	prev, next := base, make([]int, len(ranges))
	for _, ver := range log[1:] {
		cur := readAs(t, e, "c", ver.Time)
		changed := -1
		for g, r := range ranges {
			if !bytes.Equal(cur[r[0]:r[0]+r[1]], prev[r[0]:r[0]+r[1]]) {
				if changed >= 0 {
					t.Fatalf("version %s changed the ranges of writers %d and %d", FormatTime(ver.Time), changed, g)
				}
				changed = g
			}
		}
		if changed < 0 {
			t.Fatalf("version %s changed no writer's range", FormatTime(ver.Time))
		}
		r := ranges[changed]
		if !bytes.Equal(cur[r[0]:r[0]+r[1]], payload(changed, next[changed])) {
			t.Fatalf("version %s holds writer %d's bytes out of order", FormatTime(ver.Time), changed)
		}
		outside := bytes.Clone(cur)
		copy(outside[r[0]:r[0]+r[1]], prev[r[0]:r[0]+r[1]])
		if !bytes.Equal(outside, prev) {
			t.Fatalf("version %s changed bytes outside writer %d's range", FormatTime(ver.Time), changed)
		}
		next[changed]++
		prev = cur
	}
}

// A write's block locks are those of its blocks' stripes and no others,
// whether its run wraps around the stripes or covers them all, and all
// are free again once it is done.
func TestBlockLocksCoverTheirStripes(t *testing.T) {
	var l blockLocks
	for _, c := range [][2]uint64{{0, 1}, {5, 9}, {250, 256}, {250, 260}, {255, 257}, {512, 768}, {3, 3 + blockStripes}, {7, 1000}} {
		release := l.lock(c[0], c[1])
		for i := range l.stripes {
			mine := c[1]-c[0] >= blockStripes
			for b := c[0]; b < c[1] && !mine; b++ {
				mine = b%blockStripes == uint64(i)
			}
			if free := l.stripes[i].TryLock(); free {
				l.stripes[i].Unlock()
				if mine {
					t.Fatalf("blocks [%d, %d): stripe %d is free", c[0], c[1], i)
				}
			} else if !mine {
				t.Fatalf("blocks [%d, %d): stripe %d is taken", c[0], c[1], i)
			}
		}
		release()
		for i := range l.stripes {
			if !l.stripes[i].TryLock() {
				t.Fatalf("blocks [%d, %d): stripe %d still taken after release", c[0], c[1], i)
			}
			l.stripes[i].Unlock()
		}
	}
}

// Small writes into large blocks (stored as deltas of the blocks' old
// chunks) survive a power loss once flushed: after a crash that keeps only
// some of what was not synced, every block of the flushed half reads as
// flushed, the rest reads without error, and every chunk the index names
// can be read.
func TestFlushedSmallWritesSurviveCrash(t *testing.T) {
	const bs = 64 << 10
	const size = 32 * bs
	for seed := range uint64(4) {
		e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
		e.open()
		v := cloneOf(t, e, pattern(1, size), bs)
		rng := randv2.New(randv2.NewPCG(seed, 3))
		write := func(lo, hi int64) {
			p := make([]byte, 4096)
			for range 300 {
				for i := range p {
					p[i] = byte(rng.IntN(256))
				}
				off := lo + rng.Int64N((hi-lo-4096)/512)*512
				if _, err := v.WriteAt(p, off); err != nil {
					t.Fatal(err)
				}
			}
		}
		write(0, size/2)
		if err := v.Flush(); err != nil {
			t.Fatal(err)
		}
		flushed := make([]byte, size/2)
		if _, err := v.ReadAt(flushed, 0); err != nil {
			t.Fatal(err)
		}
		write(size/2, size)
		// Half the seeds lose everything not synced.
		crashed := e.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(seed%2) * 50, RNG: rng})
		v.Close()
		e.close()
		e.fs = crashed
		e.open()
		v = cloneView(t, e)
		got := make([]byte, size)
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatalf("seed %d: after a power loss the clone reads as %v", seed, err)
		}
		if !bytes.Equal(got[:size/2], flushed) {
			t.Fatalf("seed %d: flushed writes were lost", seed)
		}
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

// Zeroing or trimming blocks that are holes records nothing: a guest's
// fstrim of free space, run again and again, adds no version. Zeroing a
// range that holds data records a version of the data blocks only.
func TestTrimOfHolesRecordsNothing(t *testing.T) {
	const bs = 64 << 10
	const size = 64 * bs
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer e.close()
	base := make([]byte, size)
	copy(base[3*bs:], pattern(1, 2*bs)) // blocks 3 and 4 hold data
	v := cloneOf(t, e, base, bs)
	defer v.Close()
	m, _ := v.Volume()
	versions := func() int {
		t.Helper()
		log, err := e.s.Log(m.ID, 0, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		return len(log)
	}
	before := versions()
	for range 3 {
		if err := v.Trim(10*bs, 40*bs); err != nil {
			t.Fatal(err)
		}
		if err := v.WriteZeroes(20*bs+100, 5000); err != nil { // inside a hole block
			t.Fatal(err)
		}
	}
	if got := versions(); got != before {
		t.Fatalf("trims of holes recorded %d versions", got-before)
	}
	if err := v.Trim(0, 8*bs); err != nil {
		t.Fatal(err)
	}
	log, err := e.s.Log(m.ID, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != before+1 || log[len(log)-1].Blocks != 2 {
		t.Fatalf("trim over two data blocks: versions %+v, want one more, of 2 blocks", log)
	}
	got := make([]byte, size)
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, size)) {
		t.Fatalf("after the trims the clone does not read as zeroes (%v)", err)
	}
}
