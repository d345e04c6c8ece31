package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MountFiles shows at dir the files inside img as they were, read-only, as
// the system would have seen them after a crash at that instant: the
// filesystem journal is replayed into a throwaway copy-on-write overlay
// (history is never written). A disk with a partition table shows each
// filesystem at dir/p1, dir/p2, ...; a partition it cannot mount is left
// out and reported by Skipped. It fails when nothing can be shown.
//
// The overlay is served by a private FUSE mount under Options.StateDir,
// attached to loop devices and mounted with -o ro. The caller keeps img
// and closes it after Unmount.
func MountFiles(dir string, img Image, opts Options) (*Mount, error) {
	cfg := opts.config()
	if cfg.StateDir == "" {
		return nil, errors.New("mount: MountFiles needs Options.StateDir for its overlay and state file")
	}
	if err := needTools(); err != nil {
		return nil, err
	}
	dir, err := checkMountpoint(dir)
	if err != nil {
		return nil, err
	}
	m, err := newMount(dir, cfg)
	if err != nil {
		return nil, err
	}
	if err := m.mountFiles(img); err != nil {
		if terr := m.teardown(); terr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, terr)
		}
		return nil, err
	}
	return m, nil
}

func (m *Mount) mountFiles(img Image) error {
	backing, err := m.serveOverlay(img, "overlay of "+m.dir)
	if err != nil {
		return err
	}
	parts := findPartitions(img, img.Size())
	if parts == nil {
		return m.mountPart(img, backing, partition{Size: img.Size()}, m.dir)
	}
	// A small read-only tmpfs holds p1, p2, ...: the user's directory
	// itself is never written to.
	const tmpfsFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC
	if err := m.mountKernel(m.fsName(), m.dir, "tmpfs", tmpfsFlags, "mode=0555,size=64k"); err != nil {
		return fmt.Errorf("mount: tmpfs on %s: %w", m.dir, err)
	}
	var skipped []error
	for _, p := range parts {
		if err := m.mountPart(img, backing, p, filepath.Join(m.dir, p.Name)); err != nil {
			m.cfg.log.Warn("mount: partition not shown", "dir", m.dir, "err", err)
			skipped = append(skipped, err)
		}
	}
	if len(skipped) == len(parts) {
		return fmt.Errorf("mount: no filesystem to show: %s", joinLine(skipped))
	}
	if err := syscall.Mount(m.fsName(), m.dir, "tmpfs", tmpfsFlags|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount: make %s read-only: %w", m.dir, err)
	}
	m.mu.Lock()
	m.mu.skipped = skipped
	m.mu.Unlock()
	return nil
}

// serveOverlay serves a throwaway copy-on-write overlay of img from a
// private FUSE mount under StateDir and returns the path of its file.
func (m *Mount) serveOverlay(img Image, name string) (string, error) {
	priv := filepath.Join(m.cfg.StateDir, m.id)
	ovDir := filepath.Join(priv, "overlay")
	for _, d := range []string{priv, ovDir} {
		if err := m.mkdir(d); err != nil {
			return "", err
		}
	}
	ov, err := newOverlay(img, priv)
	if err != nil {
		return "", err
	}
	m.push("overlay", nil, ov.Close)
	f := &imageFile{cfg: m.cfg, name: name, img: ov, size: ov.Size(), writable: true}
	if _, err := m.serveFUSE(ovDir, &imageRoot{file: f}); err != nil {
		return "", err
	}
	return filepath.Join(ovDir, "disk.img"), nil
}

// mountPart attaches p of the overlay to a loop device and mounts its
// filesystem read-only at target. On failure it undoes what it made.
func (m *Mount) mountPart(img Image, backing string, p partition, target string) error {
	label := p.Name
	if label == "" {
		label = "disk"
	}
	typ, note := identify(img, p.Off)
	if typ == "" {
		if note == "" {
			note = "unknown filesystem type; rewind shows ext4 and xfs (and btrfs, vfat, ntfs3, iso9660 if the kernel has them): use disk.img instead"
		}
		return &noFilesystemError{fmt.Sprintf("%s: %s", label, note)}
	}
	if p.Name != "" {
		if err := os.Mkdir(target, 0o555); err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
	}
	depth := m.depth()
	_, err := m.attachAndMount(backing, p, target, typ)
	if err != nil {
		if uerr := m.undoTo(depth); uerr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, uerr)
		}
		if p.Name != "" {
			_ = os.Remove(target)
		}
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

// attachAndMount returns the loop device it attached.
func (m *Mount) attachAndMount(backing string, p partition, target, typ string) (string, error) {
	rec, err := m.record(kindLoop, backing, "", p.Off)
	if err != nil {
		return "", err
	}
	dev, err := attachLoop(backing, p.Off, p.Size)
	if err != nil {
		m.forget(rec)
		return "", err
	}
	if rec != nil {
		if err := m.state.setSource(*rec, dev); err != nil {
			m.cfg.log.Warn("mount: state", "err", err)
		} else {
			rec.Source = dev
		}
	}
	m.push("loop device "+dev, rec, func() error { return detachLoop(dev) })
	// ro on a writable device: ext4 and xfs replay their journal into the
	// overlay, then show the result read-only.
	flags := uintptr(syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV)
	if err := m.mountKernel(dev, target, typ, flags, mountData(typ)); err != nil {
		return dev, fmt.Errorf("cannot mount %s (%v): the kernel log (dmesg) may say why", typ, err)
	}
	return dev, nil
}

func (m *Mount) mountKernel(source, target, typ string, flags uintptr, data string) error {
	rec, err := m.record(kindMount, target, source, 0)
	if err != nil {
		return err
	}
	if err := syscall.Mount(source, target, typ, flags, data); err != nil {
		m.forget(rec)
		return err
	}
	m.push(typ+" mount "+target, rec, func() error { return unmountPath(m.cfg.log, target) })
	return nil
}

// mkdir makes a directory of the mount's own in the state directory.
func (m *Mount) mkdir(dir string) error {
	rec, err := m.record(kindDir, dir, "", 0)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		m.forget(rec)
		return fmt.Errorf("mount: %w", err)
	}
	m.push("directory "+dir, rec, func() error { return removeDir(dir) })
	return nil
}

// removeDir removes an empty directory; never anything inside it.
func removeDir(dir string) error {
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (m *Mount) depth() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.steps)
}

func (m *Mount) undoTo(depth int) error {
	var errs []error
	for m.depth() > depth {
		if err := m.undoLast(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// joinLine joins errors into one line.
func joinLine(errs []error) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

// ErrNoFilesystem is the class of a MountFiles error for a disk (or
// partition) that holds no filesystem rewind can show.
var ErrNoFilesystem = errors.New("no filesystem rewind can show")

type noFilesystemError struct{ msg string }

func (e *noFilesystemError) Error() string        { return e.msg }
func (e *noFilesystemError) Is(target error) bool { return target == ErrNoFilesystem }
