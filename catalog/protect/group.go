package protect

import (
	"sync"
	"sync/atomic"

	"github.com/rewind-dev/rewind/timeline"
)

// recorder records a Disk's writes in its timeline, those that arrive
// while others are being recorded together (group commit): the first
// write to find it idle records itself; writes that arrive meanwhile
// queue (each hashed and encoded meanwhile, side by side: see
// timeline.View.Prepare), and when it is done, the first of them
// records the whole queue in one timeline.View.WriteMany, and so on. A
// write alone (queue depth 1) is recorded as before, at once; at a high
// queue depth the small writes share one pack write and one Pebble
// commit, and the larger ones (a whole block or more) are recorded each
// on its own beside them, as before. Each is still its own
// version with its own time, and recorded before its reply and before
// the primary is written: the Disk's range lock keeps writes of the same
// blocks apart, so that a group never holds two of them.
type recorder struct {
	mu    sync.Mutex
	busy  bool
	queue []*pendingWrite
	// grouped counts the writes recorded with others.
	grouped atomic.Int64
	// beforeRecord, when set (by tests), runs before each recording.
	beforeRecord func()
}

// pendingWrite is a write waiting in the queue. done receives true once
// it is recorded (err says how), or false when its goroutine is to
// record the queue.
type pendingWrite struct {
	w    timeline.Write
	err  error
	done chan bool
}

var pendingPool = sync.Pool{New: func() any { return &pendingWrite{done: make(chan bool, 1)} }}

// maxGroup bounds the writes recorded together.
const maxGroup = 64

// record records p at off in view, with the writes that arrive
// meanwhile.
func (r *recorder) record(view *timeline.View, p []byte, off int64) error {
	r.mu.Lock()
	if !r.busy {
		r.busy = true
		r.mu.Unlock()
		if r.beforeRecord != nil {
			r.beforeRecord()
		}
		_, err := view.WriteAt(p, off)
		r.next()
		return err
	}
	r.mu.Unlock()
	// Hashed and encoded here, while the recorder is busy, side by side
	// with the other writes waiting.
	w := view.Prepare(p, off)
	if !w.Prepared() {
		// Not a small write of part of a block (a whole block or more,
		// zeroes): recorded on its own, beside the groups, as a
		// whole block's hashing and compression are worth a core of their
		// own rather than a turn in a leader's group.
		_, err := view.WriteAt(p, off)
		return err
	}
	r.mu.Lock()
	if !r.busy {
		r.busy = true
		r.mu.Unlock()
		err := view.WriteMany([]timeline.Write{w})
		r.next()
		return err
	}
	pw := pendingPool.Get().(*pendingWrite)
	pw.w = w
	r.queue = append(r.queue, pw)
	r.mu.Unlock()
	if recorded := <-pw.done; !recorded {
		r.lead(view)
	}
	err := pw.err
	*pw = pendingWrite{done: pw.done}
	pendingPool.Put(pw)
	return err
}

// lead records the queue (whose first write is the caller's) and tells
// each of its writes.
func (r *recorder) lead(view *timeline.View) {
	r.mu.Lock()
	group := r.queue[:min(len(r.queue), maxGroup)]
	r.queue = r.queue[len(group):]
	if len(r.queue) == 0 {
		r.queue = nil // the group keeps the array
	}
	r.mu.Unlock()
	ws := make([]timeline.Write, len(group))
	for i, pw := range group {
		ws[i] = pw.w
	}
	if r.beforeRecord != nil {
		r.beforeRecord()
	}
	err := view.WriteMany(ws)
	if len(ws) > 1 {
		r.grouped.Add(int64(len(ws)))
	}
	for i, pw := range group {
		pw.err = err
		if i > 0 {
			pw.done <- true
		}
	}
	r.next()
}

// next hands the recording on to the first write queued, or leaves the
// recorder idle.
func (r *recorder) next() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		r.busy = false
		return
	}
	r.queue[0].done <- false
}
