package recovery

import (
	"fmt"
	"os"
	"time"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// Status is one row of `rewind recover status`.
type Status struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Target string `json:"target"`
	// State is copying, converged, cut over, failed or cancelled.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Mode is background or write-blocking (how writes reach the target).
	Mode  string `json:"mode,omitempty"`
	Total int64  `json:"total_bytes"`
	Done  int64  `json:"done_bytes"`
	Dirty int64  `json:"dirty_bytes"`
	// Copied counts what the copier wrote, rewrites included, since the
	// daemon started the copy.
	Copied int64 `json:"copied_bytes"`
	// Rate is the copy's rate over the last seconds.
	Rate float64 `json:"rate_bytes_per_second"`
	// ETA is the time left at the current rate, in seconds (-1: unknown).
	ETA     float64       `json:"eta_seconds"`
	Limit   int64         `json:"bwlimit,omitempty"`
	Passes  int           `json:"passes"`
	Created catalog.Time  `json:"created"`
	CutOver *catalog.Time `json:"cut_over,omitempty"`
	// Resumable says that the failed copy saved progress that a retry
	// with Resume (rewind recover retry --resume) can go on from, into
	// the same target (the progress is saved every few seconds, so a
	// resumed copy may redo the last seconds of Done).
	Resumable bool `json:"resumable,omitempty"`
}

func (j *job) status() Status {
	r := j.record()
	st := Status{Name: r.Name, Source: r.Source, Target: r.Target, State: r.State, Reason: r.Reason,
		Limit: r.Limit, Created: r.Created, CutOver: r.CutOver, ETA: -1}
	if j.view != nil {
		st.Total = j.view.Size()
	}
	if r.State == StateCutOver {
		st.Done = st.Total
		st.ETA = 0
	}
	if d := j.target.down(); !d.IsZero() && r.State != StateFailed && r.State != StateCancelled {
		st.Reason = fmt.Sprintf("the target is out of reach since %s; dialling it again", d.UTC().Format(time.RFC3339))
	}
	if r.State == StateFailed && j.disk != nil && j.cp != nil && j.view != nil {
		_, err := os.Stat(j.m.progressPath(r.Name))
		st.Resumable = err == nil
	}
	if j.cp == nil {
		return st
	}
	p := j.cp.Progress()
	st.Mode = p.Mode.String()
	st.Total, st.Done, st.Dirty, st.Copied, st.Rate, st.Passes = p.Total, p.Done, p.Dirty, p.Copied, p.Rate, p.Passes
	if r, ok := j.meter.rate(time.Now(), p.Copied); ok {
		st.Rate = r // recent, where p.Rate is the average since the start
	}
	if r.State == StateCopying && p.State == hydrate.StateConverged {
		st.State = StateConverged
	}
	if r.State == StateCutOver {
		st.Done = st.Total
	}
	switch {
	case r.State == StateFailed || r.State == StateCancelled:
		st.ETA, st.Rate = -1, 0 // the copy stopped: it will not finish by itself
	case st.Done >= st.Total:
		st.ETA = 0
	case st.Rate > 0:
		st.ETA = float64(st.Total-st.Done) / st.Rate
	}
	return st
}

// Elapsed is how long ago the recovery started.
func (s Status) Elapsed(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, int64(s.Created)))
}
