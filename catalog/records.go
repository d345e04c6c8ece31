package catalog

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SaveRecord writes v as DIR/NAME.json durably: a temporary file, fsync,
// rename, fsync of the directory. The daemon's jobs (recoveries,
// protections) keep their state this way, so a crash leaves the old
// record or the new one, never half of one.
func SaveRecord(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileDurably(filepath.Join(dir, name+".json"), append(b, '\n'), 0o600)
}

// WriteFileDurably replaces path with data, whole or not at all, and
// durably: a temporary file beside it is written and synced, renamed
// over it, and the directory synced.
func WriteFileDurably(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// LoadRecords reads every DIR/*.json that SaveRecord wrote, and removes
// the temporary files a crash left.
func LoadRecords[T any](dir string) ([]*T, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*T
	for _, e := range names {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") {
			if strings.HasSuffix(n, ".tmp") {
				os.Remove(filepath.Join(dir, n))
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		r := new(T)
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("record %s: %w", filepath.Join(dir, n), err)
		}
		out = append(out, r)
	}
	return out, nil
}

// SyncDir makes a directory's entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
