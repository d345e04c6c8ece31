package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// session is what the handshake settled for the transmission phase.
type session struct {
	exp        *Export
	name       string // canonical export name, for logs
	label      string // Export.MetricsName, or name
	nc         net.Conn
	br         *bufio.Reader
	tls        bool
	structured bool // structured replies negotiated
	metaAlloc  bool // base:allocation selected for this export
	flags      uint16
	size       int64
	blockSize  uint32
	metrics    Metrics

	started bool
	endOnce sync.Once
}

// start reports the connection to metrics.
func (s *session) start() {
	s.started = true
	if s.metrics != nil {
		s.metrics.ConnOpened(s.label)
	}
}

// end releases the export, once.
func (s *session) end() {
	s.endOnce.Do(func() {
		if s.started && s.metrics != nil {
			s.metrics.ConnClosed(s.label)
		}
		if s.exp.Release != nil {
			s.exp.Release()
		}
	})
}

// Writer batching: replies queued together leave in one write.
const (
	maxBatch      = 64
	maxBatchBytes = 4 << 20
)

// maxInline bounds a read served on the reader goroutine (see Resident).
const maxInline = 128 << 10

// maxInlineWrite bounds a write served on the reader goroutine (see
// inline): a block's worth, which a store writes without waiting long.
const maxInlineWrite = 64 << 10

// transmission runs one connection's request loop: one reader, a pool of
// workers, one writer, tied together by an errgroup. The reader serves
// small reads of resident data itself (see Resident), and writes their
// replies between the writer's batches when nothing else is in flight.
type transmission struct {
	c        *conn
	s        *session
	pools    *pools
	budget   *budget // this connection's share of memory
	memory   *budget // the server's, shared by every connection
	work     chan *job
	replies  chan *job
	readErr  error         // why the reader stopped, when it was not a clean end
	resident Resident      // the backend's, or nil
	stall    time.Duration // Server.ReplyTimeout, or 0 for none
	queued   atomic.Int32  // requests handed to workers, not yet replied to
	// wmu serialises writes to the connection: the writer's batches and
	// the reader's inline replies. bw buffers them where the connection
	// cannot writev (TLS).
	wmu sync.Mutex
	bw  *bufio.Writer
	// logged holds the errnos of backend errors already logged on this
	// connection: a client that keeps writing to a full store gets its
	// ENOSPC each time, the log gets it once.
	logged sync.Map // Errno → bool
}

func (c *conn) transmit(s *session) error {
	s.start()
	workers := c.srv.workers()
	t := &transmission{
		c:       c,
		s:       s,
		pools:   &c.srv.pools,
		budget:  newBudget(c.srv.connMemory()),
		memory:  c.srv.bufferMemory(),
		stall:   c.srv.replyTimeout(),
		work:    make(chan *job),
		replies: make(chan *job, workers),
	}
	t.resident, _ = s.exp.Backend.(Resident)
	switch s.nc.(type) {
	case *net.TCPConn, *net.UnixConn: // writev
	default:
		var w io.Writer = s.nc
		if t.stall > 0 {
			w = &stallWriter{nc: s.nc, stall: t.stall}
		}
		t.bw = bufio.NewWriterSize(w, 256<<10)
	}
	g, ctx := errgroup.WithContext(c.ctx)
	// A failed writer must not leave the reader blocked on the socket.
	stop := context.AfterFunc(ctx, func() { c.raw.SetReadDeadline(aLongTimeAgo) })
	defer stop()

	g.Go(func() error { t.readLoop(ctx); return nil })
	var live atomic.Int32
	live.Store(int32(workers))
	for range workers {
		g.Go(func() error {
			defer func() {
				if live.Add(-1) == 0 {
					close(t.replies)
				}
			}()
			t.workLoop(ctx)
			return nil
		})
	}
	g.Go(func() error { return t.writeLoop() })
	err := g.Wait()
	// A writer that failed left the replies queued after its batch; the
	// workers have closed the queue.
	for j := range t.replies {
		t.release(j)
	}
	// The reader's reason first when the writer only found the
	// connection closed: a stalled inline reply closes it.
	if t.readErr != nil && (err == nil || quietEnd(err)) {
		return t.readErr
	}
	return err
}

