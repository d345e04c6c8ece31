package remote

import (
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
type Lease struct {
	c    conn
	doc  leaseDoc
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	lost error
}

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
	cur, err := l.read()
	if err != nil {
		return nil, err
	}
	if cur != nil && cur.Holder != holder && time.Now().Before(cur.Expires) && !takeOver {
		return nil, fmt.Errorf("%w: %s is written by the data directory %s on %s (pid %d) until %s; a second writer is refused: use that one, open this one with --read-only, or, if that machine is gone, wait for the lease to lapse or pass --take-over",
			ErrLeaseHeld, b, cur.Data, cur.Host, cur.PID, cur.Expires.UTC().Format(time.RFC3339))
	}
	if cur != nil && cur.Holder != holder && takeOver {
		log.Warn("taking the store over from its writer", "data", cur.Data, "host", cur.Host, "pid", cur.PID)
	}
	if err := l.write(); err != nil {
		return nil, err
	}
	go l.renew(onLost)
	return l, nil
}

func (l *Lease) read() (*leaseDoc, error) {
	b, err := l.c.get(leaseName, 0, -1)
	if errors.Is(err, objstore.ErrNotExist) {
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

func (l *Lease) write() error {
	l.doc.Expires = time.Now().Add(LeaseTTL)
	b, _ := json.Marshal(l.doc)
	if err := l.c.put(leaseName, b); err != nil {
		return fmt.Errorf("write the store's lease: %w", err)
	}
	return nil
}

func (l *Lease) renew(onLost func(error)) {
	defer close(l.done)
	t := time.NewTicker(LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		cur, err := l.read()
		if err == nil && cur != nil && cur.Holder != l.doc.Holder {
			err = fmt.Errorf("%w: the data directory %s on %s took the store over", ErrLeaseHeld, cur.Data, cur.Host)
			l.mu.Lock()
			l.lost = err
			l.mu.Unlock()
			if onLost != nil {
				onLost(err)
			}
			return
		}
		if err == nil {
			err = l.write()
		}
		if err != nil {
			l.c.log.Warn("the store's lease could not be renewed", "err", err)
		}
	}
}

// Release stops renewing and deletes the lease, unless it was lost.
func (l *Lease) Release() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost != nil {
		return nil
	}
	return l.c.del(leaseName)
}
