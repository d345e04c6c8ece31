package mount

import (
	"context"
	"log/slog"
	"time"
)

// Image is one disk image: a view of a volume at an instant (read-only,
// immutable) or a writable clone head.
type Image interface {
	Size() int64
	// ReadAt is stateless and safe for concurrent use.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt fails on a read-only image with an error satisfying
	// errors.Is(err, syscall.EROFS) or errors.Is(err, syscall.EPERM).
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every completed WriteAt durable.
	Flush() error
	Close() error
}

// Immutable is implemented by images that know whether their contents can
// still change. When an image implements it, its answer decides whether the
// kernel may keep the image's pages across opens; otherwise the tree decides
// from the name it was opened with (see doc.go).
type Immutable interface {
	Immutable() bool
}

// ScanReader is implemented by images that can read without filling a
// cache of their own. A handle on a fixed image reads this way unless it
// was opened with O_DIRECT: the kernel keeps the image's pages
// (FOPEN_KEEP_CACHE), so a second copy in the image's cache would only
// cost, a third of the time of a first read of a whole disk.
type ScanReader interface {
	ReadAtScan(p []byte, off int64) (int, error)
}

// Source is what the daemon offers the tree.
type Source interface {
	Volumes(ctx context.Context) ([]string, error)
	// Instants lists the names shown when listing VOLUME/at/: recovery
	// point labels and import or write times in compact UTC form
	// (20261125T140310Z).
	Instants(ctx context.Context, volume string) ([]string, error)
	// Points lists the recovery point labels of volume.
	Points(ctx context.Context, volume string) ([]string, error)
	// Open resolves "VOLUME" or "VOLUME@WHEN" (any WHEN form of CLI.md).
	// writable is true only for a clone head opened without @WHEN. An
	// error that satisfies errors.Is(err, fs.ErrNotExist) means there is
	// no such volume or instant.
	Open(ctx context.Context, name string) (img Image, writable bool, err error)
}

// Options tune a mount. The zero value works for MountTree and MountImage;
// MountFiles needs StateDir.
type Options struct {
	// StateDir holds the state file (mounts.json) that records every
	// mount and loop device made, so CleanupStale can undo what a killed
	// process left, and the private overlay mounts of MountFiles. Empty:
	// nothing is recorded (MountFiles refuses).
	StateDir string
	// Logger receives warnings and FUSE errors; nil discards them.
	Logger *slog.Logger
	// Clock tells the time used to decide whether an absolute WHEN can
	// still gain writes; nil means time.Now.
	Clock func() time.Time
	// FixedTimeout is how long the kernel may trust entries and
	// attributes of images at a fixed instant. Default 1h.
	FixedTimeout time.Duration
	// MovingTimeout is the same for everything that can change: volume
	// lists, VOLUME/disk.img, at/latest, at/-90s, clone heads. Default 1s.
	MovingTimeout time.Duration
	// Live tells MountImage that a read-only image may change underneath
	// (a VOLUME@latest view), so its pages are not kept across opens.
	Live bool
	// AllowOther lets users other than the mounting one see the mount.
	AllowOther bool
	// Debug logs every FUSE request (very verbose).
	Debug bool
}

const (
	defaultFixedTimeout  = time.Hour
	defaultMovingTimeout = time.Second
	// maxIO is the largest FUSE read or write request (MAX_KERNEL_WRITE).
	maxIO = 1 << 20
)

// config is Options with the defaults filled in.
type config struct {
	Options
	log     *slog.Logger
	now     func() time.Time
	started time.Time
}

func (o Options) config() *config {
	c := &config{Options: o, log: o.Logger, now: o.Clock}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.FixedTimeout <= 0 {
		c.FixedTimeout = defaultFixedTimeout
	}
	if c.MovingTimeout <= 0 {
		c.MovingTimeout = defaultMovingTimeout
	}
	c.started = c.now()
	return c
}

// timeout is the entry and attribute timeout of a node.
func (c *config) timeout(fixed bool) time.Duration {
	if fixed {
		return c.FixedTimeout
	}
	return c.MovingTimeout
}
