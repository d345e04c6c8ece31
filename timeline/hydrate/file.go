package hydrate

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// FileTarget is a Target on a regular file or a block device.
type FileTarget struct {
	f    *os.File
	size int64
}

var _ Target = (*FileTarget)(nil)

// CreateFile creates a new sparse file of size bytes at path; it fails if
// path exists. A new file reads as zeroes, so the copier may skip holes
// (Options.TargetZeroed).
func CreateFile(path string, size int64) (*FileTarget, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hydrate: create target: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("hydrate: size target %s: %w", path, err)
	}
	return &FileTarget{f: f, size: size}, nil
}

// OpenFile opens an existing file or block device for writing. Its
// contents are unknown, so holes of the source are written as zeroes.
func OpenFile(path string) (*FileTarget, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("hydrate: open target: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hydrate: size of target %s: %w", path, err)
	}
	return &FileTarget{f: f, size: size}, nil
}

// NewFileTarget uses f, opened for reading and writing by the caller (a
// file or a block device); the target owns it from then on.
func NewFileTarget(f *os.File) (*FileTarget, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("hydrate: size of target %s: %w", f.Name(), err)
	}
	return &FileTarget{f: f, size: size}, nil
}

// File returns the open file.
func (t *FileTarget) File() *os.File { return t.f }

// ReadAt reads at off (for serving the target once it is cut over).
func (t *FileTarget) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }

// WriteAt writes p at off.
func (t *FileTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }

// WriteZeroes punches a hole (regular files), falls back to zeroing the
// range in place, and last to writing zeroes.
func (t *FileTarget) WriteZeroes(off, n int64) error {
	fd := int(t.f.Fd())
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if err = unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n); err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("hydrate: zero target range: %w", err)
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := t.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Flush syncs the file.
func (t *FileTarget) Flush() error { return t.f.Sync() }

// Size returns the size when opened.
func (t *FileTarget) Size() int64 { return t.size }

// Close closes the file.
func (t *FileTarget) Close() error { return t.f.Close() }
