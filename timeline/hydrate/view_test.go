package hydrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore"
	"github.com/rewind-dev/rewind/timeline"
)

// cloneHead imports data (zero blocks stay holes) as volume "a", clones
// it and returns the clone's writable head.
func cloneHead(t *testing.T, data []byte, bs int64) *timeline.View {
	t.Helper()
	fs := vfs.NewMem()
	db, err := pebble.Open("db", timeline.PebbleOptions(fs, nil))
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := blockstore.Open(blockstore.Options{FS: fs, Dir: "packs", DB: db, Codec: blockstore.CodecZstd})
	if err != nil {
		t.Fatal(err)
	}
	s, err := timeline.Open(timeline.Options{DB: db, Chunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); chunks.StopReadingIndex(); db.Close(); chunks.Close() })
	res, err := s.Import(context.Background(), timeline.ImportOptions{Name: "a", Source: bytes.NewReader(data),
		Size: int64(len(data)), At: 100, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Clone("a", res.Time, "c")
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.Head(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func viewSum(t *testing.T, v *timeline.View) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(v, 0, v.Size())); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// The copier hydrates a file from a real clone head while the clone
// takes writes, and the file equals the clone at cutover.
func TestHydrateCloneHeadIntoFile(t *testing.T) {
	const bs = 64 * kib
	data := make([]byte, 64*bs)
	r := rand.New(rand.NewPCG(5, 6))
	for b := range 64 {
		if b%4 == 1 {
			continue // a hole
		}
		for i := b * int(bs); i < (b+1)*int(bs); i++ {
			data[i] = byte(r.Uint32())
		}
	}
	head := cloneHead(t, data, bs)
	path := filepath.Join(t.TempDir(), "target.raw")
	dst, err := CreateFile(path, head.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	c, err := New(head, dst, Options{Granularity: bs, TargetZeroed: true, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	wait := run(context.Background(), c)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 20 {
				p := bytes.Repeat([]byte{byte(r.Uint32())}, 4096+r.IntN(3*int(bs)))
				off := r.Int64N(head.Size() - int64(len(p)))
				wr, err := c.BeginWrite(context.Background(), off, int64(len(p)))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := head.WriteAt(p, off); err != nil {
					wr.Abort()
					t.Error(err)
					return
				}
				if err := wr.Finish(p); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	resume, err := c.Cutover(context.Background(), noPause)
	if err != nil {
		t.Fatal(err)
	}
	resume()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, path, head.Size()) != viewSum(t, head) {
		t.Fatal("target differs from the clone")
	}
}
