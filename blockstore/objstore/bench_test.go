package objstore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

// BenchmarkS3 puts and reads back objects of a pack's size on SeaweedFS,
// one at a time.
func BenchmarkS3(b *testing.B) {
	srv := weed.Shared(b)
	for _, size := range []int{4 << 20, 40 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rand.N(256))
		}
		st := openS3Bench(b, srv)
		b.Run(fmt.Sprintf("Put/%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := range b.N {
				if err := st.Put(context.Background(), fmt.Sprint(i), bytes.NewReader(data), int64(size)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Get/%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for range b.N {
				got, err := st.GetRange(context.Background(), "0", 0, -1)
				if err != nil || !bytes.Equal(got, data) {
					b.Fatal(err)
				}
			}
		})
	}
}

func openS3Bench(b *testing.B, srv *weed.Server) objstore.Backend {
	st, err := objstore.Open(context.Background(), srv.NewBucket(b), objstore.Options{Getenv: srv.Getenv})
	if err != nil {
		b.Fatal(err)
	}
	return st
}
