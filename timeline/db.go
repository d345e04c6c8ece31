package timeline

import (
	"errors"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// IndexCacheBytes is the memory Pebble keeps table blocks of the index
// in.
const IndexCacheBytes = 128 << 20

// IndexMemTableBytes is the most a memtable of the index grows to.
const IndexMemTableBytes = 64 << 20

// PebbleOptions returns the options a timeline database is opened with:
// the timeline Comparer, bloom filters on every level (version keys are
// looked up by block prefix), and the newest format. On a Guard (see
// guard.go), a fatal error of Pebble marks the store unwritable instead of
// ending the process, and background errors are logged once.
func PebbleOptions(fs vfs.FS, log *slog.Logger) *pebble.Options {
	g, _ := fs.(*Guard)
	o := &pebble.Options{
		// The index of a few TiB of chunks and the blocks being written
		// stay in memory: with Pebble's default of 8 MiB, every clone
		// write's lookups (is this chunk stored, which patches does its
		// block have) read table blocks with pread, about a sixth of a
		// 4 KiB write's CPU.
		CacheSize: IndexCacheBytes,
		// Chunk IDs are random keys: every table a flush writes overlaps
		// the whole index, and compacting it rewrites that. A memtable
		// (grown from 256 KiB as writes come) of up to 64 MiB instead of
		// 4 MiB flushes a sixteenth as often; with 4 KiB clone writes at
		// queue depth 32, compactions had been a third of the daemon's
		// CPU.
		MemTableSize:       IndexMemTableBytes,
		FS:                 fs,
		Comparer:           Comparer,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{log: log, g: g},
		Cleaner:            deleteCleaner{},
	}
	if g != nil {
		o.EventListener = &pebble.EventListener{BackgroundError: func(err error) {
			if g.Err() != nil {
				return // said once, by Guard.Fail
			}
			if log != nil {
				log.Error("pebble background error", "err", err)
			}
		}}
	}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].FilterType = pebble.TableFilter
	}
	o.EnsureDefaults()
	return o
}

// deleteCleaner removes obsolete files at once, write-ahead logs included.
// With Pebble's default cleaner, a log whose memtable was flushed is kept
// for reuse (up to three of them, each as large as a memtable's worth of
// writes), and a store closed after an import left them on disk until its
// next open: 4 MB on 470 MB of packs. Pebble recycles no log when its
// cleaner needs file contents; the embedded ArchiveCleaner (one level
// down) says so, and DeleteCleaner's Clean, one level up, wins.
type deleteCleaner struct {
	pebble.DeleteCleaner
	needsContents
}

type needsContents struct{ pebble.ArchiveCleaner }

// quietLogger sends Pebble's chatter to slog at debug level.
type quietLogger struct {
	log *slog.Logger
	g   *Guard
}

func (q quietLogger) Infof(format string, args ...any) {
	if q.log != nil {
		q.log.Debug("pebble", "msg", sprintf(format, args...))
	}
}

func (q quietLogger) Errorf(format string, args ...any) {
	if q.log != nil {
		q.log.Error("pebble", "msg", sprintf(format, args...))
	}
}

// Fatalf ends the process, unless the store is on a Guard: then the store
// stops taking writes (Pebble calls it for a commit that failed, and then
// returns as if the commit had succeeded; Store checks the Guard after
// every commit).
func (q quietLogger) Fatalf(format string, args ...any) {
	if q.g != nil {
		q.g.Fail(errors.New(sprintf(format, args...)))
		return
	}
	if q.log != nil {
		q.log.Error("pebble fatal", "msg", sprintf(format, args...))
	}
	panic(sprintf(format, args...))
}