// readLoop reads requests and hands them to the workers. However it ends,
// it closes the work queue, so that requests already read are still
// served and replied before the connection closes.
func (t *transmission) readLoop(ctx context.Context) {
	defer close(t.work)
	var h [requestLen]byte
	for {
		if _, err := io.ReadFull(t.s.br, h[:]); err != nil {
			t.readEnded(err)
			return
		}
		r, ok := decodeRequest(&h)
		if !ok {
			t.readErr = fmt.Errorf("%w: request magic %#x", errBadMagic, be.Uint32(h[:]))
			return
		}
		if r.typ == CmdDisc {
			t.c.log.Debug("nbd: client disconnected")
			return
		}
		j := t.pools.getJob()
		j.req, j.start = r, time.Now()
		if e := t.s.check(&r); e != nil {
			j.err = e
		}
		if err := t.admit(ctx, j); err != nil {
			t.release(j) // a WRITE cut short holds its memory
			t.readEnded(err)
			return
		}
		if t.inline(j) {
			if err := t.serveInline(j); err != nil {
				t.readEnded(err)
				return
			}
			continue
		}
		t.queued.Add(1)
		if t.cheap(j) {
			// Done here; the reply joins the writer's next batch. A worker
			// would add a handoff and a wake-up to a few microseconds of
			// work.
			t.execute(j)
			if !t.pass(ctx, t.replies, j) {
				return
			}
			continue
		}
		if !t.pass(ctx, t.work, j) {
			return
		}
	}
}

// inline reports whether the reader serves j and writes its reply itself:
// a cheap read while the workers have nothing of this connection's, or a
// small write while, besides, no other request of the client's has
// arrived. A client that waits for each reply (qemu at low depth, a
// booting guest, a database's log writes) then gets it without two
// goroutine handoffs; a client with requests queued behind it keeps the
// workers writing side by side.
func (t *transmission) inline(j *job) bool {
	if t.queued.Load() != 0 {
		return false
	}
	r := &j.req
	if r.typ == CmdWrite {
		return j.err == nil && r.length <= maxInlineWrite && t.s.br.Buffered() == 0
	}
	return t.cheap(j)
}

// cheap reports whether j is a small valid read of data the backend holds
// in memory, which the reader serves itself.
func (t *transmission) cheap(j *job) bool {
	r := &j.req
	return t.resident != nil && j.err == nil && r.typ == CmdRead && r.length <= maxInline &&
		t.resident.Resident(int64(r.offset), int64(r.length))
}

// serveInline executes j and writes its reply at once.
func (t *transmission) serveInline(j *job) error {
	t.execute(j)
	bufs := j.segs // writing consumes bufs; j.segs keeps its array
	err := t.write(&bufs)
	t.finish(j, time.Now())
	return err
}

// admit reserves the request's memory in the connection's share, then in
// the server's budget, and reads a WRITE payload; a rejected WRITE's
// payload is read and discarded. While it waits for memory the reader
// reads nothing more: the client is pushed back.
func (t *transmission) admit(ctx context.Context, j *job) error {
	r := &j.req
	if r.typ == CmdWrite && j.err != nil {
		if r.length > maxDrain {
			return fmt.Errorf("%w: WRITE of %d bytes", errPayloadTooLarge, r.length)
		}
		_, err := io.CopyN(io.Discard, t.s.br, int64(r.length))
		return err
	}
	if j.err != nil {
		return nil
	}
	n := t.s.budgetFor(r)
	if n == 0 {
		return nil
	}
	if err := t.budget.acquire(ctx, t.c.stopping, n); err != nil {
		return err
	}
	if err := t.memory.acquire(ctx, t.c.stopping, n); err != nil {
		t.budget.release(n)
		return err
	}
	j.budget = n
	if r.typ == CmdWrite {
		j.buf = t.pools.getBuf(int(r.length))
		_, err := io.ReadFull(t.s.br, *j.buf)
		return err
	}
	return nil
}

