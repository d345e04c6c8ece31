package mount

import (
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// The overlay reads like its base until written, keeps partial-block
// writes exact, and never writes the base.
func TestOverlayCopyOnWrite(t *testing.T) {
	base := randomBytes(4, 1<<20+100) // the last block is partial
	model := slices.Clone(base)
	ov, err := newOverlay(&fakeImage{data: base}, t.TempDir()) // WriteAt on the base fails
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	write := func(off int64, n int) {
		t.Helper()
		p := randomBytes(uint64(off)+uint64(n), n+8)[:n]
		if _, err := ov.WriteAt(p, off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
		}
		copy(model[off:], p)
	}
	write(10, 1)                 // inside a clean block
	write(4090, 20)              // across two clean blocks
	write(8192, 8192)            // whole blocks
	write(8192+100, 10)          // inside a dirty block
	write(int64(len(base))-7, 7) // the tail of the last, partial block
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		off := r.Int64N(int64(len(base)))
		write(off, 1+r.IntN(int(min(20000, int64(len(base))-off))))
	}
	got := make([]byte, len(base)+50)
	n, err := ov.ReadAt(got, 0)
	if n != len(base) || err != io.EOF {
		t.Fatalf("ReadAt past the end: n=%d err=%v", n, err)
	}
	if !bytes.Equal(got[:n], model) {
		t.Fatal("overlay contents differ from the model")
	}
	if bytes.Equal(base, model) {
		t.Fatal("the base changed")
	}
	if _, err := ov.WriteAt([]byte{1}, int64(len(base))); err == nil {
		t.Error("a write past the end succeeded")
	}
}

// Readers run while a writer fills blocks; under -race this checks that
// reads take no lock and see either the old or the new block.
func TestOverlayConcurrentReadsAndWrites(t *testing.T) {
	const blocks = 256
	base := bytes.Repeat([]byte{0xAA}, blocks*cowBlock)
	ov, err := newOverlay(&fakeImage{data: base}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 3))
			buf := make([]byte, cowBlock)
			for {
				select {
				case <-stop:
					return
				default:
				}
				blk := r.Int64N(blocks)
				if _, err := ov.ReadAt(buf, blk*cowBlock); err != nil {
					t.Error(err)
					return
				}
				if buf[0] != buf[cowBlock-1] || (buf[0] != 0xAA && buf[0] != 0x55) {
					t.Errorf("block %d torn: %x...%x", blk, buf[0], buf[cowBlock-1])
					return
				}
			}
		})
	}
	full := bytes.Repeat([]byte{0x55}, cowBlock)
	for blk := range int64(blocks) {
		if _, err := ov.WriteAt(full, blk*cowBlock); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
