package protect

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/timeline"
)

// ErrEnded is what I/O on a Disk returns once its protection ended
// (unprotect, or the daemon stops). It matches syscall.ESHUTDOWN.
var ErrEnded = fmt.Errorf("protection ended: %w", syscall.ESHUTDOWN)

// Disk is what a protection's export and FUSE image serve: reads from
// the primary; each write recorded in the volume's timeline first, then
// written to the primary, both before it is acknowledged. One Disk is
// shared by every connection and image of the volume. Its methods are
// safe for concurrent use.
type Disk struct {
	view *timeline.View // the protected volume's writable head
	p    *primary
	size int64
	bs   int64
	// ranges orders writes that touch the same blocks: the timeline and
	// the primary see them in the same order.
	ranges rangeLock
	// diverged is set when a write reached the timeline but not the
	// primary and could not be undone: the next start compares them.
	diverged atomic.Bool
	// primarySync runs the primary's fdatasync for concurrent FLUSHes.
	primarySync syncer
	// rec records the writes in the timeline, small ones behind their
	// replies.
	rec *recorder
	// intent marks where writes are in progress or not flushed, for the
	// comparison after an unclean stop; nil for none.
	intent *intentLog
	stats  counters
	// between, when set (by tests), runs between a request's two sides:
	// after its recording and before the primary's write, or after the
	// primary's write of a small write and before it is queued.
	between func()
	mu      sync.RWMutex // I/O holds it shared; close exclusively
	closed  bool
}

// counters are what the Disk did since the daemon started serving it.
type counters struct {
	writes, written, flushes, errors atomic.Int64
}

var (
	_ nbd.Backend    = (*Disk)(nil)
	_ nbd.FastZeroer = (*Disk)(nil)
)

// Size is the volume's size.
func (d *Disk) Size() int64 { return d.size }

// BlockSize is the volume's block size.
func (d *Disk) BlockSize() int64 { return d.bs }

// begin takes the Disk for one request; end is deferred.
func (d *Disk) begin() error {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ErrEnded
	}
	return nil
}

func (d *Disk) end() { d.mu.RUnlock() }

func (d *Disk) check(off, n int64) error {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return timeline.ErrNoSpace
	}
	return nil
}

// ReadAt reads the primary.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if err := d.begin(); err != nil {
		return 0, err
	}
	defer d.end()
	if off < 0 || off > d.size {
		return 0, timeline.ErrOutOfRange
	}
	var tail error
	if int64(len(p)) > d.size-off {
		p, tail = p[:d.size-off], io.EOF
	}
	n, err := d.p.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) && n == len(p) {
		err = nil
	}
	if err != nil {
		return n, err
	}
	return n, tail
}

// WriteAt writes p to the primary and records it in the timeline. A
// small write (part of one block) is recorded behind its reply, in
// order, at the time it arrived (see recorder); any other is recorded
// first, then written to the primary, both before the reply. A write the
// timeline cannot take (a full disk, a failed store) is an error and
// never reaches the primary.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.begin(); err != nil {
		return 0, err
	}
	defer d.end()
	n := int64(len(p))
	if err := d.check(off, n); err != nil {
		return 0, err
	}
	unlock := d.ranges.lock(d.blocks(off, n))
	defer unlock()
	if err := d.beginIntent(off, n); err != nil {
		return 0, err
	}
	defer d.endIntent(off, n)
	if d.rec.small(off, n) {
		return d.writeBehind(p, off)
	}
	release, err := d.rec.exclusive()
	if err != nil {
		d.stats.errors.Add(1)
		return 0, fmt.Errorf("record the write in the timeline: %w", err)
	}
	defer release()
	if _, err := d.view.WriteAt(p, off); err != nil {
		d.stats.errors.Add(1)
		return 0, fmt.Errorf("record the write in the timeline: %w", err)
	}
	if d.between != nil {
		d.between()
	}
	if _, err := d.p.f.WriteAt(p, off); err != nil {
		d.primaryFailed(off, n)
		return 0, fmt.Errorf("write primary %s: %w", d.p.path, err)
	}
	d.stats.writes.Add(1)
	d.stats.written.Add(n)
	return len(p), nil
}

