package objstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sys/unix"
)

// ErrChanged is returned (wrapped) by PutIf when the object is not as the
// caller read it.
var ErrChanged = errors.New("the object changed since it was read")

// ErrNoSwap is returned (wrapped) by PutIf when the object store refuses
// conditional writes.
var ErrNoSwap = errors.New("the object store takes no conditional writes")

// Swapper is a Backend that replaces an object only if it is as it was
// read: a compare-and-swap, for the one object that two processes may
// both write (a lease). S3 does it with If-Match and If-None-Match.
type Swapper interface {
	// GetTagged reads a whole object and a tag that changes whenever
	// the object is replaced (its ETag).
	GetTagged(ctx context.Context, name string) (data []byte, tag string, err error)
	// PutIf stores size bytes from r as name if the object's tag is
	// still tag, or, with tag "", if there is no such object; else it
	// returns ErrChanged. It returns the new object's tag.
	PutIf(ctx context.Context, name string, r io.Reader, size int64, tag string) (string, error)
}

// GetTagged implements Swapper.
func (s *S3) GetTagged(ctx context.Context, name string) ([]byte, string, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, "", err
	}
	bo := s.backoff()
	for {
		ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(0))
		var b []byte
		var info minio.ObjectInfo
		obj, err := s.client.GetObject(ctx1, s.bucket, key, minio.GetObjectOptions{})
		if err == nil {
			if info, err = obj.Stat(); err == nil {
				b, err = io.ReadAll(obj)
			}
			obj.Close()
		}
		cancel()
		if err == nil {
			return b, info.ETag, nil
		}
		if !bo.again(ctx, err) {
			return nil, "", s.wrap(ctx, "get", name, err)
		}
	}
}

// PutIf implements Swapper, for small objects (one request).
func (s *S3) PutIf(ctx context.Context, name string, r io.Reader, size int64, tag string) (string, error) {
	key, err := s.key(name)
	if err != nil {
		return "", err
	}
	if size < 0 || size > singlePutMax {
		return "", fmt.Errorf("objstore: conditional put %s: size %d", name, size)
	}
	body, err := rewindable(r, size)
	if err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", name, err)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true, SendContentMd5: true}
	if tag == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(tag)
	}
	bo := s.backoff()
	for {
		if _, err = body.Seek(0, io.SeekStart); err != nil {
			return "", fmt.Errorf("objstore: put %s: %w", name, err)
		}
		ctx1, cancel := context.WithTimeout(ctx, attemptTimeout(size))
		info, err := s.client.PutObject(ctx1, s.bucket, key, body, size, opts)
		cancel()
		if err == nil {
			return info.ETag, nil
		}
		resp := minio.ToErrorResponse(err)
		switch {
		case resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed",
			resp.StatusCode == http.StatusConflict && resp.Code == "ConditionalRequestConflict":
			return "", fmt.Errorf("objstore: put %s in %s: %w", name, s, ErrChanged)
		case resp.StatusCode == http.StatusNotImplemented || resp.Code == "NotImplemented":
			return "", fmt.Errorf("objstore: put %s in %s: %w: %s", name, s, ErrNoSwap, resp.Message)
		}
		if !bo.again(ctx, err) {
			return "", s.wrap(ctx, "put", name, err)
		}
	}
}

// GetTagged implements Swapper: the tag is a digest of the contents.
func (d *Dir) GetTagged(ctx context.Context, name string) ([]byte, string, error) {
	b, err := d.GetRange(ctx, name, 0, -1)
	if err != nil {
		return nil, "", err
	}
	return b, contentTag(b), nil
}

// PutIf implements Swapper under an exclusive lock (flock) of a file
// beside the object, which List does not show.
func (d *Dir) PutIf(ctx context.Context, name string, r io.Reader, size int64, tag string) (string, error) {
	p, err := d.path(name)
	if err != nil {
		return "", err
	}
	if size < 0 || size > singlePutMax {
		return "", fmt.Errorf("objstore: conditional put %s: size %d", name, size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return "", fmt.Errorf("objstore: put %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(filepath.Dir(p), ".put-lock-"+filepath.Base(p)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("objstore: %w", err)
	}
	defer lock.Close() // and the lock with it
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("objstore: lock %s: %w", name, err)
	}
	cur, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if tag != "" {
			return "", fmt.Errorf("objstore: put %s in %s: %w (it is gone)", name, d, ErrChanged)
		}
	case err != nil:
		return "", fmt.Errorf("objstore: %w", err)
	case tag == "" || contentTag(cur) != tag:
		return "", fmt.Errorf("objstore: put %s in %s: %w", name, d, ErrChanged)
	}
	if err := d.Put(ctx, name, NewBytesReader(data), size); err != nil {
		return "", err
	}
	return contentTag(data), nil
}

func contentTag(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

var (
	_ Swapper = (*S3)(nil)
	_ Swapper = (*Dir)(nil)
)
