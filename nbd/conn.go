package nbd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// conn is one client connection: a negotiation, then a transmission phase.
type conn struct {
	srv    *Server
	raw    net.Conn
	log    *slog.Logger
	ctx    context.Context // canceled when the connection is closed
	cancel context.CancelFunc
	done   chan struct{} // closed when serve returns
	client string        // the address counted for MaxConnsPerClient, or ""
	// stopping is closed when Shutdown asks the connection to stop
	// reading; it ends a wait for buffer memory.
	stopping chan struct{}

	mu struct {
		sync.Mutex
		nc       net.Conn // raw, or the TLS connection over it
		shutdown bool     // Shutdown asked; reads fail from now on
	}
}

// aLongTimeAgo is a deadline in the past: it makes blocked reads return.
var aLongTimeAgo = time.Unix(1, 0)

func newConn(ctx context.Context, s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(ctx)
	c := &conn{
		srv:    s,
		raw:    nc,
		log:    s.logger().With("remote", nc.RemoteAddr().String()),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),

		stopping: make(chan struct{}),
	}
	c.mu.nc = nc
	return c
}

// serve runs the connection to its end and closes it.
func (c *conn) serve() error {
	defer close(c.done)
	defer c.srv.forget(c)
	defer c.cancel()
	defer c.close()

	stop := context.AfterFunc(c.ctx, func() { c.raw.SetReadDeadline(aLongTimeAgo) })
	defer stop()

	sess, err := c.handshake()
	if err != nil {
		if quietEnd(err) {
			c.log.Debug("nbd: negotiation ended", "err", err)
			return nil
		}
		c.log.Info("nbd: negotiation failed", "err", err)
		return err
	}
	c.setDeadline(time.Time{})
	defer sess.end()
	c.log = c.log.With("export", sess.name)
	c.log.Debug("nbd: transmission started", "size", sess.size, "flags", sess.flags,
		"structured", sess.structured, "tls", sess.tls)
	if err := c.transmit(sess); err != nil && !quietEnd(err) {
		c.log.Info("nbd: connection failed", "err", err)
		return err
	}
	return nil
}

// quietEnd reports whether err is an ordinary end of a connection.
func quietEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, errAbort) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.Canceled)
}

// setDeadline sets the read and write deadline, but never lifts the read
// deadline that Shutdown has set.
func (c *conn) setDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw.SetWriteDeadline(t)
	if c.mu.shutdown {
		t = aLongTimeAgo
	}
	c.raw.SetReadDeadline(t)
}

// setTLS records the TLS connection that replaces raw for all I/O.
func (c *conn) setTLS(nc net.Conn) {
	c.mu.Lock()
	c.mu.nc = nc
	c.mu.Unlock()
}

// beginShutdown makes the connection stop reading: a negotiation ends, a
// transmission finishes the requests already read.
func (c *conn) beginShutdown() {
	c.mu.Lock()
	if !c.mu.shutdown {
		close(c.stopping)
	}
	c.mu.shutdown = true
	c.raw.SetReadDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

func (c *conn) shuttingDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.shutdown
}

// closeNow ends the connection without waiting for anything.
func (c *conn) closeNow() {
	c.cancel()
	c.raw.Close()
}

// close closes the connection, ending TLS cleanly if it is up.
func (c *conn) close() {
	c.mu.Lock()
	nc := c.mu.nc
	c.mu.Unlock()
	nc.Close()
	if nc != c.raw {
		c.raw.Close()
	}
}
