package hydrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Store keeps the copier's saved progress. Load returns nil, nil when
// nothing was saved.
type Store interface {
	Save(p []byte) error
	Load() ([]byte, error)
}

// FileStore is a Store in one file, replaced atomically: written to a
// temporary file, synced, renamed over, and the directory synced.
type FileStore struct{ Path string }

var _ Store = FileStore{}

// Save replaces the saved progress with p.
func (s FileStore) Save(p []byte) error {
	dir := filepath.Dir(s.Path)
	f, err := os.CreateTemp(dir, filepath.Base(s.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("hydrate: save progress: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(p)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.Path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("hydrate: save progress: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("hydrate: save progress: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("hydrate: save progress: %w", err)
	}
	return nil
}

// Load returns the saved progress, or nil if there is none.
func (s FileStore) Load() ([]byte, error) {
	p, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hydrate: load progress: %w", err)
	}
	return p, nil
}
