package mount

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The state file records every mount and loop device a process made, so
// that CleanupStale can undo what a process killed with -9 left behind.
// These names and the JSON layout are part of the state file format;
// change them only behind a new stateVersion.
const (
	stateVersion  = 1
	stateFileName = "mounts.json"
	stateLockName = "mounts.lock"
)

// Record kinds, in the state file.
const (
	kindFUSE  = "fuse"  // a FUSE mount: Path is the mount point, Source the fsname
	kindMount = "mount" // a kernel mount: Path is the mount point, Source the device or tmpfs name
	kindLoop  = "loop"  // a loop device: Path is the backing file, Source the device once known
	kindDir   = "dir"   // a directory made in the state directory, removed when empty
)

// record is one resource. A record is written before the resource is made,
// so a crash in between leaves an intent that cleanup checks against the
// kernel's view (mountinfo, /sys/block/loop*).
type record struct {
	ID     string `json:"id"`
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"` // the owner's start time (/proc/PID/stat field 22): tells a reused pid
	Kind   string `json:"kind"`
	Path   string `json:"path"`
	Source string `json:"source,omitempty"`
	Offset int64  `json:"offset,omitempty"`
}

type stateDoc struct {
	Version int      `json:"version"`
	Records []record `json:"records"`
}

// stateFile is DIR/mounts.json, read and rewritten under an exclusive
// flock on DIR/mounts.lock, so several processes and mounts share it.
type stateFile struct {
	dir string
}

func openState(dir string) (*stateFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mount: state directory: %w", err)
	}
	return &stateFile{dir: dir}, nil
}

// update runs fn on the current records and saves what it leaves.
func (s *stateFile) update(fn func(*stateDoc)) error {
	lock, err := os.OpenFile(filepath.Join(s.dir, stateLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("mount: state lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("mount: state lock: %w", err)
	}
	doc, err := s.readLocked()
	if err != nil {
		return err
	}
	fn(doc)
	return s.writeLocked(doc)
}

func (s *stateFile) readLocked() (*stateDoc, error) {
	doc := &stateDoc{Version: stateVersion}
	b, err := os.ReadFile(filepath.Join(s.dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return doc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mount: read state: %w", err)
	}
	if err := json.Unmarshal(b, doc); err != nil {
		return nil, fmt.Errorf("mount: state file %s is corrupt (%v): undo its mounts by hand, then delete it", filepath.Join(s.dir, stateFileName), err)
	}
	if doc.Version != stateVersion {
		return nil, fmt.Errorf("mount: state file %s has version %d, this build knows %d", filepath.Join(s.dir, stateFileName), doc.Version, stateVersion)
	}
	return doc, nil
}

func (s *stateFile) writeLocked(doc *stateDoc) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, stateFileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("mount: write state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, stateFileName))
	}
	if err != nil {
		return fmt.Errorf("mount: write state: %w", err)
	}
	return nil
}

func (s *stateFile) add(r record) error {
	return s.update(func(d *stateDoc) { d.Records = append(d.Records, r) })
}

// setSource fills in the device of a loop record once it is known.
func (s *stateFile) setSource(r record, source string) error {
	return s.update(func(d *stateDoc) {
		for i := range d.Records {
			if d.Records[i] == r {
				d.Records[i].Source = source
			}
		}
	})
}

func (s *stateFile) remove(r record) error {
	return s.update(func(d *stateDoc) {
		d.Records = slices.DeleteFunc(d.Records, func(x record) bool { return x == r })
	})
}

// processStart returns the start time of pid (clock ticks since boot), or
// ok=false if no such process runs.
func processStart(pid int) (start uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// Field 2, the command, is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); the start time is field 22.
	if len(fields) < 20 {
		return 0, false
	}
	start, err = strconv.ParseUint(fields[19], 10, 64)
	return start, err == nil
}

// alive reports whether the process that wrote r still runs.
func (r record) alive() bool {
	start, ok := processStart(r.PID)
	return ok && start == r.Start
}
