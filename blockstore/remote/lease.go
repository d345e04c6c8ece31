package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

const leaseName = "lease"

// LeaseTTL is how long a writer's lease lasts unless renewed; it is
// renewed every third of it.
var LeaseTTL = 30 * time.Second

// ErrLeaseHeld is returned (wrapped) when another writer holds the
// repository.
var ErrLeaseHeld = errors.New("the store has another writer")

// Lease is a writer's claim on a repository: one writer at a time, so
// that two never number packs alike. Readers take none.
//
// A writer may lose it without hearing so: its renewals fail (the object
// store is out of reach, the machine was paused) until the lease expires
// and another directory takes the store. So a writer counts on its lease
// only until LeaseTTL less leaseMargin after the start of its last
// renewal that succeeded: past that, no upload starts (Context), and
// those under way are cut off, so that none lands once another writer
// may hold the store. A writer that claims the lease over another's
// (--take-over), or renews its own after it lapsed (it may have just
// overwritten a taker's), counts on it only after settleTime, reading
// the lease meanwhile: a writer it displaced reads it within a round,
// and its last request is cut off by then; if the other holds the lease
// meanwhile, this one has lost it.
type Lease struct {
	c    conn
	doc  leaseDoc
	stop chan struct{}
	done chan struct{}

	// swap, when the object store takes conditional writes, writes the
	// lease only over the one read (tag; "" for none), so that of two
	// writers that read the same lease, one writes it.
	swap objstore.Swapper
	tag  string

	mu   sync.Mutex
	lost error
	// until is when this process stops counting on the lease (monotonic);
	// settleAt, when not zero, is when it may count on it again (see
	// Lease). ctx is cancelled when it stops counting on it (timer).
	until, settleAt time.Time
	ctx             context.Context
	cancel          context.CancelCauseFunc
	timer           *time.Timer
}

// ErrLeaseLapsed is returned (wrapped) for an upload while this process
// does not count on its lease (see Lease); it may again once renewed.
var ErrLeaseLapsed = errors.New("the store's lease is not held at the moment")

// leaseMargin is how long before its lease expires, by the clock of the
// process that wrote it, a writer stops: clocks of two machines disagree
// a little.
func leaseMargin() time.Duration { return LeaseTTL / 6 }

// settleTime: see Lease. The last request of a writer displaced at once
// is cut off LeaseTTL-leaseMargin after it.
func settleTime() time.Duration { return LeaseTTL - leaseMargin() + LeaseTTL/30 }

