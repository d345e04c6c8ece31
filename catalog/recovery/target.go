package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// Target is where a recovery copies to, and what its Disk serves after
// cutover.
type Target interface {
	hydrate.Target
	ReadAt(p []byte, off int64) (int, error)
	Close() error
}

var (
	_ Target = (*hydrate.FileTarget)(nil)
	_ Target = (*nbdTarget)(nil)
)

// opened is a target and what identifies it.
type opened struct {
	t              Target
	kind           string
	key            string // unique among running recoveries
	dev, ino, rdev uint64
	once           sync.Once
	err            error
}

// close closes the target once; nil is fine.
func (o *opened) close() error {
	if o == nil {
		return nil
	}
	o.once.Do(func() { o.err = o.t.Close() })
	return o.err
}

// isURI reports whether a target names an NBD server.
func isURI(s string) bool { return strings.Contains(s, "://") }

// fromFile takes a file or block device the caller opened. The file is
// locked so that no second recovery (in this or another daemon) writes
// it.
func fromFile(f *os.File, name string) (*opened, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	o := &opened{}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		o.kind, o.dev, o.ino = KindFile, uint64(st.Dev), st.Ino
		o.key = fmt.Sprintf("file:%d:%d", st.Dev, st.Ino)
	case unix.S_IFBLK:
		o.kind, o.rdev = KindDevice, uint64(st.Rdev)
		o.key = fmt.Sprintf("device:%d", st.Rdev)
	default:
		return nil, catalog.Errorf(catalog.ErrInvalid, "target %s is neither a file nor a block device; give a file, a block device or an nbd:// URI", name)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, catalog.Errorf(catalog.ErrConflict, "target %s is in use by another recovery; choose another target or cancel that recovery", name)
		}
		return nil, fmt.Errorf("lock target %s: %w", name, err)
	}
	t, err := hydrate.NewFileTarget(f)
	if err != nil {
		return nil, err
	}
	o.t = t
	return o, nil
}

// reopen opens a recovery's file or device target again after a restart,
// and checks that the path still names what the caller passed.
func reopen(r *record) (*opened, error) {
	flags := os.O_RDWR | unix.O_NOFOLLOW
	if r.Kind == KindDevice {
		flags = os.O_RDWR | os.O_EXCL
	}
	f, err := os.OpenFile(r.Target, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen target: %w", err)
	}
	o, err := fromFile(f, r.Target)
	if err != nil {
		f.Close()
		return nil, err
	}
	if o.kind != r.Kind || o.dev != r.Dev || o.ino != r.Ino || o.rdev != r.Rdev {
		o.close()
		return nil, fmt.Errorf("target %s is no longer the %s the recovery started with", r.Target, r.Kind)
	}
	return o, nil
}

// nbdKey names an NBD target among running recoveries.
func nbdKey(uri string) (string, error) {
	t, err := client.ParseURI(uri)
	if err != nil {
		return "", catalog.Errorf(catalog.ErrInvalid, "%v", err)
	}
	if t.Network != "tcp" {
		return "", catalog.Errorf(catalog.ErrInvalid, "target %s: the daemon connects to nbd://HOST:PORT/EXPORT or nbds:// targets, not to unix sockets", uri)
	}
	return "nbd:" + t.Address + "/" + t.Export, nil
}

// dialTarget connects to an NBD target.
func dialTarget(ctx context.Context, uri string) (*opened, error) {
	key, err := nbdKey(uri)
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, uri, client.Options{Writable: true, Timeout: 10 * time.Second})
	if err != nil {
		if errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrUnknownExport) || errors.Is(err, client.ErrReadOnly) {
			return nil, catalog.Errorf(catalog.ErrInvalid, "recovery target: %v", err)
		}
		return nil, fmt.Errorf("target %s: %w", uri, err)
	}
	return &opened{t: &nbdTarget{c: c}, kind: KindNBD, key: key}, nil
}

// nbdTarget is a Target on an NBD connection.
type nbdTarget struct{ c *client.Conn }

func (t *nbdTarget) ReadAt(p []byte, off int64) (int, error)  { return t.c.ReadAt(p, off) }
func (t *nbdTarget) WriteAt(p []byte, off int64) (int, error) { return t.c.WriteAt(p, off) }
func (t *nbdTarget) Size() int64                              { return t.c.Size() }
func (t *nbdTarget) Close() error                             { return t.c.Close() }

// WriteZeroes uses WRITE_ZEROES when the server has it, else writes
// zeroes.
func (t *nbdTarget) WriteZeroes(off, n int64) error {
	if t.c.Info().CanWriteZeroes() {
		return t.c.WriteZeroes(off, n, false)
	}
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := t.c.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Flush sends FLUSH when the server has it (a server without it writes
// through).
func (t *nbdTarget) Flush() error {
	if t.c.Info().CanFlush() {
		return t.c.Flush()
	}
	return nil
}
