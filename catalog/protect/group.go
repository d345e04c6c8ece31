package protect

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rewind-dev/rewind/timeline"
)

// recorder records a Disk's writes in its timeline.
//
// A small write (part of one block: a guest's page or a database's) is
// recorded behind its reply: its goroutine writes the primary, copies its
// bytes (hashing and compressing them too when the queue is long: see
// prepareBacklog), takes its time from the timeline's clock
// (timeline.View.Stamp) and queues it; one goroutine records the
// queue in order, as many writes at a time as it holds (up to
// maxGroup), in one timeline.View.WriteMany: one pack write and one
// Pebble commit for all of them, each still its own version at the time
// it arrived. At a high queue depth that costs a write about a third
// less of the daemon's CPU than recording it before its reply, and no
// goroutine waits for another's recording.
//
// Every other request (a write of a whole block or more, zeroes, a trim)
// is recorded before its reply, as before, once the queue is recorded;
// small writes wait meanwhile (exclusive), so that the timeline's
// versions come in the order of their times. A FLUSH, and anything that
// reads the volume's history (settle), waits for the writes queued
// before it.
//
// The store refusing writes (a full disk: timeline.ErrUnwritable) stops
// the queue, not the writes in it: they are tried again every
// stallRetry and recorded, at their own times, once there is space;
// meanwhile every new write, flush and read of the history is an error.
// Any other failure to record ends the recording for good: the writes in
// the queue, which the primary holds, are not in the timeline, failed is
// called (the Disk marks its write-intent bitmap whole, so the next start
// compares the primary with the timeline and records the difference),
// and every later request is an error.
type recorder struct {
	view  *timeline.View
	bs    int64
	retry time.Duration // stallRetry when it was made
	// failed is called once, when the recording failed for good.
	failed func(error)
	// beforeRecord, when set (by tests), runs before each recording of
	// the queue; record, when set (by tests), records it instead of the
	// view's WriteMany.
	beforeRecord func()
	record       func([]timeline.Write) error

	mu          sync.Mutex
	cond        *sync.Cond // broadcast on every change below
	queue       []queued
	queuedBytes int64
	enq, done   uint64 // writes queued, and recorded (or given up), so far
	admitted    int    // small writes between admit and enqueue or cancel
	inline      int    // requests being recorded before their reply
	waiting     int    // requests waiting to be recorded before their reply
	err         error  // the recording failed for good
	stalled     error  // the store refuses writes; the queue waits for space
	attempts    uint64 // recordings of the queue tried so far
	closing     bool
	running     bool // the recording goroutine
	// grouped counts the writes recorded with others.
	grouped atomic.Int64
	// backlog is len(queue), read without mu.
	backlog atomic.Int64
}

type queued struct {
	w   timeline.Write
	buf *[]byte
}

// maxGroup bounds the writes recorded together; maxQueuedBytes the bytes
// of the writes queued (a write waits for room).
const (
	maxGroup       = 512
	maxQueuedBytes = 64 << 20
)

// prepareBacklog is the queue from which a small write is hashed and
// compressed by its own goroutine rather than the recording one: at
// queue depth 1 that work is off the reply's path, at a high depth it
// runs on every core.
const prepareBacklog = 4

// stallRetry is how often a queue that the store refused is tried again
// (tests change it before they protect).
var stallRetry = 100 * time.Millisecond

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func newRecorder(view *timeline.View, bs int64, failed func(error)) *recorder {
	r := &recorder{view: view, bs: bs, retry: stallRetry, failed: failed}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// small reports whether a write of n bytes at off is recorded behind its
// reply: part of one block.
func (r *recorder) small(off, n int64) bool {
	return n > 0 && n < r.bs && off/r.bs == (off+n-1)/r.bs
}

// refusalLocked is why no request may be taken now, or nil.
func (r *recorder) refusalLocked() error {
	switch {
	case r.err != nil:
		return fmt.Errorf("the recording of earlier writes failed: %w", r.err)
	case r.closing:
		return ErrEnded
	case r.stalled != nil:
		return fmt.Errorf("earlier writes wait for space to be recorded: %w", r.stalled)
	}
	return r.view.TakesWrites()
}

// admit returns once a small write of n bytes may be queued: nothing is
// being recorded before its reply, and the queue has room. It fails,
// before the write touches the primary, when the timeline cannot take
// it. enqueue or cancel must follow.
func (r *recorder) admit(n int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if err := r.refusalLocked(); err != nil {
			return err
		}
		if r.inline == 0 && r.waiting == 0 && (r.queuedBytes == 0 || r.queuedBytes+n <= maxQueuedBytes) {
			break
		}
		r.cond.Wait()
	}
	r.admitted++
	return nil
}

// cancel ends an admitted write that is not queued.
func (r *recorder) cancel() {
	r.mu.Lock()
	r.admitted--
	r.cond.Broadcast()
	r.mu.Unlock()
}