// writeBehind writes a small write to the primary and queues it to be
// recorded (the caller holds its range lock and intent). When the
// primary refuses it, what the primary holds there is queued instead,
// so that the timeline's newest version still equals the primary.
func (d *Disk) writeBehind(p []byte, off int64) (int, error) {
	n := int64(len(p))
	if err := d.rec.admit(n); err != nil {
		d.stats.errors.Add(1)
		return 0, fmt.Errorf("record the write in the timeline: %w", err)
	}
	if _, err := d.p.f.WriteAt(p, off); err != nil {
		d.stats.errors.Add(1)
		held := make([]byte, n)
		if _, rerr := d.p.f.ReadAt(held, off); rerr != nil && !errors.Is(rerr, io.EOF) {
			d.rec.cancel()
			d.diverge()
		} else {
			d.rec.enqueue(held, off)
		}
		return 0, fmt.Errorf("write primary %s: %w", d.p.path, err)
	}
	if d.between != nil {
		d.between()
	}
	d.rec.enqueue(p, off)
	d.stats.writes.Add(1)
	d.stats.written.Add(n)
	return len(p), nil
}

// WriteZeroes and Trim record holes in the timeline, then zero the
// primary (a punched hole where it can): both read as zeroes after.
func (d *Disk) WriteZeroes(off, n int64) error { return d.zero(off, n, d.view.WriteZeroes) }

// Trim: the timeline keeps a hole, so the primary must read as zeroes too.
func (d *Disk) Trim(off, n int64) error { return d.zero(off, n, d.view.Trim) }

func (d *Disk) zero(off, n int64, record func(off, n int64) error) error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.end()
	if err := d.check(off, n); err != nil {
		return err
	}
	unlock := d.ranges.lock(d.blocks(off, n))
	defer unlock()
	if err := d.beginIntent(off, n); err != nil {
		return err
	}
	defer d.endIntent(off, n)
	release, err := d.rec.exclusive()
	if err != nil {
		d.stats.errors.Add(1)
		return fmt.Errorf("record the zeroing in the timeline: %w", err)
	}
	defer release()
	if err := record(off, n); err != nil {
		d.stats.errors.Add(1)
		return fmt.Errorf("record the zeroing in the timeline: %w", err)
	}
	if d.between != nil {
		d.between()
	}
	if err := d.p.zero(off, n); err != nil {
		d.primaryFailed(off, n)
		return err
	}
	d.stats.writes.Add(1)
	d.stats.written.Add(n)
	return nil
}

// primaryFailed handles a write the timeline recorded but the primary
// refused: the timeline records again what the primary holds there, so
// that its newest version still equals the primary; if even that fails,
// the next start compares the two.
func (d *Disk) primaryFailed(off, n int64) {
	d.stats.errors.Add(1)
	buf := make([]byte, n)
	if _, err := d.p.f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		d.diverge()
		return
	}
	if _, err := d.view.WriteAt(buf, off); err != nil {
		d.diverge()
	}
}

// diverge notes that the timeline and the primary may differ where a
// write failed: the next start compares all of them.
func (d *Disk) diverge() {
	d.diverged.Store(true)
	if d.intent != nil {
		d.intent.markAll() // failing too, the record is not clean either
	}
}

func (d *Disk) beginIntent(off, n int64) error {
	if d.intent == nil {
		return nil
	}
	if err := d.intent.begin(off, n); err != nil {
		d.stats.errors.Add(1)
		return err
	}
	return nil
}

func (d *Disk) endIntent(off, n int64) {
	if d.intent != nil {
		d.intent.end(off, n)
	}
}

// Settle returns once every write acknowledged so far is in the
// timeline (not necessarily durable): what reads the volume's history
// counts on it.
func (d *Disk) Settle() error {
	if err := d.begin(); err != nil {
		return nil // ended: closing recorded all it could
	}
	defer d.end()
	return d.rec.settle()
}

// Flush makes every acknowledged write durable in the timeline and on
// the primary.
func (d *Disk) Flush() error {
	if err := d.begin(); err != nil {
		return err
	}
	defer d.end()
	return d.flush()
}

