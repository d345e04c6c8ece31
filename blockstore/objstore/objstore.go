// Package objstore is where a store's objects live outside its data
// directory: a directory, or a bucket on an S3-compatible object store.
//
// A Backend is deliberately small (put a whole object, read a range of
// one, list, delete), so that every kind of storage behaves alike and one
// conformance suite (objstoretest) holds each to the same rules.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNotExist is returned (wrapped) for an object that is not there.
var ErrNotExist = errors.New("object does not exist")

// ErrReadOnly is returned (wrapped) by writes to a backend opened read-only.
var ErrReadOnly = errors.New("object store is read-only")

// Object describes a stored object.
type Object struct {
	Name string // relative to the backend's root, with "/" separators
	Size int64
}

// Backend stores named objects. Names are relative paths with "/"
// separators and no leading slash, ".." or empty parts. Implementations
// are safe for concurrent use.
type Backend interface {
	// Put stores size bytes read from r as name, replacing any object
	// of that name at once: a reader sees the old object or the whole
	// new one, never a part.
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// GetRange reads n bytes of name from off into a new slice. A range
	// reaching past the end returns the bytes up to it and
	// io.ErrUnexpectedEOF; n < 0 reads to the end.
	GetRange(ctx context.Context, name string, off, n int64) ([]byte, error)
	// Stat returns the object's size.
	Stat(ctx context.Context, name string) (int64, error)
	// List calls fn for each object whose name starts with prefix, in
	// lexical order of names.
	List(ctx context.Context, prefix string, fn func(Object) error) error
	// Delete removes name; an object that is not there is no error.
	Delete(ctx context.Context, name string) error
	// String names the backend for messages (a URL without secrets).
	String() string
}

// CheckName returns an error for a name a Backend does not take.
func CheckName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return fmt.Errorf("objstore: bad object name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("objstore: bad object name %q", name)
		}
	}
	return nil
}
