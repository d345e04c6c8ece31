package mount

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount is a mounted tree, image or file view. Everything it made (FUSE
// mounts, loop devices, kernel mounts, directories) is undone by Unmount,
// in reverse order.
type Mount struct {
	dir   string
	cfg   *config
	id    string
	state *stateFile // nil: nothing recorded
	start uint64     // this process's start time, for records

	mu struct {
		sync.Mutex
		steps   []step
		skipped []error
	}
	unmountOnce sync.Once
	unmountErr  error
	unmounting  atomic.Bool
	done        chan struct{} // closed when Unmount finished
	ended       chan struct{} // closed when a FUSE session of this mount ended
	endedOnce   sync.Once
}

// step is one thing made, and how to undo it.
type step struct {
	what string
	rec  *record // dropped from the state file once undone
	undo func() error
}

func newMount(dir string, cfg *config) (*Mount, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	m := &Mount{dir: dir, cfg: cfg, id: hex.EncodeToString(b[:]),
		done: make(chan struct{}), ended: make(chan struct{})}
	m.start, _ = processStart(os.Getpid())
	if cfg.StateDir != "" {
		st, err := openState(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		m.state = st
	}
	return m, nil
}

// Dir is the directory the mount shows its contents in.
func (m *Mount) Dir() string { return m.dir }

// Skipped lists the partitions MountFiles could not show, one line each
// ("p3: unknown filesystem type; ...").
func (m *Mount) Skipped() []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]error(nil), m.mu.skipped...)
}

// Unmount undoes everything the mount made, newest first. A busy mount is
// detached lazily (it disappears from the namespace now and goes away when
// its last user does) and that is logged. Unmount is idempotent.
func (m *Mount) Unmount() error {
	m.unmountOnce.Do(func() {
		m.unmounting.Store(true)
		m.unmountErr = m.teardown()
		close(m.done)
	})
	return m.unmountErr
}

// Wait blocks until Unmount has finished or the kernel ended a FUSE
// session of this mount (someone ran fusermount3 -u or umount on it). Call
// Unmount afterwards in the second case: it removes what is left.
func (m *Mount) Wait() {
	select {
	case <-m.done:
		return
	case <-m.ended:
	}
	if m.unmounting.Load() {
		<-m.done
	}
}

func (m *Mount) push(what string, rec *record, undo func() error) {
	m.mu.Lock()
	m.mu.steps = append(m.mu.steps, step{what: what, rec: rec, undo: undo})
	m.mu.Unlock()
}

func (m *Mount) pop() (step, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.mu.steps)
	if n == 0 {
		return step{}, false
	}
	s := m.mu.steps[n-1]
	m.mu.steps = m.mu.steps[:n-1]
	return s, true
}

// undoLast undoes the newest step.
func (m *Mount) undoLast() error {
	s, ok := m.pop()
	if !ok {
		return nil
	}
	if err := s.undo(); err != nil {
		return fmt.Errorf("undo %s: %w", s.what, err)
	}
	if s.rec != nil {
		return m.state.remove(*s.rec)
	}
	return nil
}