// enqueue queues an admitted write of p at off, which the primary holds,
// stamped now. p is copied.
func (r *recorder) enqueue(p []byte, off int64) {
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], p...)
	*bp = b
	w := timeline.Write{P: b, Off: off}
	if r.backlog.Load() >= prepareBacklog {
		// The recording goroutine has enough to do: hashed and
		// compressed here, beside the other writers. Otherwise it does
		// it, off the reply's path.
		w = r.view.Prepare(b, off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.admitted--
	if r.err != nil {
		// The recording failed meanwhile: the next start compares the
		// primary with the timeline (failed marked it so).
		w.Release()
		bufPool.Put(bp)
		r.cond.Broadcast()
		return
	}
	w.At = r.view.Stamp() // under mu: the queue is in the order of the times
	r.queue = append(r.queue, queued{w: w, buf: bp})
	r.queuedBytes += int64(len(b))
	r.enq++
	r.backlog.Store(int64(len(r.queue)))
	if !r.running {
		r.running = true
		go r.run()
	}
	r.cond.Broadcast()
}

// exclusive returns once every write queued is recorded and no small
// write is between admit and enqueue, and holds small writes back until
// release: for a request recorded before its reply.
func (r *recorder) exclusive() (release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting++
	defer func() {
		r.waiting--
		r.cond.Broadcast()
	}()
	for r.admitted > 0 || r.done < r.enq {
		if err := r.refusalLocked(); err != nil {
			return nil, err
		}
		r.cond.Wait()
	}
	if r.err != nil || r.closing {
		return nil, r.refusalLocked()
	}
	r.inline++
	return func() {
		r.mu.Lock()
		r.inline--
		r.cond.Broadcast()
		r.mu.Unlock()
	}, nil
}

// settle returns once every write queued before the call is recorded: a
// FLUSH, or a read of the volume's history, counts on them. It fails
// when they cannot be recorded: for good, or when the store refuses them
// for want of space (at the first try after the call: the queue may be
// waiting for its next try when space comes back).
func (r *recorder) settle() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	target, tried := r.enq, r.attempts
	for r.done < target && r.err == nil && (r.stalled == nil || r.attempts <= tried+1) {
		r.cond.Wait()
	}
	switch {
	case r.err != nil:
		return fmt.Errorf("the recording of earlier writes failed: %w", r.err)
	case r.done < target:
		return fmt.Errorf("%d acknowledged writes wait for space to be recorded: %w", r.enq-r.done, r.stalled)
	}
	return nil
}

// failure is why the recording ended for good, or nil.
func (r *recorder) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// queued counts the writes queued and not recorded yet.
func (r *recorder) queued() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return int64(r.enq - r.done)
}

// stall returns how many writes wait in the queue, and why, while the
// store refuses them for want of space.
func (r *recorder) stall() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled == nil {
		return 0, nil
	}
	return len(r.queue), r.stalled
}

// close stops the recording goroutine once the queue is recorded (or
// given up); the Disk settled it first.
func (r *recorder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	r.cond.Broadcast()
	for r.running {
		r.cond.Wait()
	}
}

// run records the queue until it is empty and the recorder closes.
func (r *recorder) run() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		for len(r.queue) == 0 && !r.closing {
			r.cond.Wait()
		}
		if len(r.queue) == 0 {
			r.running = false
			r.cond.Broadcast()
			return
		}
		group := r.queue[:r.groupLenLocked()]
		ws := make([]timeline.Write, len(group))
		for i, q := range group {
			ws[i] = q.w
		}
		r.mu.Unlock()
		for i := range ws {
			if !ws[i].Prepared() {
				// Not hashed by its writer (a short queue), or not a
				// patch (Prepare leaves those to WriteMany).
				at := ws[i].At
				ws[i] = r.view.Prepare(ws[i].P, ws[i].Off)
				ws[i].At = at
			}
		}
		if r.beforeRecord != nil {
			r.beforeRecord()
		}
		var err error
		if r.record != nil {
			err = r.record(ws)
		} else {
			err = r.view.WriteMany(ws)
		}
		r.mu.Lock()
		r.attempts++
		switch {
		case err == nil:
			var n int64
			for _, q := range group {
				n += int64(len(q.w.P))
				bufPool.Put(q.buf)
			}
			if len(group) > 1 {
				r.grouped.Add(int64(len(group)))
			}
			r.queue = r.queue[len(group):]
			if len(r.queue) == 0 {
				r.queue = nil
			}
			r.backlog.Store(int64(len(r.queue)))
			r.queuedBytes -= n
			r.done += uint64(len(group))
			r.stalled = nil
		case stalls(err) && !r.closing:
			r.stalled = err
			for i := range group {
				// A failed WriteMany gave back their encodings: the
				// next try makes them again, outside mu.
				w := group[i].w
				group[i].w = timeline.Write{P: w.P, Off: w.Off, At: w.At}
			}
			r.cond.Broadcast()
			r.mu.Unlock()
			time.Sleep(r.retry)
			r.mu.Lock()
			continue
		default:
			r.giveUpLocked(err)
		}
		r.cond.Broadcast()
	}
}

// groupLenLocked returns how many writes at the head of the queue are
// recorded together: up to maxGroup, and no two of one block.
func (r *recorder) groupLenLocked() int {
	seen := make(map[int64]struct{}, min(len(r.queue), maxGroup))
	for i, q := range r.queue {
		b := q.w.Off / r.bs
		if _, dup := seen[b]; dup || i == maxGroup {
			return i
		}
		seen[b] = struct{}{}
	}
	return len(r.queue)
}

// giveUpLocked ends the recording for good: the queue is dropped.
func (r *recorder) giveUpLocked(err error) {
	r.err = err
	r.stalled = nil
	ts := make([]int64, 0, len(r.queue))
	for _, q := range r.queue {
		ts = append(ts, q.w.At)
		q.w.Release()
		bufPool.Put(q.buf)
	}
	r.view.Unstamp(ts...)
	r.queue, r.queuedBytes, r.done = nil, 0, r.enq
	r.backlog.Store(0)
	if f := r.failed; f != nil {
		r.failed = nil
		r.mu.Unlock()
		f(err)
		r.mu.Lock()
	}
}

// stalls reports whether err is the store refusing writes for want of
// space, which passes once there is space again.
func stalls(err error) bool {
	if errors.Is(err, timeline.ErrNoSpace) { // past the end of the volume
		return false
	}
	return errors.Is(err, timeline.ErrUnwritable) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