type leaseDoc struct {
	Holder  string    `json:"holder"` // the data directory's id
	Data    string    `json:"data"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Expires time.Time `json:"expires"`
}

// AcquireLease claims the repository for the data directory whose id is
// holder. A lease of another holder that has not expired is refused
// unless takeOver; onLost is called if the lease is taken from this
// process later.
func AcquireLease(b objstore.Backend, holder, dataDir string, takeOver bool, log *slog.Logger, onLost func(error)) (*Lease, error) {
	c := newConn(b, log, 30*time.Second, false)
	host, _ := os.Hostname()
	l := &Lease{c: c, doc: leaseDoc{Holder: holder, Data: dataDir, Host: host, PID: os.Getpid()}, stop: make(chan struct{}), done: make(chan struct{})}
	l.swap, _ = b.(objstore.Swapper)
	var forced bool
	var start time.Time
	for attempt := 0; ; attempt++ {
		cur, err := l.read()
		if err != nil {
			return nil, err
		}
		if cur != nil && cur.Holder != holder && time.Now().Before(cur.Expires) && !takeOver {
			return nil, fmt.Errorf("%w: %s is written by the data directory %s on %s (pid %d) until %s; a second writer is refused: use that one, open this one with --read-only, or, if that machine is gone, wait for the lease to lapse or pass --take-over",
				ErrLeaseHeld, b, cur.Data, cur.Host, cur.PID, cur.Expires.UTC().Format(time.RFC3339))
		}
		forced = cur != nil && cur.Holder != holder && time.Now().Before(cur.Expires)
		start, err = l.write()
		if errors.Is(err, objstore.ErrChanged) && attempt < 2 {
			continue // written since it was read: read it again
		}
		if errors.Is(err, objstore.ErrChanged) {
			return nil, fmt.Errorf("%w: %s: another data directory claims it at this moment", ErrLeaseHeld, b)
		}
		if err != nil {
			return nil, err
		}
		if forced {
			log.Warn("taking the store over from its writer: uploads wait until it has surely stopped", "data", cur.Data, "host", cur.Host, "pid", cur.PID, "for", settleTime())
		}
		break
	}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.cancel(ErrLeaseLapsed)
	l.mu.Lock()
	if forced {
		l.settleAt = start.Add(settleTime())
	} else {
		l.countLocked(start)
	}
	l.mu.Unlock()
	go l.renew(onLost)
	return l, nil
}

// Context returns a context that is cancelled when this process stops
// counting on its lease, for an upload; or, when it does not count on
// it now, why: ErrLeaseHeld (wrapped) once another writer took the
// store, ErrLeaseLapsed (wrapped) while the lease is not renewed or
// settles (see Lease).
func (l *Lease) Context() (context.Context, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return nil, l.lost
	}
	if !l.settleAt.IsZero() {
		return nil, fmt.Errorf("%w: it was claimed from another writer, and uploads wait %s for that one to stop", ErrLeaseLapsed, settleTime().Round(time.Second))
	}
	if l.ctx.Err() != nil || !time.Now().Before(l.until) {
		return nil, fmt.Errorf("%w: not renewed for %s (is the object store reachable?)", ErrLeaseLapsed, (LeaseTTL - leaseMargin()).Round(time.Second))
	}
	return l.ctx, nil
}

// countLocked counts on the lease until LeaseTTL-leaseMargin after start,
// the start of a write of it.
func (l *Lease) countLocked(start time.Time) {
	l.settleAt = time.Time{}
	l.until = start.Add(LeaseTTL - leaseMargin())
	if l.ctx.Err() != nil {
		l.ctx, l.cancel = context.WithCancelCause(context.Background())
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	ctx, cancel := l.ctx, l.cancel
	l.timer = time.AfterFunc(time.Until(l.until), func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.ctx == ctx && !time.Now().Before(l.until) {
			cancel(ErrLeaseLapsed)
		}
	})
}

func (l *Lease) read() (*leaseDoc, error) {
	var b []byte
	var err error
	if l.swap != nil {
		err = l.c.retry("get "+leaseName, func(ctx context.Context) error {
			var err error
			b, l.tag, err = l.swap.GetTagged(ctx, leaseName)
			return err
		})
	} else {
		b, err = l.c.get(leaseName, 0, -1)
	}
	if errors.Is(err, objstore.ErrNotExist) {
		l.tag = ""
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the store's lease: %w", err)
	}
	var d leaseDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil // a torn or foreign lease is no lease
	}
	return &d, nil
}

// write writes the lease; it returns when the write started, which is
// what the lease's expiry counts from.
func (l *Lease) write() (time.Time, error) {
	start := time.Now()
	l.doc.Expires = start.Add(LeaseTTL)
	b, _ := json.Marshal(l.doc)
	if l.swap != nil {
		err := l.c.retry("put "+leaseName, func(ctx context.Context) error {
			tag, err := l.swap.PutIf(ctx, leaseName, objstore.NewBytesReader(b), int64(len(b)), l.tag)
			if err == nil {
				l.tag = tag
			}
			return err
		})
		if !errors.Is(err, objstore.ErrNoSwap) {
			if err != nil {
				return time.Time{}, fmt.Errorf("write the store's lease: %w", err)
			}
			return start, nil
		}
		l.c.log.Warn("the object store takes no conditional writes: the lease rests on time alone", "err", err)
		l.swap = nil
	}
	if err := l.c.put(leaseName, b); err != nil {
		return time.Time{}, fmt.Errorf("write the store's lease: %w", err)
	}
	return start, nil
}

func (l *Lease) renew(onLost func(error)) {
	defer close(l.done)
	for {
		wait := LeaseTTL / 3
		l.mu.Lock()
		if !l.settleAt.IsZero() {
			wait = max(0, min(wait, time.Until(l.settleAt)))
		}
		l.mu.Unlock()
		select {
		case <-l.stop:
			return
		case <-time.After(wait):
		}
		cur, err := l.read()
		if err == nil && cur != nil && cur.Holder != l.doc.Holder {
			err = fmt.Errorf("%w: the data directory %s on %s took the store over", ErrLeaseHeld, cur.Data, cur.Host)
			l.mu.Lock()
			l.lost = err
			l.cancel(err)
			l.mu.Unlock()
			if onLost != nil {
				onLost(err)
			}
			return
		}
		if err == nil {
			l.mu.Lock()
			lapsed := l.settleAt.IsZero() && !time.Now().Before(l.until)
			l.mu.Unlock()
			var start time.Time
			if start, err = l.write(); err == nil {
				l.renewed(start, lapsed)
			}
		}
		switch {
		case errors.Is(err, objstore.ErrChanged):
			l.c.log.Info("the store's lease was written by another between its read and its renewal; reading it again", "err", err)
		case err != nil:
			l.c.log.Warn("the store's lease could not be renewed", "err", err)
		}
	}
}

// renewed counts on the lease again after a renewal that started at
// start, unless it had lapsed or settles (see Lease).
func (l *Lease) renewed(start time.Time, lapsed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case lapsed:
		l.c.log.Warn("the store's lease is renewed after it lapsed: uploads wait until another writer that took it meanwhile has surely stopped", "for", settleTime())
		l.settleAt = start.Add(settleTime())
	case !l.settleAt.IsZero() && start.Before(l.settleAt):
	default:
		l.countLocked(start)
	}
}

// Release stops renewing and deletes the lease, unless it was lost or
// another holds it now.
func (l *Lease) Release() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	lost := l.lost
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	if lost != nil {
		return nil
	}
	// Not another's that this one has not read yet.
	if cur, err := l.read(); err != nil || cur == nil || cur.Holder != l.doc.Holder {
		return err
	}
	return l.c.del(leaseName)
}
