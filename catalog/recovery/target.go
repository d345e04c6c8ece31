package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// interrupt ends the dialling of an NBD target whose connection broke:
// its requests fail at once.
func (o *opened) interrupt() {
	if o == nil {
		return
	}
	if nt, ok := o.t.(*nbdTarget); ok {
		nt.interrupt()
	}
}

// down says since when an NBD target has been out of reach; zero while
// it answers, and for other targets.
func (o *opened) down() time.Time {
	if o == nil {
		return time.Time{}
	}
	if nt, ok := o.t.(*nbdTarget); ok {
		return nt.Down()
	}
	return time.Time{}
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
	if !sameTarget(o, *r) {
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

// dialTarget connects to an NBD target. ctx bounds this first dial;
// stop ends the dials again after a broken connection (the daemon stops).
func dialTarget(ctx, stop context.Context, uri string, log *slog.Logger) (*opened, error) {
	o, err := dialTargetErr(ctx, stop, uri, log)
	if err != nil && (errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrUnknownExport) || errors.Is(err, client.ErrReadOnly)) {
		return nil, catalog.Errorf(catalog.ErrInvalid, "recovery target: %v", err)
	}
	return o, err
}

func dialTargetErr(ctx, stop context.Context, uri string, log *slog.Logger) (*opened, error) {
	key, err := nbdKey(uri)
	if err != nil {
		return nil, err
	}
	c, err := dialNBD(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", uri, err)
	}
	o := newNBDTarget(stop, uri, key, c.Size(), log)
	o.t.(*nbdTarget).mu.c = c
	return o, nil
}

// pendingTarget is an NBD target out of reach when a restarted daemon
// resumes its recovery: of size bytes, dialled on its first request (and
// again, as a broken connection is; see nbdTarget).
func pendingTarget(stop context.Context, uri string, size int64, log *slog.Logger) (*opened, error) {
	key, err := nbdKey(uri)
	if err != nil {
		return nil, err
	}
	o := newNBDTarget(stop, uri, key, size, log)
	o.t.(*nbdTarget).mu.down = time.Now()
	return o, nil
}

func newNBDTarget(stop context.Context, uri, key string, size int64, log *slog.Logger) *opened {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &nbdTarget{uri: uri, dial: dialNBD, retryFor: targetRetryFor, log: log, size: size}
	t.stop, t.interrupt = context.WithCancel(stop)
	return &opened{t: t, kind: KindNBD, key: key}
}

// errNotConnected: a pending target's first request.
var errNotConnected = fmt.Errorf("%w: not connected yet", client.ErrClosed)

func dialNBD(ctx context.Context, uri string) (*client.Conn, error) {
	return client.Dial(ctx, uri, client.Options{Writable: true, Timeout: 10 * time.Second})
}

// targetRetryFor is how long an NBD target whose connection broke is
// dialled again before its requests fail.
var targetRetryFor = 10 * time.Minute

// nbdTarget is a Target on an NBD connection. A connection that breaks
// (the server restarted, the network dropped it) is dialled again, with
// backoff from 1 s to 10 s for up to targetRetryFor, and the request goes
// again on the new one; requests wait meanwhile. Writes that the old
// connection acknowledged but no FLUSH confirmed may be lost with it
// (the server may have gone down), so they are handed to lost, which
// marks them for copying again; once nothing is copied any more (after
// cutover), lost is nil and they are left to the server, as any NBD
// client's unflushed writes are. A request the server refuses (an
// error reply) is not sent again.
type nbdTarget struct {
	uri      string
	size     int64
	dial     func(ctx context.Context, uri string) (*client.Conn, error)
	retryFor time.Duration
	log      *slog.Logger
	// stop ends the dials: the daemon stops, or the copy is cancelled
	// (interrupt).
	stop      context.Context
	interrupt context.CancelFunc

	dialMu sync.Mutex // held while a broken connection is replaced
	mu     struct {
		sync.Mutex
		c         *client.Conn
		gen       uint64 // connections dialled since the first
		unflushed map[uint64][2]int64
		seq       uint64
		lost      func(off, n int64)
		down      time.Time // since when the server is out of reach; zero while it answers
	}
}

// setLost sets (or, with nil, clears) what takes the writes a broken
// connection may have lost.
func (t *nbdTarget) setLost(f func(off, n int64)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.lost = f
	if f == nil {
		t.mu.unflushed = nil
	}
}

// Down reports since when the server has been out of reach (zero while
// it answers).
func (t *nbdTarget) Down() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.down
}

func (t *nbdTarget) conn() (*client.Conn, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.c, t.mu.gen
}

// do runs fn on the connection, dialling again and repeating it while
// the connection breaks. A write's range is noted until a FLUSH.
func (t *nbdTarget) do(fn func(c *client.Conn, gen uint64) error, write bool, off, n int64) error {
	for {
		c, gen := t.conn()
		if c == nil { // pending: dial first
			if err := t.redial(gen, errNotConnected); err != nil {
				return err
			}
			continue
		}
		err := fn(c, gen)
		if err == nil {
			if write {
				t.noteWrite(gen, off, n)
			}
			return nil
		}
		if !errors.Is(err, client.ErrClosed) || t.stop.Err() != nil {
			return err
		}
		if err := t.redial(gen, err); err != nil {
			return err
		}
	}
}

