package objstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/objstoretest"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

func TestMain(m *testing.M) { weed.Main(m) }

func TestDirConformance(t *testing.T) {
	objstoretest.Run(t, func(t *testing.T) objstore.Backend {
		b, err := objstore.Open(context.Background(), t.TempDir(), objstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestS3Conformance opens a new bucket for each subtest, so each open
// also creates one.
func TestS3Conformance(t *testing.T) {
	srv := weed.Shared(t)
	objstoretest.Run(t, func(t *testing.T) objstore.Backend {
		return openS3(t, srv, srv.NewBucket(t))
	})
}

// TestS3PrefixConformance runs every subtest under a prefix of its own in
// one bucket, next to the others' objects.
func TestS3PrefixConformance(t *testing.T) {
	srv := weed.Shared(t)
	bucket := srv.NewBucket(t)
	var n atomic.Int64
	objstoretest.Run(t, func(t *testing.T) objstore.Backend {
		return openS3(t, srv, fmt.Sprintf("%s/tenant/%d", bucket, n.Add(1)))
	})
}

func openS3(t *testing.T, srv *weed.Server, url string) objstore.Backend {
	t.Helper()
	b, err := objstore.Open(context.Background(), url, objstore.Options{Getenv: srv.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