func (m *Mount) teardown() error {
	var errs []error
	for {
		s, ok := m.pop()
		if !ok {
			break
		}
		if err := s.undo(); err != nil {
			// Keep the record: CleanupStale retries it later.
			errs = append(errs, fmt.Errorf("mount: undo %s: %w", s.what, err))
			m.cfg.log.Warn("mount: unmount", "what", s.what, "err", err)
			continue
		}
		if s.rec != nil {
			if err := m.state.remove(*s.rec); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// record writes the intent to make a resource into the state file.
func (m *Mount) record(kind, path, source string, off int64) (*record, error) {
	if m.state == nil {
		return nil, nil
	}
	r := record{ID: m.id, PID: os.Getpid(), Start: m.start, Kind: kind, Path: path, Source: source, Offset: off}
	if err := m.state.add(r); err != nil {
		return nil, err
	}
	return &r, nil
}

// forget drops a record whose resource was never made.
func (m *Mount) forget(r *record) {
	if r != nil {
		if err := m.state.remove(*r); err != nil {
			m.cfg.log.Warn("mount: state", "err", err)
		}
	}
}

// fsName is the FUSE source shown in /proc/mounts; CleanupStale matches it.
func (m *Mount) fsName() string { return "rewind:" + m.id }

// serveFUSE mounts root at dir and serves it until Unmount.
func (m *Mount) serveFUSE(dir string, root fs.InodeEmbedder) (*fuse.Server, error) {
	rec, err := m.record(kindFUSE, dir, m.fsName(), 0)
	if err != nil {
		return nil, err
	}
	srv, err := fs.Mount(dir, root, m.fuseOptions())
	if err != nil {
		m.forget(rec)
		return nil, fmt.Errorf("mount: FUSE mount on %s: %w (is the fuse3 package installed and /dev/fuse present?)", dir, err)
	}
	m.raiseReadahead(dir)
	var ended atomic.Bool
	go func() {
		srv.Wait()
		ended.Store(true)
		m.endedOnce.Do(func() { close(m.ended) })
	}()
	m.push("FUSE mount "+dir, rec, func() error {
		if ended.Load() {
			return nil // unmounted from outside
		}
		return unmountFUSE(m.cfg.log, srv, dir)
	})
	return srv, nil
}

// raiseReadahead lets buffered reads of the mount ask for maxIO bytes at
// a time instead of the kernel's 128 KiB FUSE readahead (a 1 GiB dd: 1024
// requests instead of 8192, about 1.6x faster). The device number comes
// from mountinfo: the daemon never stats its own mount.
func (m *Mount) raiseReadahead(dir string) {
	ms, err := mounts()
	if err != nil {
		return
	}
	for _, e := range ms {
		if e.Point == dir && e.Source == m.fsName() {
			kb := strconv.Itoa(maxIO >> 10)
			if err := os.WriteFile("/sys/class/bdi/"+e.Dev+"/read_ahead_kb", []byte(kb), 0); err != nil {
				m.cfg.log.Debug("mount: readahead stays at the kernel default", "dir", dir, "err", err)
			}
		}
	}
}

func (m *Mount) fuseOptions() *fs.Options {
	moving, zero := m.cfg.MovingTimeout, time.Duration(0)
	return &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:    m.cfg.AllowOther,
			FsName:        m.fsName(),
			Name:          "rewind",
			MaxWrite:      maxIO,
			DisableXAttrs: true,
			Debug:         m.cfg.Debug,
			Logger:        slog.NewLogLogger(m.cfg.log.Handler(), slog.LevelDebug),
		},
		EntryTimeout:    &moving,
		AttrTimeout:     &moving,
		NegativeTimeout: &zero,
		Logger:          slog.NewLogLogger(m.cfg.log.Handler(), slog.LevelWarn),
	}
}

// MountTree mounts the whole history at dir (rewind serve --mount DIR):
// DIR/VOLUME/disk.img, DIR/VOLUME/at/WHEN/disk.img for any WHEN, and
// DIR/VOLUME/points/LABEL/disk.img. The tree closes every image it opened.
func MountTree(dir string, src Source, opts Options) (*Mount, error) {
	cfg := opts.config()
	dir, err := checkMountpoint(dir)
	if err != nil {
		return nil, err
	}
	m, err := newMount(dir, cfg)
	if err != nil {
		return nil, err
	}
	t := &tree{cfg: cfg, src: src}
	t.mu.open = make(map[*instantDir]struct{})
	m.push("close images", nil, func() error { t.close(); return nil })
	if _, err := m.serveFUSE(dir, &rootDir{t: t}); err != nil {
		_ = m.teardown()
		return nil, err
	}
	return m, nil
}

// MountImage mounts one view at dir as dir/disk.img. A read-only image is
// treated as immutable (kernel-cached) unless Options.Live is set or the
// image says otherwise through Immutable. The caller keeps img and closes
// it after Unmount.
func MountImage(dir string, img Image, writable bool, opts Options) (*Mount, error) {
	cfg := opts.config()
	dir, err := checkMountpoint(dir)
	if err != nil {
		return nil, err
	}
	return mountImage(dir, img, writable, cfg)
}

func mountImage(dir string, img Image, writable bool, cfg *config) (*Mount, error) {
	m, err := newMount(dir, cfg)
	if err != nil {
		return nil, err
	}
	fixed := !writable && !cfg.Live
	if im, ok := img.(Immutable); ok {
		fixed = !writable && im.Immutable()
	}
	f := &imageFile{cfg: cfg, name: dir + "/disk.img", img: img, size: img.Size(), writable: writable, fixed: fixed}
	if _, err := m.serveFUSE(dir, &imageRoot{file: f}); err != nil {
		_ = m.teardown()
		return nil, err
	}
	return m, nil
}

// imageRoot is the root of MountImage: a directory holding disk.img.
type imageRoot struct {
	fs.Inode
	file *imageFile
}

var (
	_ fs.NodeOnAdder   = (*imageRoot)(nil)
	_ fs.NodeLookuper  = (*imageRoot)(nil)
	_ fs.NodeGetattrer = (*imageRoot)(nil)
)

func (r *imageRoot) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG})
	r.AddChild("disk.img", ch, false)
}

func (r *imageRoot) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	return 0
}

func (r *imageRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch := r.GetChild(name)
	if ch == nil {
		return nil, syscall.ENOENT
	}
	r.file.fillEntry(out)
	return ch, 0
}

// checkMountpoint returns dir as an absolute path without symlinks (the
// form /proc/self/mountinfo uses) if it is an empty directory that is not
// already a mount point.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mount: %s: %w", dir, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mount: %s does not exist: create an empty directory first (mkdir -p %s)", abs, abs)
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("mount: %s is a dead FUSE mount: unmount it first (fusermount3 -u %s)", abs, abs)
	case err != nil:
		return "", fmt.Errorf("mount: %w", err)
	case !fi.IsDir():
		return "", fmt.Errorf("mount: %s is not a directory: mount on an empty directory", abs)
	}
	mounted, err := isMountpoint(abs)
	if err != nil {
		return "", err
	}
	if mounted {
		return "", fmt.Errorf("mount: %s is already a mount point: unmount it or choose an empty directory", abs)
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("mount: %w", err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return "", fmt.Errorf("mount: %s is not empty: mount on an empty directory", abs)
	}
	return abs, nil
}
