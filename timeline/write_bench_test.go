package timeline

import (
	randv2 "math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore"
)

// BenchmarkCloneWrite4K: random 4 KiB writes to the head of a protected
// volume of 64 KiB blocks (patches, as protect records a guest's page
// writes), from 16 writers per CPU, on the local disk.
func BenchmarkCloneWrite4K(b *testing.B) {
	dir := b.TempDir()
	fs := vfs.Default
	guard := NewGuard(fs, filepath.Join(dir, "reserve"), 1<<20, nil)
	db, err := pebble.Open(filepath.Join(dir, "db"), PebbleOptions(guard, nil))
	if err != nil {
		b.Fatal(err)
	}
	bs, err := blockstore.Open(blockstore.Options{FS: fs, Dir: filepath.Join(dir, "packs"), DB: db, Codec: blockstore.CodecZstd})
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(Options{DB: db, Chunks: bs, Guard: guard})
	if err != nil {
		b.Fatal(err)
	}
	const size = 1 << 30
	m, err := s.CreateVolume("p", size, DefaultBlockSize, KindProtected)
	if err != nil {
		b.Fatal(err)
	}
	v, err := s.Head(m.ID)
	if err != nil {
		b.Fatal(err)
	}
	var seed atomic.Uint64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := randv2.New(randv2.NewPCG(seed.Add(1), 1))
		p := make([]byte, 4096)
		for pb.Next() {
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := v.WriteAt(p, rng.Int64N(size/4096)*4096); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	v.Close()
	guard.Close()
	s.Close()
	bs.StopReadingIndex()
	db.Close()
	bs.Close()
}
