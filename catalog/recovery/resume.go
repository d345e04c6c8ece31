package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/timeline"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// resume brings back a recovery after a restart. A recovery that cannot
// go on is marked failed with the reason; its volume, and that of a copy
// that had ended, is served through a parked Disk, ready for a retry.
func (m *Manager) resume(r *record) {
	if r.State == StateCancelled || r.State == StateFailed {
		m.mu.jobs[r.Name] = m.parked(r)
		return
	}
	var o *opened
	var err error
	if r.Kind == KindNBD {
		log := m.log.With("recovery", r.Name)
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		o, err = dialTargetErr(ctx, m.ctx, r.Target, log)
		cancel()
		if err != nil && (errors.Is(err, client.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded)) {
			// Out of reach for now: the copy (or, after cutover, the
			// export) waits for it, dialling in the background.
			var vol *timeline.Volume
			if vol, err = m.svc.Timeline().Volume(r.Name); err == nil {
				log.Warn("the recovery target is out of reach at start; dialling it in the background", "target", r.Target)
				o, err = pendingTarget(m.ctx, r.Target, vol.Size, log)
			}
		}
	} else {
		o, err = reopen(r)
	}
	if err != nil && r.State == StateCutOver {
		// The target holds writes the clone does not: the export fails
		// its I/O rather than serve the clone. The next start tries again.
		m.log.Error("a recovery that was cut over cannot reach its target; its export fails every request until a restart reaches it", "volume", r.Name, "target", r.Target, "err", err)
		r.Reason = fmt.Sprintf("the target could not be opened again at the restart, so the export fails every request (%v); restart the daemon once the target is back", err)
		o, err = &opened{t: deadTarget{err: fmt.Errorf("the recovery target %s cannot be reached since the restart (%v); restart the daemon once it can", r.Target, err)}}, nil
	}
	if err == nil && r.State != StateCutOver {
		err = m.startJob(r, o, true)
	} else if err == nil {
		err = m.startCutOver(r, o)
	}
	if err != nil {
		o.close()
		m.log.Error("recovery cannot resume; its volume is served from the clone, and rewind recover retry can copy it again", "volume", r.Name, "err", err)
		r.State, r.Reason = StateFailed, "after a restart: "+err.Error()
		if serr := m.save(r); serr != nil {
			m.log.Error("saving recovery", "err", serr)
		}
		j := m.parked(r)
		m.mu.Lock()
		m.mu.jobs[r.Name] = j
		m.mu.Unlock()
	}
}

// parked makes the job of a recovery whose copy is not running (it
// failed or was cancelled before the restart): its volume is served
// through a Disk whose copier follows the writes but never runs, so
// that a retry can swap a running one in with every client's writes
// followed (Retry). Without a view of the volume, the job has no Disk
// and the volume is served as a plain clone.
func (m *Manager) parked(r *record) *job {
	j := &job{m: m, done: closed()}
	j.mu.rec = r
	view, err := m.svc.OpenView(r.Name)
	if err != nil {
		m.log.Error("a recovery's volume cannot be opened; it cannot be retried", "volume", r.Name, "err", err)
		return j
	}
	// The progress the copy saved, if any, says how far it got (status
	// shows it; retry --resume goes on from it). The parked copier only
	// reads it: it never runs, so it never saves.
	dead := deadTarget{err: errors.New("no copy runs"), size: view.Size()}
	opt := hydrate.Options{Granularity: m.opt.Granularity, Workers: m.opt.Workers}
	withSaved := opt
	withSaved.Store = hydrate.FileStore{Path: m.progressPath(r.Name)}
	cp, err := hydrate.New(view, dead, withSaved)
	if err != nil {
		cp, err = hydrate.New(view, dead, opt)
	}
	if err != nil {
		view.Close()
		m.log.Error("a recovery's volume cannot be followed; it cannot be retried", "volume", r.Name, "err", err)
		return j
	}
	j.view, j.cp, j.disk = view, cp, &Disk{view: view, cp: cp}
	return j
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
