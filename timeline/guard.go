package timeline

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// DefaultReserveBytes is the size of a Guard's reserve file.
const DefaultReserveBytes = 8 << 20

// tableBackoff is how long the creation of a table file waits before it
// fails once the store is unwritable: Pebble retries a failed flush at
// once, and would otherwise spin.
const tableBackoff = time.Second

// Guard is the filesystem a timeline database is opened on (PebbleOptions
// takes it). Pebble treats a failed write of its log as fatal: it panics,
// or reports a commit error through Logger.Fatalf and then carries on as
// if the commit had succeeded. The Guard makes sure it never gets there:
//
//   - It keeps a reserve file of preallocated space. The first write of
//     Pebble's log or manifest that meets a full disk marks the store
//     unwritable, deletes the reserve and is tried again, so what Pebble
//     had in flight still fits.
//   - Once the store is unwritable, a log write or sync that still fails
//     is dropped (the file is cut back to where it was) and reported as
//     done; no new write reaches Pebble (Store checks Err first), no flush
//     can succeed (table files cannot be created, after a backoff), so the
//     log on disk ends at its last whole write and nothing is deleted.
//   - Before Pebble syncs a table or its log, it syncs the packs
//     (SetPackSync): nothing Pebble makes durable points at pack bytes
//     that are not. The log's records of writes not yet flushed may
//     reach the disk ahead of their bytes, when the kernel writes them
//     out on its own: the Store finds those after a crash (see
//     synced.go, and "Durability" in doc.go). Syncing the packs before
//     every write of the log, as this did before, cost a sixth of the
//     daemon's CPU at queue depth 32.
//
// The store reopens writable once there is space again.
type Guard struct {
	vfs.FS
	reserve  string // path of the reserve file; "" for none
	log      *slog.Logger
	packSync atomic.Pointer[func() error]
	// dropping: a log write was dropped; every later one is too, so the
	// log on disk ends at its last whole write, with no gap.
	dropping atomic.Bool

	err atomic.Pointer[unwritableError] // why the store is unwritable; nil while it is not

	mu      sync.Mutex
	failed  chan struct{} // closed once err is set
	stop    chan struct{}
	stopped bool
}

// NewGuard wraps fs. reserve, if not empty, names a file of reserveBytes
// kept preallocated; if it cannot be made (the disk is full already), the
// store starts unwritable.
func NewGuard(fs vfs.FS, reserve string, reserveBytes int64, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{FS: fs, reserve: reserve, log: log, failed: make(chan struct{}), stop: make(chan struct{})}
	if reserve != "" {
		if err := g.makeReserve(reserveBytes); err != nil {
			g.fail(err, false) // the caller's to say, if it writes
		}
	}
	return g
}

// makeReserve creates (or completes) the reserve file.
func (g *Guard) makeReserve(n int64) error {
	if fi, err := g.FS.Stat(g.reserve); err == nil && fi.Size() >= n {
		return nil
	}
	f, err := g.FS.Create(g.reserve, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create %s: %w", g.reserve, err)
	}
	defer f.Close()
	err = unix.EOPNOTSUPP
	if fd := f.Fd(); fd != vfs.InvalidFd {
		err = unix.Fallocate(int(fd), 0, 0, n)
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		_, err = f.WriteAt(make([]byte, n), 0) // no fallocate here: write it out
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		g.FS.Remove(g.reserve)
		return fmt.Errorf("reserve %d MiB of space in %s: %w", n>>20, g.FS.PathDir(g.reserve), err)
	}
	return nil
}

// releaseReserve deletes the reserve file; it reports whether there was
// one.
func (g *Guard) releaseReserve() bool {
	if g.reserve == "" {
		return false
	}
	return g.FS.Remove(g.reserve) == nil
}

// SetPackSync installs the function that makes every pack byte written so
// far durable. Store.Open installs the chunk store's.
func (g *Guard) SetPackSync(f func() error) { g.packSync.Store(&f) }

func (g *Guard) syncPacks() error {
	if f := g.packSync.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// Err returns nil while the store takes writes, else an error that
// matches ErrUnwritable and wraps the cause (so a full disk still matches
// syscall.ENOSPC).
func (g *Guard) Err() error {
	if g == nil {
		return nil
	}
	if e := g.err.Load(); e != nil {
		return e
	}
	return nil
}

// Fail marks the store unwritable because of cause, once; it says so in
// the log.
func (g *Guard) Fail(cause error) { g.fail(cause, true) }

func (g *Guard) fail(cause error, log bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err.Load() != nil {
		return
	}
	g.err.Store(&unwritableError{cause: cause})
	close(g.failed)
	if !log {
		return
	}
	g.log.Error("the store stopped taking writes (reads go on); it takes them again once reopened with the cause gone", "err", cause)
}

// SetReadOnly makes the store refuse writes from the start, because of
// cause (a reader of another writer's store); it logs nothing.
func (g *Guard) SetReadOnly(cause error) { g.fail(cause, false) }

// Failed is closed when the store stops taking writes.
func (g *Guard) Failed() <-chan struct{} { return g.failed }

// Close wakes what waits in a backoff; call it before closing the
// database.
func (g *Guard) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		g.stopped = true
		close(g.stop)
	}
}

// unwritableError is the error of every write once the store failed.
type unwritableError struct{ cause error }

func (e *unwritableError) Error() string {
	if errors.Is(e.cause, syscall.ENOSPC) {
		return "the store is out of space and takes no more writes: " + e.cause.Error()
	}
	return "the store takes no more writes: " + e.cause.Error()
}
func (e *unwritableError) Is(target error) bool { return target == ErrUnwritable }
func (e *unwritableError) Unwrap() error        { return e.cause }

type fileKind int

