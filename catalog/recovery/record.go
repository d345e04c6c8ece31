package recovery

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rewind-dev/rewind/catalog"
)

// States of a recovery, as status shows them.
const (
	StateCopying   = "copying"
	StateConverged = "converged"
	StateCutOver   = "cut over"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Target kinds.
const (
	KindFile   = "file"
	KindDevice = "device"
	KindNBD    = "nbd"
)

// record is what DATA/recoveries/NAME.json keeps of a recovery.
type record struct {
	Name   string       `json:"name"`
	Source string       `json:"source"` // VOLUME@WHEN as given
	From   string       `json:"from"`   // the source volume
	At     catalog.Time `json:"at"`     // the instant cloned
	Target string       `json:"target"` // a path or an NBD URI
	Kind   string       `json:"kind"`
	// Dev and Ino identify a file target; Rdev a device target. A
	// restarted daemon reopens the path only if it is still the same.
	Dev    uint64 `json:"dev,omitempty"`
	Ino    uint64 `json:"ino,omitempty"`
	Rdev   uint64 `json:"rdev,omitempty"`
	Zeroed bool   `json:"zeroed,omitempty"` // the target was new and sparse
	Limit  int64  `json:"bwlimit,omitempty"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Created and CutOver are when the recovery started and cut over.
	Created catalog.Time  `json:"created"`
	CutOver *catalog.Time `json:"cut_over,omitempty"`
}

func (m *Manager) recordPath(name string) string   { return filepath.Join(m.dir, name+".json") }
func (m *Manager) progressPath(name string) string { return filepath.Join(m.dir, name+".progress") }

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
		return fmt.Errorf("save recovery %s: %w", r.Name, err)
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
		return fmt.Errorf("save recovery %s: %w", r.Name, err)
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
			return nil, fmt.Errorf("recovery record %s: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// forget removes a recovery's files.
func (m *Manager) forget(name string) {
	os.Remove(m.progressPath(name))
	os.Remove(m.recordPath(name))
	syncDir(m.dir)
}
