package client

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/nbd"
)

// Conn is a connection in transmission. Its methods may be called from
// several goroutines at once; each request is sent whole under one
// writer lock, and one reader goroutine matches replies to requests by
// cookie, so many requests are in flight at once.
type Conn struct {
	nc         net.Conn
	info       Info
	target     Target
	structured bool // structured replies negotiated

	wmu sync.Mutex // held while a request (header and payload) is written

	mu struct {
		sync.Mutex
		pending map[uint64]*call
		next    uint64
		err     error // set once the connection is done; new requests fail with it
	}
	readerDone chan struct{}
}

// call is one request in flight.
type call struct {
	op     string
	typ    uint16
	off    int64
	length int64
	buf    []byte // READ: where the data goes
	errno  nbd.Errno
	err    error
	done   chan struct{}
	// covered counts the READ bytes structured chunks delivered; only
	// the reader goroutine touches it.
	covered int64
	// metaID is the context a BLOCK_STATUS asks about; extents, what the
	// reader goroutine received for it.
	metaID  uint32
	extents []Extent
}

func newConn(nc net.Conn, br *bufio.Reader, info Info, t Target, structured bool) *Conn {
	c := &Conn{nc: nc, info: info, target: t, structured: structured, readerDone: make(chan struct{})}
	c.mu.pending = make(map[uint64]*call)
	go c.readLoop(br)
	return c
}

// Info describes the export.
func (c *Conn) Info() Info { return c.info }

// StructuredReplies reports whether the server agreed to structured
// replies.
func (c *Conn) StructuredReplies() bool { return c.structured }

// Size is the export's size in bytes.
func (c *Conn) Size() int64 { return c.info.Size() }

// start registers a request and sends it. The reply completes the call;
// wait for it with c.wait.
func (c *Conn) start(op string, typ, flags uint16, off, length int64, payload, buf []byte) *call {
	return c.send(&call{op: op, typ: typ, off: off, length: length, buf: buf, done: make(chan struct{})}, flags, payload)
}

// send registers cl, complete but for its reply, and sends its request.
func (c *Conn) send(cl *call, flags uint16, payload []byte) *call {
	typ, off, length := cl.typ, cl.off, cl.length
	c.mu.Lock()
	if c.mu.err != nil {
		err := c.mu.err
		c.mu.Unlock()
		cl.err = err
		close(cl.done)
		return cl
	}
	c.mu.next++
	cookie := c.mu.next
	c.mu.pending[cookie] = cl
	c.mu.Unlock()

	hdr := nbd.AppendRequest(make([]byte, 0, nbd.RequestLen), flags, typ, cookie, uint64(off), uint32(length))
	bufs := net.Buffers{hdr}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	c.wmu.Lock()
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	if err != nil {
		// A request cut in half leaves the stream out of sync.
		c.fail(fmt.Errorf("%w: send to %s: %v", ErrClosed, c.target, err))
	}
	return cl
}

// wait returns the call's outcome.
func (c *Conn) wait(cl *call) error {
	<-cl.done
	if cl.err != nil {
		return cl.err
	}
	if cl.errno != 0 {
		return &RequestError{Op: cl.op, Offset: cl.off, Length: cl.length, Errno: cl.errno}
	}
	return nil
}

// do sends one request and waits for its reply.
func (c *Conn) do(op string, typ, flags uint16, off, length int64, payload, buf []byte) error {
	return c.wait(c.start(op, typ, flags, off, length, payload, buf))
}

// readLoop reads replies until the connection fails or closes.
func (c *Conn) readLoop(br *bufio.Reader) {
	defer close(c.readerDone)
	rr := replyReader{r: br, find: c.find, structured: c.structured}
	c.fail(rr.run())
}

// find returns the call waiting for cookie, removing it when last.
func (c *Conn) find(cookie uint64, last bool) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.mu.pending[cookie]
	if last {
		delete(c.mu.pending, cookie)
	}
	return cl
}

// fail ends the connection: every request in flight and every later one
// fails with err (the first error wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.mu.err == nil {
		c.mu.err = err
	}
	err = c.mu.err
	pending := c.mu.pending
	c.mu.pending = make(map[uint64]*call)
	c.mu.Unlock()
	c.nc.Close()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
}

// Close disconnects (NBD_CMD_DISC when the connection is idle enough to
// send it) and fails every request still in flight with ErrClosed. It
// waits for the reader goroutine to end.
func (c *Conn) Close() error {
	c.mu.Lock()
	open := c.mu.err == nil
	c.mu.Unlock()
	if open && c.wmu.TryLock() {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.nc.Write(nbd.AppendRequest(nil, 0, nbd.CmdDisc, 0, 0, 0))
		c.wmu.Unlock()
	}
	c.fail(fmt.Errorf("%w: closed by the client", ErrClosed))
	<-c.readerDone
	return nil
}
