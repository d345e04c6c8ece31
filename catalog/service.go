package catalog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
}

// Service is the catalog over one data directory.
type Service struct {
	dir    string
	db     *pebble.DB
	chunks *blockstore.Store
	tl     *timeline.Store
	now    func() time.Time
	log    *slog.Logger
	inUse  InUse
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
	db, err := pebble.Open(filepath.Join(o.Dir, "index"), timeline.PebbleOptions(o.FS, o.Logger))
	if err != nil {
		if isLocked(err) {
			return nil, errorf(ErrBusy, "%s is open in another process (a running rewind serve?); stop it or use --data: %v", o.Dir, err)
		}
		return nil, fmt.Errorf("open %s: %w", o.Dir, err)
	}
	codec, err := blockstore.ParseCodec(o.Compression)
	if err != nil {
		db.Close()
		return nil, err
	}
	chunks, err := blockstore.Open(blockstore.Options{FS: o.FS, Dir: filepath.Join(o.Dir, "packs"), DB: db, Codec: codec, Logger: o.Logger})
	if err != nil {
		db.Close()
		return nil, err
	}
	tl, err := timeline.Open(timeline.Options{DB: db, Chunks: chunks, Now: o.Now, Logger: o.Logger, CacheBytes: o.CacheBytes})
	if err != nil {
		chunks.Close()
		db.Close()
		return nil, err
	}
	return &Service{dir: o.Dir, db: db, chunks: chunks, tl: tl, now: o.Now, log: o.Logger}, nil
}

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

// WarmIndex loads what fits of the chunk index into memory, in the
// background (see blockstore.Store.WarmLocations): a long-lived process
// (the daemon) calls it when it starts.
func (s *Service) WarmIndex() { s.chunks.WarmLocations() }

// Close flushes and closes everything. The index's memtable is written
// out, so that its write-ahead log is deleted now rather than replayed at
// the next open.
func (s *Service) Close() error {
	err := s.tl.Flush()
	err = errors.Join(err, s.db.Flush())
	err = errors.Join(err, s.tl.Close(), s.chunks.Close(), s.db.Close())
	return err
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
