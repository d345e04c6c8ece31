package timeline

import (
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// PebbleOptions returns the options a timeline database is opened with:
// the timeline Comparer, bloom filters on every level (version keys are
// looked up by block prefix), and the newest format.
func PebbleOptions(fs vfs.FS, log *slog.Logger) *pebble.Options {
	o := &pebble.Options{
		FS:                 fs,
		Comparer:           Comparer,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{log},
	}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].FilterType = pebble.TableFilter
	}
	o.EnsureDefaults()
	return o
}

// quietLogger sends Pebble's chatter to slog at debug level.
type quietLogger struct{ log *slog.Logger }

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

func (q quietLogger) Fatalf(format string, args ...any) {
	if q.log != nil {
		q.log.Error("pebble fatal", "msg", sprintf(format, args...))
	}
	panic(sprintf(format, args...))
}
