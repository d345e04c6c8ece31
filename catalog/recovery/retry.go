package recovery

import (
	"context"
	"os"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// RetryRequest is `rewind recover retry NEWVOLUME [--to TARGET]`: the
// target to copy into now (the same as before, or another), opened by
// the caller as for Request.
type RetryRequest struct {
	Target  string
	File    *os.File // nil for an NBD URI
	Created bool
	// Limit replaces the copy's bandwidth limit when not nil.
	Limit *int64
	// Resume goes on from the progress the copy saved instead of the
	// beginning: the target must be the one the copy had (the same file
	// or device, or NBD address and export), trusted to still hold what
	// the copy wrote and flushed there, as a restarted daemon trusts it.
	Resume bool
}

// Retry starts the copy of a recovery that failed or was cancelled
// again, into req's target, from the beginning: the whole clone is
// copied, since what the target holds after a failure (or a replaced
// disk at the same path) is not known, unless req.Resume says to go on
// from the saved progress (into the same target only). The export goes
// on serving the clone throughout; its connections are not interrupted,
// and their writes are followed by the new copy from the moment it
// starts (the Disk's copier is swapped while its I/O is paused). After
// a restart the Disk of a copy that had ended is a parked one
// (Manager.parked).
func (m *Manager) Retry(ctx context.Context, name string, req RetryRequest) (*Status, error) {
	m.ops.Lock()
	defer m.ops.Unlock()
	j, err := m.get(name)
	if err != nil {
		return nil, err
	}
	r := j.record()
	switch r.State {
	case StateFailed, StateCancelled:
	case StateCutOver:
		return nil, catalog.Errorf(catalog.ErrConflict, "%s was cut over to %s; the workload runs on the target, there is no copy to retry", name, r.Target)
	default:
		return nil, catalog.Errorf(catalog.ErrConflict, "the copy of %s is still running (%s); retry is for a copy that failed or was cancelled", name, r.State)
	}
	if j.disk == nil || j.cp == nil || j.view == nil {
		return nil, catalog.Errorf(catalog.ErrConflict,
			"%s is served as a plain clone, whose writes no copy can follow (the daemon's log says why); recover from it anew: rewind recover %s@latest --to TARGET",
			name, name)
	}
	// The stopped copy's target is closed (a failure and a cancel close
	// it already; a cutover that could not be recorded does not), so
	// that its lock does not keep the retry out of it.
	j.target.close()
	o, err := m.openTarget(ctx, Request{Target: req.Target, File: req.File})
	if err != nil {
		return nil, err
	}
	st, err := m.retry(j, r, req, o)
	if err != nil {
		o.close()
		return nil, err
	}
	return st, nil
}

func (m *Manager) retry(j *job, old record, req RetryRequest, o *opened) (*Status, error) {
	if err := fitTarget(o, req.Created, j.view.Size(), req.Target, old.Name); err != nil {
		return nil, err
	}
	r := old
	r.Target, r.Kind, r.Dev, r.Ino, r.Rdev = req.Target, o.kind, o.dev, o.ino, o.rdev
	r.Zeroed = req.Created && o.kind == KindFile
	if req.Limit != nil {
		r.Limit = *req.Limit
	}
	r.State, r.Reason, r.CutOver = StateCopying, "", nil

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.jobs[r.Name] != j {
		return nil, catalog.Errorf(catalog.ErrConflict, "the recovery of %s changed meanwhile (removed?); see rewind recover status", r.Name)
	}
	if err := m.checkFreeLocked(o.key, req.Target); err != nil {
		return nil, err
	}
	if req.Resume {
		if !sameTarget(o, old) {
			return nil, catalog.Errorf(catalog.ErrConflict, "--resume goes on copying into the target the copy had, %s; give that one, or retry without --resume to copy from the beginning", old.Target)
		}
		if _, err := os.Stat(m.progressPath(r.Name)); err != nil {
			return nil, catalog.Errorf(catalog.ErrConflict, "the copy of %s saved no progress to resume (a cancelled copy keeps none); retry without --resume to copy from the beginning", r.Name)
		}
		r.Zeroed = old.Zeroed
	} else if err := os.Remove(m.progressPath(r.Name)); err != nil && !os.IsNotExist(err) {
		// From the beginning: the progress of the copy that ended says
		// what an earlier target held.
		return nil, err
	}
	// The new copier is made, and its progress saved, with the Disk's
	// I/O paused: writes in progress finish on the old copier, which has
	// stopped, and land in the clone before the new one looks (from the
	// beginning it copies every block; resuming, it re-dirties what the
	// clone wrote since its saved progress); it hears of every later
	// write.
	unpause := j.disk.pause()
	cp, err := m.startOver(j, &r, o, req.Resume)
	if err == nil {
		j.disk.cp = cp
	}
	unpause()
	if err != nil {
		return nil, err
	}
	followLost(o, cp)
	nj := &job{m: m, view: j.view, cp: cp, target: o, disk: j.disk, done: make(chan struct{})}
	nj.mu.rec = &r
	m.mu.jobs[r.Name] = nj
	m.wg.Add(1)
	go nj.run()
	m.log.Info("recovery copy started again", "volume", r.Name, "target", r.Target, "previously", old.State, "reason", old.Reason)
	st := nj.status()
	return &st, nil
}

// startOver makes the copier of a retried recovery r and saves its
// progress and record; the caller pauses the Disk's I/O around it.
func (m *Manager) startOver(j *job, r *record, o *opened, resume bool) (*hydrate.Copier, error) {
	cp, err := m.newCopier(r, j.view, o)
	if err != nil {
		return nil, err
	}
	if resume {
		if _, ok := cp.Resumed(); !ok {
			return nil, catalog.Errorf(catalog.ErrConflict, "the saved progress of %s's copy could not be resumed; retry without --resume", r.Name)
		}
		if err := m.redirty(r.Name, j.view, cp); err != nil {
			return nil, err
		}
	}
	if err := cp.Checkpoint(); err != nil {
		return nil, err
	}
	if err := m.save(r); err != nil {
		if !resume {
			os.Remove(m.progressPath(r.Name))
		}
		return nil, err
	}
	return cp, nil
}

// sameTarget reports whether o is the target r copied into: the same
// file (device and inode) or device, or the same NBD address and export.
func sameTarget(o *opened, r record) bool {
	if o.kind != r.Kind {
		return false
	}
	if o.kind == KindNBD {
		k, err := nbdKey(r.Target)
		return err == nil && k == o.key
	}
	return o.dev == r.Dev && o.ino == r.Ino && o.rdev == r.Rdev
}
