package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// Stats count this process's traffic with object stores.
var Stats struct {
	UploadedBytes, DownloadedBytes, Requests, Retries atomic.Int64
}

// DefaultRetryFor is how long a failing upload or download is retried.
const DefaultRetryFor = 2 * time.Minute

// stopBy, once set (StopRetryingBy), is when this process stops
// retrying calls that fail: Unix nanoseconds, 0 for never.
var stopBy atomic.Int64

// stopCtx is cancelled at stopBy: calls in flight then end too.
var stopCtx, stopCancel = context.WithCancel(context.Background())

// StopRetryingBy makes every object store call of this process end by t
// at the latest, however long it would retry otherwise: calls in flight
// are cut off then, and failing ones are not tried again. A daemon that
// is stopping calls it: with the object store unreachable, its last
// uploads would otherwise be retried for minutes each, and what they
// leave undone is uploaded at the next open (a sealed pack stays in DATA)
// or reported as the stop's error.
func StopRetryingBy(t time.Time) {
	stopBy.Store(t.UnixNano())
	time.AfterFunc(time.Until(t), stopCancel)
}

// stopping reports whether StopRetryingBy's time has passed.
func stopping(now time.Time) bool {
	by := stopBy.Load()
	return by != 0 && now.UnixNano() >= by
}

// conn is what both layers share: the backend, and how to call it.
type conn struct {
	b        objstore.Backend
	log      *slog.Logger
	retryFor time.Duration
	readOnly bool
	fenced   *atomic.Pointer[error] // set once another writer took the store
	// lease, when not nil, bounds every upload and delete: none starts
	// while the process does not count on it, and each request is cut
	// off when it stops counting on it (see Lease).
	lease *Lease
}

func newConn(b objstore.Backend, log *slog.Logger, retryFor time.Duration, readOnly bool) conn {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if retryFor <= 0 {
		retryFor = DefaultRetryFor
	}
	return conn{b: b, log: log, retryFor: retryFor, readOnly: readOnly, fenced: new(atomic.Pointer[error])}
}

// withLease returns c with uploads and deletes bounded by l.
func (c conn) withLease(l *Lease) conn {
	c.lease = l
	return c
}

// leased runs fn, an upload or a delete, with a context that the lease
// cancels when this process stops counting on it; it returns why it may
// not write instead, now or once cut off: ErrLeaseLapsed (retried) or
// ErrLeaseHeld (not).
func (c conn) leased(ctx context.Context, fn func(context.Context) error) error {
	if c.lease == nil {
		return fn(ctx)
	}
	lc, err := c.lease.Context()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(lc, cancel)()
	err = fn(ctx)
	if lc.Err() != nil {
		return fmt.Errorf("cut off: %w", context.Cause(lc))
	}
	return err
}

// permanent reports whether retrying err cannot help.
func permanent(err error) bool {
	return errors.Is(err, objstore.ErrNotExist) || errors.Is(err, objstore.ErrReadOnly) || errors.Is(err, ErrLeaseHeld) ||
		errors.Is(err, objstore.ErrCredentials) || errors.Is(err, context.Canceled) ||
		errors.Is(err, objstore.ErrChanged) || errors.Is(err, objstore.ErrNoSwap)
}

// retry calls fn until it succeeds, fails for good, or c.retryFor has
// passed since the first failure, backing off from 100 ms to 5 s.
func (c conn) retry(what string, fn func(ctx context.Context) error) error {
	var deadline time.Time
	var last error
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		Stats.Requests.Add(1)
		if attempt > 0 {
			Stats.Retries.Add(1)
		}
		err := fn(stopCtx)
		if err == nil {
			switch {
			case errors.Is(last, ErrLeaseLapsed):
				c.log.Info("the store's lease is held: uploads go on", "op", what, "attempts", attempt+1)
			case attempt > 0:
				c.log.Info("the object store answers again", "op", what, "attempts", attempt+1)
			}
			return nil
		}
		last = err
		if permanent(err) {
			return err
		}
		if attempt == 0 {
			deadline = time.Now().Add(c.retryFor)
			if errors.Is(err, ErrLeaseLapsed) {
				c.log.Info("waiting for the store's lease", "op", what, "for", c.retryFor, "why", err)
			} else {
				c.log.Warn("object store call failed; retrying", "op", what, "for", c.retryFor, "err", err)
			}
		}
		if now := time.Now(); stopping(now) {
			if errors.Is(err, objstore.ErrUnreachable) {
				return fmt.Errorf("%s: gave up, the process is stopping: %w", what, err)
			}
			return fmt.Errorf("%s: gave up, the process is stopping: %w: %w", what, objstore.ErrUnreachable, err)
		} else if now.After(deadline) {
			if errors.Is(err, objstore.ErrUnreachable) {
				return fmt.Errorf("%s: gave up after %s: %w", what, c.retryFor, err)
			}
			return fmt.Errorf("%s: gave up after %s: %w: %w", what, c.retryFor, objstore.ErrUnreachable, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 5*time.Second)
	}
}

// writable returns why this process may not write, or nil.
func (c conn) writable(op, name string) error {
	if c.readOnly {
		return fmt.Errorf("%s %s: %w", op, name, objstore.ErrReadOnly)
	}
	if err := c.fenced.Load(); err != nil {
		return fmt.Errorf("%s %s: %w", op, name, *err)
	}
	return nil
}

func (c conn) put(name string, b []byte) error {
	if err := c.writable("put", name); err != nil {
		return err
	}
	err := c.retry("put "+name, func(ctx context.Context) error {
		return c.leased(ctx, func(ctx context.Context) error {
			return c.b.Put(ctx, name, objstore.NewBytesReader(b), int64(len(b)))
		})
	})
	if err == nil {
		Stats.UploadedBytes.Add(int64(len(b)))
	}
	return err
}

func (c conn) get(name string, off, n int64) ([]byte, error) {
	var out []byte
	err := c.retry("get "+name, func(ctx context.Context) error {
		var err error
		out, err = c.b.GetRange(ctx, name, off, n)
		return err
	})
	Stats.DownloadedBytes.Add(int64(len(out)))
	return out, err
}

func (c conn) del(name string) error {
	if err := c.writable("delete", name); err != nil {
		return err
	}
	return c.retry("delete "+name, func(ctx context.Context) error {
		return c.leased(ctx, func(ctx context.Context) error { return c.b.Delete(ctx, name) })
	})
}

func (c conn) list(prefix string) ([]objstore.Object, error) {
	var out []objstore.Object
	err := c.retry("list "+prefix, func(ctx context.Context) error {
		out = out[:0]
		return c.b.List(ctx, prefix, func(o objstore.Object) error {
			out = append(out, o)
			return nil
		})
	})
	return out, err
}

// segName names the segment of file base at off under prefix.
func segName(prefix, base string, off int64) string {
	return fmt.Sprintf("%s/%s/%016x", prefix, base, off)
}

// parseSeg splits a segment's name (below its prefix and "/").
func parseSeg(rel string) (base string, off int64, ok bool) {
	i := strings.LastIndexByte(rel, '/')
	if i <= 0 || len(rel)-i-1 != 16 {
		return "", 0, false
	}
	v, err := strconv.ParseUint(rel[i+1:], 16, 63)
	if err != nil {
		return "", 0, false
	}
	return rel[:i], int64(v), true
}

// seg is one segment object of a file.
type seg struct{ off, size int64 }

func (s seg) end() int64 { return s.off + s.size }