// noteWrite notes a write that connection gen acknowledged, until a
// FLUSH; one whose connection is gone already goes to lost at once.
func (t *nbdTarget) noteWrite(gen uint64, off, n int64) {
	t.mu.Lock()
	lost := t.mu.lost
	if lost == nil {
		t.mu.Unlock()
		return // after cutover
	}
	if gen != t.mu.gen {
		t.mu.Unlock()
		lost(off, n)
		return
	}
	if t.mu.unflushed == nil {
		t.mu.unflushed = map[uint64][2]int64{}
	}
	t.mu.seq++
	t.mu.unflushed[t.mu.seq] = [2]int64{off, n}
	t.mu.Unlock()
}

// redial replaces connection gen, which broke with cause, unless another
// request did already.
func (t *nbdTarget) redial(gen uint64, cause error) error {
	t.dialMu.Lock()
	defer t.dialMu.Unlock()
	t.mu.Lock()
	if gen != t.mu.gen {
		t.mu.Unlock()
		return nil // dialled again meanwhile
	}
	old := t.mu.c
	if t.mu.down.IsZero() {
		t.mu.down = time.Now()
	}
	down := t.mu.down
	t.mu.Unlock()
	if old != nil {
		old.Close()
		t.log.Warn("the recovery target's connection broke; dialling it again", "target", t.uri, "err", cause, "for", t.retryFor)
	}
	wait := time.Second
	for {
		ctx, cancel := context.WithTimeout(t.stop, 30*time.Second)
		c, err := t.dial(ctx, t.uri)
		cancel()
		if err == nil && c.Size() < t.size {
			c.Close()
			err = fmt.Errorf("target %s has %d bytes now, %d before", t.uri, c.Size(), t.size)
		}
		if err == nil && t.stop.Err() != nil {
			c.Close()
			err = t.stop.Err()
		}
		if err == nil {
			t.mu.Lock()
			t.mu.c, t.mu.gen, t.mu.down = c, t.mu.gen+1, time.Time{}
			unflushed, lost := t.mu.unflushed, t.mu.lost
			t.mu.unflushed = nil
			t.mu.Unlock()
			for _, r := range unflushed {
				lost(r[0], r[1])
			}
			t.log.Info("the recovery target answers again; the writes it had not flushed are copied again", "target", t.uri, "writes", len(unflushed))
			return nil
		}
		if time.Since(down) >= t.retryFor || t.stop.Err() != nil {
			return fmt.Errorf("target %s out of reach for %s: %w (last: %v)", t.uri, time.Since(down).Round(time.Second), cause, err)
		}
		select {
		case <-time.After(wait):
		case <-t.stop.Done():
		}
		wait = min(2*wait, 10*time.Second)
	}
}

func (t *nbdTarget) ReadAt(p []byte, off int64) (int, error) {
	var n int
	err := t.do(func(c *client.Conn, _ uint64) error {
		var err error
		n, err = c.ReadAt(p, off)
		return err
	}, false, 0, 0)
	return n, err
}

func (t *nbdTarget) WriteAt(p []byte, off int64) (int, error) {
	err := t.do(func(c *client.Conn, _ uint64) error {
		_, err := c.WriteAt(p, off)
		return err
	}, true, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (t *nbdTarget) Size() int64 { return t.size }

// Close ends the connection and any dialling.
func (t *nbdTarget) Close() error {
	t.interrupt()
	t.dialMu.Lock() // a dial under way ends: it sees stop
	defer t.dialMu.Unlock()
	if c, _ := t.conn(); c != nil {
		return c.Close()
	}
	return nil
}

// deadTarget is a cut-over target that could not be opened again after
// a restart: the export fails every request rather than serve the clone,
// which the target's later writes left behind.
type deadTarget struct {
	err  error
	size int64
}

func (d deadTarget) ReadAt([]byte, int64) (int, error)  { return 0, d.err }
func (d deadTarget) WriteAt([]byte, int64) (int, error) { return 0, d.err }
func (d deadTarget) WriteZeroes(int64, int64) error     { return d.err }
func (d deadTarget) Flush() error                       { return d.err }
func (d deadTarget) Size() int64                        { return d.size }
func (d deadTarget) Close() error                       { return nil }

// WriteZeroes uses WRITE_ZEROES when the server has it, else writes
// zeroes.
func (t *nbdTarget) WriteZeroes(off, n int64) error {
	return t.do(func(c *client.Conn, _ uint64) error {
		if c.Info().CanWriteZeroes() {
			return c.WriteZeroes(off, n, false)
		}
		buf := make([]byte, min(n, 1<<20))
		for o, left := off, n; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := c.WriteAt(buf[:k], o); err != nil {
				return err
			}
			o, left = o+k, left-k
		}
		return nil
	}, true, off, n)
}

// Flush sends FLUSH when the server has it (a server without it writes
// through); the writes noted before it are durable once it succeeds. A
// Flush during which the connection was replaced fails: what the copy
// saved as copied before it may have been lost with the old connection
// (those writes are copied again; the next save records that).
func (t *nbdTarget) Flush() error {
	t.mu.Lock()
	upTo, gen0, pending := t.mu.seq, t.mu.gen, t.mu.c == nil
	t.mu.Unlock()
	if pending {
		return nil // never connected: nothing was written through it
	}
	var gen uint64
	err := t.do(func(c *client.Conn, g uint64) error {
		gen = g
		if c.Info().CanFlush() {
			return c.Flush()
		}
		return nil
	}, false, 0, 0)
	if err != nil {
		return err
	}
	if gen != gen0 {
		return fmt.Errorf("target %s: its connection was replaced during a flush; the writes it had not flushed are copied again", t.uri)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.mu.gen {
		for k := range t.mu.unflushed {
			if k <= upTo {
				delete(t.mu.unflushed, k)
			}
		}
	}
	return nil
}
