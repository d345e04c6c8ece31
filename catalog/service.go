package catalog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore"
	"github.com/rewind-dev/rewind/timeline"
	"golang.org/x/sys/unix"
)

// Options configure a Service.
type Options struct {
	Dir        string // the data directory
	FS         vfs.FS // default vfs.Default
	Now        func() time.Time
	Logger     *slog.Logger
	CacheBytes int64
	// Compression is zstd (the default), s2 or none.
	Compression string
	// NoParity writes new packs without Reed-Solomon parity, and writes
	// no missing sidecar (see blockstore.Options.NoParity): for measuring
	// what parity costs. Packs written so are never given parity later.
	NoParity bool

	// Store, when set, is an object store (s3://BUCKET[/PREFIX] or a
	// directory) that holds the packs and a copy of the index; DATA keeps
	// the index and a cache of StoreCacheBytes. A data directory
	// remembers its store: later opens may leave Store empty.
	Store           string
	StoreCacheBytes int64
	// ReadOnly opens a store in an object store as a reader: its index is
	// brought down afresh, nothing is uploaded, and writes are refused.
	ReadOnly bool
	// TakeOver takes the writer's lease from another data directory.
	TakeOver bool
	// OnRestore is told the progress of bringing an index down.
	OnRestore func(done, total int64)
}

// sealIdle is how long the active pack of a store on an object store
// waits for writes before it is sealed: uploaded whole, and its local
// copy deleted.
const sealIdle = 3 * time.Second

// Service is the catalog over one data directory.
type Service struct {
	dir    string
	fs     vfs.FS
	guard  *timeline.Guard
	db     *pebble.DB
	chunks *blockstore.Store
	tl     *timeline.Store
	now    func() time.Time
	log    *slog.Logger
	inUse  InUse
	// removeCheck, when set, can refuse RemoveVolume even with force.
	removeCheck func(volume string) error
	// settle, when set, returns once the writes acknowledged on a
	// volume so far are in its history (protected disks record them
	// behind their replies).
	settle      func(volume string) error
	remote      *remoteStore  // nil for a store kept in the directory
	packsFS     vfs.FS        // where the packs are (the object store's layer)
	replicating chan struct{} // holds a token while a replication runs (replicate.go)
}

// Open opens (creating if needed) the data directory.
func Open(o Options) (*Service, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := o.FS.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", o.Dir, err)
	}
	var lostTo atomic.Pointer[timeline.Guard] // set once the guard is made
	rs, err := openRemote(o, func(err error) {
		if g := lostTo.Load(); g != nil {
			g.Fail(err)
		}
	})
	if err != nil {
		return nil, err
	}
	indexFS, packsFS := o.FS, o.FS
	if rs != nil {
		indexFS, packsFS = rs.mirror, rs.packs
		o.NoParity = true // the object store keeps its own redundancy
	}
	// The reserve is made before Pebble opens, so that a full disk is met
	// here first (see timeline.Guard).
	guard := timeline.NewGuard(indexFS, filepath.Join(o.Dir, "reserve"), timeline.DefaultReserveBytes, o.Logger)
	lostTo.Store(guard)
	db, err := openIndex(filepath.Join(o.Dir, "index"), guard, o.Logger)
	if err != nil {
		rs.close()
		if isLocked(err) {
			return nil, errorf(ErrBusy, "%s is open in another process (a running rewind serve?); stop it or use --data: %v", o.Dir, err)
		}
		if isNoSpace(err) {
			return nil, openError(o.Dir, err)
		}
		return nil, fmt.Errorf("open %s: %w", o.Dir, err)
	}
	if o.ReadOnly && rs != nil {
		// After the index opened: its copy here takes what verify and
		// the like note down; none of it goes up.
		guard.SetReadOnly(fmt.Errorf("%s is opened read-only (a reader of %s)", o.Dir, rs.url))
	}
	codec, err := blockstore.ParseCodec(o.Compression)
	if err != nil {
		db.Close()
		rs.close()
		return nil, err
	}
	bo := blockstore.Options{FS: packsFS, Dir: filepath.Join(o.Dir, "packs"), DB: db, Codec: codec, Logger: o.Logger, NoParity: o.NoParity}
	if rs != nil {
		bo.SealIdle = sealIdle // the local copy of an idle pack goes
	}
	chunks, err := blockstore.Open(bo)
	if err != nil {
		guard.Close()
		db.Close()
		rs.close()
		return nil, openError(o.Dir, err)
	}
	tl, err := timeline.Open(timeline.Options{DB: db, Chunks: chunks, Now: o.Now, Logger: o.Logger, CacheBytes: o.CacheBytes, Guard: guard})
	if err != nil {
		guard.Close()
		chunks.StopReadingIndex()
		db.Close()
		chunks.Close()
		rs.close()
		return nil, openError(o.Dir, err)
	}
	return &Service{dir: o.Dir, fs: o.FS, guard: guard, db: db, chunks: chunks, tl: tl, now: o.Now, log: o.Logger, remote: rs, packsFS: packsFS, replicating: make(chan struct{}, 1)}, nil
}

