package recovery

import (
	"fmt"
	"os"
	"path/filepath"

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

// save writes r durably (catalog.SaveRecord).
func (m *Manager) save(r *record) error {
	if err := catalog.SaveRecord(m.dir, r.Name, r); err != nil {
		return fmt.Errorf("%s %s: %w", "recovery", r.Name, err)
	}
	return nil
}

func syncDir(dir string) error { return catalog.SyncDir(dir) }

// load reads every record in the directory.
func (m *Manager) load() ([]*record, error) { return catalog.LoadRecords[record](m.dir) }

// forget removes a recovery's files.
func (m *Manager) forget(name string) {
	os.Remove(m.progressPath(name))
	os.Remove(m.recordPath(name))
	syncDir(m.dir)
}
