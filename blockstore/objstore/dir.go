package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Dir is a Backend on a local directory: each object is a file.
type Dir struct {
	root string
}

// OpenDir opens (creating it if needed) a directory backend.
func OpenDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("objstore: create %s: %w", abs, err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) String() string { return d.root }

func (d *Dir) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put writes a temporary file, syncs it and renames it into place.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	tmp := f.Name()
	n, err := io.Copy(f, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("objstore: put %s: %d of %d bytes: %w", name, n, size, io.ErrUnexpectedEOF)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("objstore: put %s: %w", name, err)
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("objstore: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("objstore: sync %s: %w", dir, err)
	}
	return nil
}

// GetRange reads from the file.
func (d *Dir) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notExist(name, err)
	}
	defer f.Close()
	if n < 0 {
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		n = max(fi.Size()-off, 0)
	}
	b := make([]byte, n)
	got, err := f.ReadAt(b, off)
	if err == io.EOF {
		if int64(got) < n {
			return b[:got], fmt.Errorf("objstore: %s: %d bytes at %d: %w", name, n, off, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("objstore: read %s: %w", name, err)
	}
	return b, nil
}

// Stat returns the file's size.
func (d *Dir) Stat(ctx context.Context, name string) (int64, error) {
	p, err := d.path(name)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, notExist(name, err)
	}
	return fi.Size(), nil
}

// List walks the directory, skipping temporary files.
func (d *Dir) List(ctx context.Context, prefix string, fn func(Object) error) error {
	var objs []Object
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".put-") {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		objs = append(objs, Object{Name: name, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("objstore: list %s: %w", d.root, err)
	}
	return sortedEach(ctx, objs, fn)
}

// sortedEach calls fn for each of objs in lexical order of names, until
// it or ctx fails.
func sortedEach(ctx context.Context, objs []Object, fn func(Object) error) error {
	sort.Slice(objs, func(i, j int) bool { return objs[i].Name < objs[j].Name })
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the file.
func (d *Dir) Delete(ctx context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objstore: delete %s: %w", name, err)
	}
	// Directories left empty go too (best effort: a racing Put may
	// fill one again, and then it stays).
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func notExist(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("objstore: %s: %w", name, ErrNotExist)
	}
	return fmt.Errorf("objstore: %s: %w", name, err)
}