// readEnded records why reading stopped; ends that are not the client's
// fault or Shutdown's doing are kept for the log.
func (t *transmission) readEnded(err error) {
	switch {
	case t.c.shuttingDown():
		t.c.log.Debug("nbd: stopped reading for shutdown")
	case errors.Is(err, io.EOF):
		t.c.log.Debug("nbd: client closed the connection without NBD_CMD_DISC")
	case errors.Is(err, context.Canceled), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed),
		errors.Is(err, errStopping):
		// The writer failed or the server closed the connection.
	default:
		t.readErr = err
	}
}

func (t *transmission) workLoop(ctx context.Context) {
	for j := range t.work {
		if ctx.Err() != nil {
			t.queued.Add(-1)
			t.release(j)
			continue
		}
		t.execute(j)
		t.pass(ctx, t.replies, j)
	}
}

// pass hands a queued job on to ch, or, once ctx is done, releases it
// and reports false.
func (t *transmission) pass(ctx context.Context, ch chan<- *job, j *job) bool {
	select {
	case ch <- j:
		return true
	case <-ctx.Done():
		t.queued.Add(-1)
		t.release(j)
		return false
	}
}

// writeLoop writes replies in the order workers finish them. Each reply
// leaves in one write; replies that are ready together share it.
func (t *transmission) writeLoop() error {
	batch := make([]*job, 0, maxBatch)
	var bufs net.Buffers
	consumed := new(net.Buffers) // WriteTo's receiver escapes: allocate it once
	for {
		j, ok := <-t.replies
		if !ok {
			return nil
		}
		batch = append(batch[:0], j)
		size := j.replyLen()
	gather:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case j, ok = <-t.replies:
				if !ok {
					break gather
				}
				batch = append(batch, j)
				size += j.replyLen()
			default:
				break gather
			}
		}
		bufs = bufs[:0]
		for _, j := range batch {
			bufs = append(bufs, j.segs...)
		}
		*consumed = bufs
		// Counted out before the write, so that a client which saw these
		// replies finds the workers idle (see inline).
		t.queued.Add(-int32(len(batch)))
		err := t.write(consumed)
		clear(bufs)
		now := time.Now()
		for _, j := range batch {
			t.finish(j, now)
		}
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
	}
}

// write writes replies, consuming *bufs. A client that takes none of
// their bytes for the reply timeout (Server.ReplyTimeout) is cut off:
// the connection is closed at once, so that the reader's and the
// writer's other writes fail at once too, and every request gives back
// its memory.
func (t *transmission) write(bufs *net.Buffers) error {
	t.wmu.Lock()
	err := writeBuffers(t.s.nc, t.bw, bufs, t.stall)
	t.wmu.Unlock()
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.c.raw.Close()
		return fmt.Errorf("%w: no byte taken for %v", errReplyStalled, t.stall)
	}
	return err
}

// writeBuffers writes bufs with writev (raw, on a socket: see rawWritev),
// or through bw when nc cannot writev (TLS). It consumes *bufs. With
// stall > 0, a write that makes no progress for stall fails with
// os.ErrDeadlineExceeded (bw then writes through a stallWriter).
func writeBuffers(nc net.Conn, bw *bufio.Writer, bufs *net.Buffers, stall time.Duration) error {
	if bw == nil {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				return rawWritev(rc, bufs, nc, stall)
			}
		}
		_, err := bufs.WriteTo(nc)
		return err
	}
	for _, b := range *bufs {
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// finish reports a written reply to metrics and recycles its job.
func (t *transmission) finish(j *job, now time.Time) {
	if m := t.s.metrics; m != nil {
		var err error
		if j.err != nil {
			err = j.err
		}
		m.Request(t.s.label, cmdName(j.req.typ), int64(j.req.length), now.Sub(j.start), err)
	}
	t.release(j)
}

func (t *transmission) release(j *job) {
	if j.budget > 0 {
		t.memory.release(j.budget)
		t.budget.release(j.budget)
	}
	t.pools.putJob(j)
}

func cmdName(typ uint16) string {
	switch typ {
	case CmdRead:
		return "read"
	case CmdWrite:
		return "write"
	case CmdFlush:
		return "flush"
	case CmdTrim:
		return "trim"
	case CmdCache:
		return "cache"
	case CmdWriteZeroes:
		return "write_zeroes"
	case CmdBlockStatus:
		return "block_status"
	default:
		return "unknown"
	}
}
