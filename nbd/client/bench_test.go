package client_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/rewind-dev/rewind/nbd/client"
)

// BenchmarkWriteQemuNBD writes 1 MiB requests, 16 in flight, to qemu-nbd
// serving a sparse file: the hydration copier's pattern against a target.
func BenchmarkWriteQemuNBD(b *testing.B) {
	const size, piece = 1 << 30, 1 << 20
	file := filepath.Join(b.TempDir(), "target.raw")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		b.Fatal(err)
	}
	sock := qemuNBD(b, file, "--cache=writeback")
	c, err := client.Dial(context.Background(), "nbd+unix:///disk?socket="+sock, client.Options{Writable: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := pattern(1, piece)
	var next atomic.Int64
	b.SetBytes(piece)
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			off := next.Add(piece) % size
			if _, err := c.WriteAt(data, off); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := c.Flush(); err != nil {
		b.Fatal(err)
	}
}
