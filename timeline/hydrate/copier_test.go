package hydrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

// patterned returns a source of size bytes where every third 16 KiB
// block is a hole and the rest hold pseudo-random data.
func patterned(size int64) *memSource {
	s := newMemSource(size, 16*kib)
	r := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < size; off += 16 * kib {
		if (off/(16*kib))%3 == 2 {
			continue
		}
		p := make([]byte, min(16*kib, size-off))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		s.write(p, off)
	}
	return s
}

func fileSum(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	p, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(p)) != size {
		t.Fatalf("target has %d bytes, want %d", len(p), size)
	}
	return sha256.Sum256(p)
}

// copyAll runs c until it converges and cuts over.
func copyAll(t *testing.T, c *Copier) {
	t.Helper()
	wait := run(context.Background(), c)
	resume, err := c.Cutover(context.Background(), noPause)
	if err != nil {
		t.Fatalf("Cutover: %v", err)
	}
	resume()
	if err := wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestCopyToNewSparseFile(t *testing.T) {
	src := patterned(4*mib + 5000) // a partial last granule
	path := filepath.Join(t.TempDir(), "target.raw")
	dst, err := CreateFile(path, src.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	c, err := New(src, dst, Options{TargetZeroed: true})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, c)
	if got, want := fileSum(t, path, src.Size()), src.sum(); got != want {
		t.Fatal("target differs from source")
	}
	if p := c.Progress(); p.State != StateCutOver || p.Done != p.Total || p.Dirty != 0 {
		t.Fatalf("progress after cutover: %+v", p)
	}
}

func TestCopyOverGarbageZeroesHoles(t *testing.T) {
	src := patterned(2*mib + 512)
	path := filepath.Join(t.TempDir(), "target.raw")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xee}, int(src.Size())), 0o600); err != nil {
		t.Fatal(err)
	}
	dst, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	c, err := New(src, dst, Options{Granularity: 32 * kib, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	copyAll(t, c)
	if got, want := fileSum(t, path, src.Size()), src.sum(); got != want {
		t.Fatal("target differs from source: holes not zeroed?")
	}
}

func TestTargetTooSmall(t *testing.T) {
	src := patterned(1 * mib)
	_, err := New(src, newMemTarget(mib-1), Options{})
	if !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("New = %v, want ErrTargetTooSmall", err)
	}
}

func TestWritesDuringCopyReachTarget(t *testing.T) {
	for _, mode := range []Mode{ModeBackground, ModeWriteBlocking} {
		t.Run(mode.String(), func(t *testing.T) {
			src := patterned(2 * mib)
			dst := newMemTarget(src.Size())
			c, err := New(src, dst, Options{Granularity: 16 * kib, MaxRequest: 64 * kib, Workers: 4,
				WriteBlocking: mode == ModeWriteBlocking})
			if err != nil {
				t.Fatal(err)
			}
			wait := run(context.Background(), c)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 7))
					for range 200 {
						p := make([]byte, 512+r.IntN(20*int(kib)))
						for i := range p {
							p[i] = byte(r.Uint32())
						}
						off := r.Int64N(src.Size() - int64(len(p)))
						w, err := c.BeginWrite(context.Background(), off, int64(len(p)))
						if err != nil {
							t.Error(err)
							return
						}
						src.write(p, off)
						if err := w.Finish(p); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			cutoverMatches(t, c, wait, src, dst, "target differs from source after writes during the copy")
		})
	}
}

// A granule the copier filled on a zeroed target is no longer known to
// be zero: a trim of it afterwards must reach the target.
func TestTrimAfterCopyReachesZeroedTarget(t *testing.T) {
	const gran = 16 * kib
	src := allData(8, gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, TargetZeroed: true, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	wait := run(context.Background(), c)
	if err := c.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	w, err := c.BeginWrite(context.Background(), 2*gran, 3*gran)
	if err != nil {
		t.Fatal(err)
	}
	src.trim(2*gran, 3*gran)
	if err := w.FinishZeroes(); err != nil {
		t.Fatal(err)
	}
	cutoverMatches(t, c, wait, src, dst, "the trim did not reach the target")
}
