package mount

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
)

// CleanupStale undoes what processes that died without Unmount (kill -9,
// a crash, a power cut on a persistent namespace) left behind, as recorded
// in stateDir's state file: mounts are unmounted (lazily when busy), loop
// devices detached, private directories removed, newest first. Records of
// processes still running are left alone, so it is safe to call at any
// time; the daemon calls it at start. Each resource is checked against
// the kernel's view before it is touched.
func CleanupStale(stateDir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(stateDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	st := &stateFile{dir: stateDir}
	var stale []record
	if err := st.update(func(d *stateDoc) {
		for _, r := range d.Records {
			if !r.alive() {
				stale = append(stale, r)
			}
		}
	}); err != nil {
		return err
	}
	var done []record
	var errs []error
	for _, r := range slices.Backward(stale) {
		did, err := undoRecord(log, r)
		if err != nil {
			log.Warn("mount: stale resource left in place", "kind", r.Kind, "path", r.Path, "err", err)
			errs = append(errs, fmt.Errorf("mount: stale %s %s: %w", r.Kind, r.Path, err))
			continue
		}
		if did {
			log.Info("mount: cleaned up stale resource", "kind", r.Kind, "path", r.Path, "source", r.Source, "pid", r.PID)
		}
		done = append(done, r)
	}
	if err := st.update(func(d *stateDoc) {
		d.Records = slices.DeleteFunc(d.Records, func(r record) bool { return slices.Contains(done, r) })
	}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// undoRecord undoes r if the kernel still shows it; did says whether
// there was anything to undo.
func undoRecord(log *slog.Logger, r record) (did bool, err error) {
	switch r.Kind {
	case kindFUSE, kindMount:
		// A mount point can hold several stacked mounts; undo ours only.
		for range 8 {
			mounted, err := mountedFrom(r.Path, r.Source)
			if err != nil || !mounted {
				return did, err
			}
			if r.Kind == kindFUSE {
				err = unmountStaleFUSE(log, r.Path, errors.New("its server is gone"))
			} else {
				err = unmountPath(log, r.Path)
			}
			if err != nil {
				return did, err
			}
			did = true
		}
		return did, fmt.Errorf("still mounted after 8 unmounts")
	case kindLoop:
		devs, err := loopsOf(r.Path, r.Offset)
		if err != nil {
			return false, err
		}
		var errs []error
		for _, dev := range devs {
			errs = append(errs, detachLoop(dev))
		}
		return len(devs) > 0, errors.Join(errs...)
	case kindDir:
		if _, err := os.Lstat(r.Path); err != nil {
			return false, nil
		}
		return true, removeDir(r.Path)
	}
	return false, fmt.Errorf("unknown record kind %q", r.Kind)
}

// mountedFrom reports whether dir is a mount point of source.
func mountedFrom(dir, source string) (bool, error) {
	ms, err := mounts()
	if err != nil {
		return false, err
	}
	for _, e := range ms {
		if e.Point == dir && (source == "" || e.Source == source) {
			return true, nil
		}
	}
	return false, nil
}