// flush makes every acknowledged write durable in both.
func (d *Disk) flush() error {
	d.stats.flushes.Add(1)
	var at uint64
	if d.intent != nil {
		at = d.intent.flushStart()
	}
	if err := d.rec.settle(); err != nil {
		d.stats.errors.Add(1)
		return fmt.Errorf("flush the timeline: %w", err)
	}
	err := d.sync()
	if err != nil {
		d.stats.errors.Add(1)
		return err
	}
	if d.intent != nil {
		d.intent.flushed(at)
	}
	return nil
}

// sync syncs the timeline and the primary at the same time: both must
// be done before the reply, and neither needs the other first (a crash
// during a flush leaves writes that were not flushed, which the next
// start reconciles). The primary's data is synced with fdatasync, as
// nbdkit and qemu do: it writes the metadata that reading the data back
// needs (allocation, size), not timestamps.
func (d *Disk) sync() error {
	primary := make(chan error, 1)
	go func() { primary <- d.primarySync.sync(func() error { return unix.Fdatasync(int(d.p.f.Fd())) }) }()
	var errs []error
	if err := d.view.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("flush the timeline: %w", err))
	}
	if err := <-primary; err != nil {
		errs = append(errs, fmt.Errorf("flush primary %s: %w", d.p.path, err))
	}
	return errors.Join(errs...)
}

// Extents reports the primary's holes for a file (SEEK_HOLE), all data
// for a device.
func (d *Disk) Extents(off, n int64) ([]nbd.Extent, error) {
	if err := d.begin(); err != nil {
		return nil, err
	}
	defer d.end()
	if err := d.check(off, n); err != nil {
		return nil, err
	}
	data, ok := d.p.dataRanges(off, n)
	if !ok {
		return []nbd.Extent{{Offset: off, Length: n}}, nil
	}
	var out []nbd.Extent
	at := off
	for _, r := range data {
		if r[0] > at {
			out = append(out, nbd.Extent{Offset: at, Length: r[0] - at, Hole: true})
		}
		out = append(out, nbd.Extent{Offset: r[0], Length: r[1] - r[0]})
		at = r[1]
	}
	if at < off+n {
		out = append(out, nbd.Extent{Offset: at, Length: off + n - at, Hole: true})
	}
	return out, nil
}

// FastZero: whole blocks are holes in the timeline and punched holes in
// a file primary.
func (d *Disk) FastZero(off, n int64) bool {
	return d.p.kind == KindFile && off%d.bs == 0 && n%d.bs == 0
}

// blocks returns the block range [b0, b1) that [off, off+n) touches.
func (d *Disk) blocks(off, n int64) (int64, int64) {
	return off / d.bs, (off + max(n, 1) + d.bs - 1) / d.bs
}

// close ends I/O once requests in progress finish, makes what was
// acknowledged durable, and closes the view (the primary is the
// Manager's).
func (d *Disk) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.flush()
	d.rec.close()
	return errors.Join(err, d.view.Close())
}

// Image is the Disk as a FUSE image; closing it leaves the Disk served.
type Image struct {
	*Disk
	Release func()
	once    sync.Once
}

func (i *Image) Close() error {
	if i.Release != nil {
		i.once.Do(i.Release)
	}
	return nil
}

// rangeLock serialises requests whose block ranges overlap.
type rangeLock struct {
	mu   sync.Mutex
	cond *sync.Cond
	held [][2]int64
}

func (l *rangeLock) lock(b0, b1 int64) func() {
	l.mu.Lock()
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
	}
	for l.overlaps(b0, b1) {
		l.cond.Wait()
	}
	r := [2]int64{b0, b1}
	l.held = append(l.held, r)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		for i, h := range l.held {
			if h == r {
				l.held = append(l.held[:i], l.held[i+1:]...)
				break
			}
		}
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

func (l *rangeLock) overlaps(b0, b1 int64) bool {
	for _, h := range l.held {
		if b0 < h[1] && h[0] < b1 {
			return true
		}
	}
	return false
}
