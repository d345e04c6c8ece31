package objstore

import (
	"context"
	"fmt"
	"io"
)

// ReadOnly wraps b so that Put and Delete return ErrReadOnly and change
// nothing; reads pass through.
func ReadOnly(b Backend) Backend { return readOnly{b} }

type readOnly struct{ Backend }

func (r readOnly) Put(ctx context.Context, name string, _ io.Reader, _ int64) error {
	return fmt.Errorf("objstore: put %s in %s: %w", name, r.Backend, ErrReadOnly)
}

func (r readOnly) Delete(ctx context.Context, name string) error {
	return fmt.Errorf("objstore: delete %s in %s: %w", name, r.Backend, ErrReadOnly)
}
