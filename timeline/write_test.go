package timeline

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
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
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(base), Size: size, At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("a", 100, "c"); err != nil {
		t.Fatal(err)
	}
	v := cloneView(t, e)
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
		at, err := e.s.ViewAt(m.ID, ver.Time)
		if err != nil {
			t.Fatal(err)
		}
		cur := make([]byte, size)
		if _, err := at.ReadAt(cur, 0); err != nil {
			t.Fatal(err)
		}
		at.Close()
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
