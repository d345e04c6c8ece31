package protect

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rewind-dev/rewind/catalog"
)

// States of a protection.
const (
	StateProtected = "protected"
	StateFailed    = "failed"
)

// record is what DATA/protected/NAME.json keeps of a protection.
type record struct {
	Name    string `json:"name"`
	Primary string `json:"primary"` // the path, as the caller gave it (absolute)
	Kind    string `json:"kind"`    // file or device
	// Dev and Ino identify a file primary, Rdev a device: a restarted
	// daemon reopens the path only if it is still the same.
	Dev  uint64 `json:"dev,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
	Rdev uint64 `json:"rdev,omitempty"`
	Size int64  `json:"size"`
	// Clean says the daemon stopped with the primary and the timeline
	// flushed and equal; a start without it compares them first.
	Clean   bool         `json:"clean"`
	State   string       `json:"state"`
	Reason  string       `json:"reason,omitempty"`
	Created catalog.Time `json:"created"`
}

func (m *Manager) recordPath(name string) string { return filepath.Join(m.dir, name+".json") }

// save writes r durably: a temporary file, fsync, rename, fsync of the
// directory.
func (m *Manager) save(r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := m.recordPath(r.Name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save protection %s: %w", r.Name, err)
	}
	_, err = f.Write(append(b, '\n'))
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
		err = syncDir(m.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save protection %s: %w", r.Name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// load reads every record in the directory.
func (m *Manager) load() ([]*record, error) {
	names, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range names {
		n := e.Name()
		if !strings.HasSuffix(n, ".json") {
			if strings.HasSuffix(n, ".tmp") {
				os.Remove(filepath.Join(m.dir, n))
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.dir, n))
		if err != nil {
			return nil, err
		}
		r := new(record)
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("protection record %s: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// forget removes a protection's record.
func (m *Manager) forget(name string) error {
	if err := os.Remove(m.recordPath(name)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return syncDir(m.dir)
}
