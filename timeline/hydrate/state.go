package hydrate

import "time"

// State is where a copy is.
type State int

const (
	// StateCopying: dirty data remains or the target is not flushed.
	StateCopying State = iota
	// StateConverged: nothing dirty, nothing in flight, target flushed.
	// The copy keeps running: a new write makes it StateCopying again.
	StateConverged
	// StateCutOver: Cutover succeeded; the copier has stopped.
	StateCutOver
	// StateFailed: the copy stopped on an error (Progress.Reason).
	StateFailed
	// StateCancelled: Cancel was called.
	StateCancelled
	// StateStopped: Run returned because its context ended; the saved
	// progress lets a new Copier resume.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateCopying:
		return "copying"
	case StateConverged:
		return "converged"
	case StateCutOver:
		return "cut over"
	case StateFailed:
		return "failed"
	case StateCancelled:
		return "cancelled"
	case StateStopped:
		return "stopped"
	}
	return "unknown"
}

// Mode says what happens to writes through the export.
type Mode int

const (
	// ModeBackground: writes only mark their range dirty.
	ModeBackground Mode = iota
	// ModeWriteBlocking: writes go to the target before they are
	// acknowledged (BeginWrite, Write.Finish).
	ModeWriteBlocking
)

func (m Mode) String() string {
	if m == ModeWriteBlocking {
		return "write-blocking"
	}
	return "background"
}

// Progress is a snapshot of a copy, for status and metrics.
type Progress struct {
	State  State
	Reason string // why it failed, for StateFailed
	Mode   Mode
	// Total is the source's size; Done is the part known to be on the
	// target (not dirty, not in flight).
	Total, Done int64
	Dirty       int64 // bytes marked dirty
	InFlight    int64 // bytes being copied or written through
	Copied      int64 // bytes the copier wrote or zeroed, rewrites included
	Rate        float64
	Limit       int64 // bytes/s, 0 = unlimited
	Passes      int   // times the copier wrapped around the bitmap
	Generation  uint64
	Started     time.Time
}