const (
	kindOther fileKind = iota
	kindLog            // write-ahead log: its failure is fatal to Pebble
	kindManifest
	kindTable // sstables and blob files: a failed flush is retried
)

func classify(name string) fileKind {
	base := name[strings.LastIndexByte(name, '/')+1:]
	switch {
	case strings.HasSuffix(base, ".log"):
		return kindLog
	case strings.HasPrefix(base, "MANIFEST-"):
		return kindManifest
	case strings.HasSuffix(base, ".sst"), strings.HasSuffix(base, ".blob"):
		return kindTable
	}
	return kindOther
}

func (g *Guard) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	k := classify(name)
	if k == kindOther {
		return f, nil
	}
	gf := &guardFile{File: f, g: g, kind: k}
	if fi, err := f.Stat(); err == nil {
		gf.off = fi.Size()
	}
	return gf, nil
}

// beforeCreate holds back the creation of a table file while the store is
// unwritable: a flush cannot succeed, and Pebble retries one at once.
func (g *Guard) beforeCreate(name string) error {
	if classify(name) != kindTable {
		return nil
	}
	err := g.Err()
	if err == nil {
		return nil
	}
	select {
	case <-time.After(tableBackoff):
	case <-g.stop:
	}
	return err
}

// Create implements vfs.FS.
func (g *Guard) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err := g.beforeCreate(name); err != nil {
		return nil, err
	}
	f, err := g.FS.Create(name, c)
	if isNoSpace(err) {
		g.Fail(err)
		// A new log or manifest is part of a commit in flight: Pebble
		// must not see it fail.
		if k := classify(name); (k == kindLog || k == kindManifest) && g.releaseReserve() {
			f, err = g.FS.Create(name, c)
		}
	}
	return g.wrap(name, f, err)
}

// OpenReadWrite implements vfs.FS.
func (g *Guard) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, c, opts...)
	return g.wrap(name, f, err)
}

// ReuseForWrite implements vfs.FS.
func (g *Guard) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, c)
	return g.wrap(newname, f, err)
}

// Unwrap implements vfs.FS.
func (g *Guard) Unwrap() vfs.FS { return g.FS }

func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT))
}

// guardFile is a log, manifest or table file of Pebble.
type guardFile struct {
	vfs.File
	g    *Guard
	kind fileKind
	off  int64 // where the next sequential Write lands
}

func (f *guardFile) Write(p []byte) (int, error) {
	if f.kind == kindLog && f.g.dropping.Load() {
		return len(p), nil
	}
	n, err := f.File.Write(p)
	if err == nil || f.kind == kindTable || f.kind == kindOther {
		if isNoSpace(err) {
			f.g.Fail(err)
		}
		f.off += int64(n)
		return n, err
	}
	if isNoSpace(err) {
		f.g.Fail(err)
		if f.g.releaseReserve() {
			m, err2 := f.File.Write(p[n:])
			n += m
			if err2 == nil {
				f.off += int64(n)
				return n, nil
			}
			err = err2
		}
	}
	f.g.Fail(err)
	// Cut the file back to where this write began, so it ends with a
	// whole record.
	if fd := f.File.Fd(); fd != vfs.InvalidFd {
		_ = unix.Ftruncate(int(fd), f.off)
	}
	if f.kind == kindLog {
		f.g.dropping.Store(true)
		return len(p), nil // dropped: see Guard
	}
	return 0, err
}

// beforeSync syncs the packs before a table is synced (the log's syncs
// go through syncLog).
func (f *guardFile) beforeSync() error {
	if f.kind == kindTable {
		return f.g.syncPacks()
	}
	return nil
}

// syncLog runs sync, a sync of the log, after a sync of the packs: what
// Pebble makes durable (and an object store's mirror uploads) never points
// at pack bytes that are not, and a FLUSH that syncs the log makes every
// write acknowledged before it durable, bytes and index. The log's records
// may still reach the disk ahead of their pack bytes when the kernel
// writes the log out unsynced: the Store finds those after a crash
// (synced.go). A failed sync of the packs drops the log's sync (see
// Guard).
func (f *guardFile) syncLog(sync func() error) error {
	if f.g.dropping.Load() {
		return nil
	}
	if err := f.g.syncPacks(); err != nil {
		f.g.Fail(fmt.Errorf("sync packs before the index log: %w", err))
		f.g.dropping.Store(true)
		return nil
	}
	return f.afterSync(sync())
}

// afterSync decides what a failed sync returns: the log's is dropped (the
// store is unwritable, and every caller checks Guard.Err after a commit),
// any other is returned.
func (f *guardFile) afterSync(err error) error {
	if err == nil {
		return nil
	}
	f.g.Fail(err)
	if f.kind == kindLog {
		return nil
	}
	return err
}

func (f *guardFile) Sync() error {
	if f.kind == kindLog {
		return f.syncLog(f.File.Sync)
	}
	if err := f.beforeSync(); err != nil {
		return err
	}
	return f.afterSync(f.File.Sync())
}

func (f *guardFile) SyncData() error {
	if f.kind == kindLog {
		return f.syncLog(f.File.SyncData)
	}
	if err := f.beforeSync(); err != nil {
		return err
	}
	return f.afterSync(f.File.SyncData())
}

func (f *guardFile) SyncTo(length int64) (bool, error) {
	if f.kind == kindLog {
		full := true
		err := f.syncLog(func() (err error) {
			full, err = f.File.SyncTo(length)
			return err
		})
		return full, err
	}
	if err := f.beforeSync(); err != nil {
		return false, err
	}
	full, err := f.File.SyncTo(length)
	return full, f.afterSync(err)
}

func (f *guardFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if isNoSpace(err) {
		f.g.Fail(err)
	}
	return n, err
}

var _ io.Writer = (*guardFile)(nil)
