package hydrate

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkCopyToFile copies 64 MiB of data from memory into a new file.
func BenchmarkCopyToFile(b *testing.B) {
	src := allData(1024, 64*kib)
	b.SetBytes(src.Size())
	for i := 0; b.Loop(); i++ {
		dst, err := CreateFile(filepath.Join(b.TempDir(), "t"), src.Size())
		if err != nil {
			b.Fatal(err)
		}
		c, err := New(src, dst, Options{TargetZeroed: true})
		if err != nil {
			b.Fatal(err)
		}
		wait := run(context.Background(), c)
		resume, err := c.Cutover(context.Background(), noPause)
		if err != nil {
			b.Fatal(err)
		}
		resume()
		if err := wait(); err != nil {
			b.Fatal(err)
		}
		dst.Close()
	}
}
