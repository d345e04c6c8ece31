package protect

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/rewind-dev/rewind/catalog"
)

// States of a protection.
const (
	StateProtected = "protected"
	StateFailed    = "failed"
	// StateResuming is a protection whose daemon stopped uncleanly,
	// while the start compares its primary with its timeline: it is
	// served once that ends. Never saved: the record says unclean.
	StateResuming = "resuming"
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

// save writes r durably (catalog.SaveRecord).
func (m *Manager) save(r *record) error {
	if err := catalog.SaveRecord(m.dir, r.Name, r); err != nil {
		return fmt.Errorf("%s %s: %w", "protection", r.Name, err)
	}
	return nil
}

func syncDir(dir string) error { return catalog.SyncDir(dir) }

// load reads every record in the directory.
func (m *Manager) load() ([]*record, error) { return catalog.LoadRecords[record](m.dir) }

// forget removes a protection's record.
func (m *Manager) forget(name string) error {
	if err := os.Remove(m.recordPath(name)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return syncDir(m.dir)
}
