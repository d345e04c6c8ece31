package objstore

import (
	"context"
	"fmt"
	"strings"
)

// Options configure Open.
type Options struct {
	Endpoint string
	ReadOnly bool
}

// Open opens a backend by URL (a directory only, until the S3 form lands).
func Open(ctx context.Context, url string, o Options) (Backend, error) {
	if strings.HasPrefix(url, "s3://") {
		return nil, fmt.Errorf("objstore: s3 not built yet")
	}
	return OpenDir(strings.TrimPrefix(url, "file://"))
}