// openError says that a data directory too full to start in needs space.
func openError(dir string, err error) error {
	if isNoSpace(err) {
		return errorf(ErrNoSpace, "no space left on %s to open it; free at least %d MiB there", dir, 2*timeline.DefaultReserveBytes>>20)
	}
	return err
}

// openIndex opens the Pebble database on guard. A disk too full for
// Pebble to start its log opens it read-only (the store is then
// unwritable), so that what it holds can still be read.
//
// Pebble's Open flushes the log it replays and waits for that flush,
// retrying it for as long as it fails: on a disk without room for it,
// Open would never return. So a store that starts unwritable (no room for
// the reserve), or whose log needs more room to flush than the disk has,
// opens read-only at once.
func openIndex(dir string, guard *timeline.Guard, log *slog.Logger) (*pebble.DB, error) {
	if guard.Err() == nil {
		if need, free, ok := replayRoom(guard.Unwrap(), dir); ok && free < need {
			guard.Fail(fmt.Errorf("the index log needs about %d MiB to be replayed, and %s has %d MiB free: %w",
				need>>20, dir, free>>20, unix.ENOSPC))
		}
	}
	if guard.Err() == nil {
		db, err := pebble.Open(dir, timeline.PebbleOptions(guard, log))
		if err == nil || !isNoSpace(err) {
			return db, err
		}
		guard.Fail(err)
	}
	o := timeline.PebbleOptions(guard, log)
	o.ReadOnly = true
	db, err := pebble.Open(dir, o)
	if err != nil {
		return nil, errors.Join(guard.Err(), err)
	}
	log.Warn("the data directory is too full to take writes: serving what it holds read-only; free some space and restart", "err", guard.Err())
	return db, nil
}

// replayRoom returns how many bytes replaying the index's log may need
// (its size, plus a margin for the tables and manifest it writes) and how
// many are free; ok is false when either is unknown.
func replayRoom(fs vfs.FS, dir string) (need, free int64, ok bool) {
	names, err := fs.List(dir)
	if err != nil {
		return 0, 0, false // a new index
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".log") {
			if fi, err := fs.Stat(fs.PathJoin(dir, n)); err == nil {
				need += fi.Size()
			}
		}
	}
	if need == 0 {
		return 0, 0, false
	}
	du, err := fs.GetDiskUsage(dir)
	if err != nil {
		return 0, 0, false
	}
	return need + timeline.DefaultReserveBytes, int64(du.AvailBytes), true
}

// Writable returns nil while the store takes writes, else why not.
func (s *Service) Writable() error { return s.tl.Writable() }

// isLocked reports whether Pebble could not open its directory because
// another process holds its lock: Pebble takes an fcntl(F_SETLK) lock on
// index/LOCK and returns that call's error as is, which Linux sets to
// EAGAIN (EWOULDBLOCK) when another process holds it. A second open within
// one process fails with a plain error instead, which this does not
// classify: one process opens a data directory once.
func isLocked(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK)
}

// Dir returns the data directory.
func (s *Service) Dir() string { return s.dir }

// Timeline returns the timeline store, for the servers that serve views.
func (s *Service) Timeline() *timeline.Store { return s.tl }

// WarmIndex loads the chunk index into memory, in the background, when
// at least half of it fits (see blockstore.Store.WarmLocations): a
// long-lived process (the daemon) calls it when it starts.
//
// It also says in the log, once, if the store starts without taking
// writes (its disk is full): a command learns it from its errors.
func (s *Service) WarmIndex() {
	if err := s.tl.Writable(); err != nil {
		s.log.Error("the store takes no writes (reads go on); free space and restart", "err", err)
	}
	s.chunks.WarmLocations()
}

// Close flushes and closes everything. The index's memtable is written
// out, so that its write-ahead log is deleted now rather than replayed at
// the next open (if it cannot be, the log is replayed). A store that
// stopped taking writes is closed as it is, and Close says why: what was
// flushed before is on disk, and what was not cannot be.
func (s *Service) Close() error {
	stopErr := s.tl.StopBackground()
	err := s.tl.Writable()
	if err == nil {
		err = s.tl.Flush()
		if err == nil {
			if ferr := s.flushIndex(); ferr != nil {
				s.log.Warn("the index could not be written out; its log is replayed at the next start", "err", ferr)
			}
		}
	}
	s.guard.Close()
	s.chunks.StopReadingIndex()
	// The index closes first: writing out its log syncs the packs first.
	return errors.Join(err, stopErr, s.tl.Close(), s.db.Close(), s.chunks.Close(), s.remote.close())
}

// flushIndex writes the memtable out, or gives up when the store stops
// taking writes meanwhile (a flush that cannot write would be retried for
// ever).
func (s *Service) flushIndex() error {
	done, err := s.db.AsyncFlush()
	if err != nil {
		return err
	}
	select {
	case <-done:
		return s.tl.Writable()
	case <-s.guard.Failed():
		return s.tl.Writable()
	}
}

// DefaultDataDir is /var/lib/rewind for root, else ~/.local/share/rewind.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/rewind"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".rewind"
	}
	return filepath.Join(home, ".local", "share", "rewind")
}
