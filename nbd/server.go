package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Defaults for zero Server fields.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultWorkers           = 16
	DefaultMaxHandshakeBytes = 4 << 20
	DefaultMaxConnsPerClient = 64
	DefaultBufferMemory      = 256 << 20
	DefaultReplyTimeout      = 2 * time.Minute
)

// Server serves NBD exports. Set its fields before calling Serve; do not
// change them afterwards. The zero value of every field but Resolver is
// usable.
type Server struct {
	Resolver  Resolver
	TLSConfig *tls.Config // nil = no TLS; non-nil = TLS mandatory (FORCEDTLS)
	Logger    *slog.Logger
	// HandshakeTimeout bounds the negotiation up to the first option
	// and, when TLS is required, up to the end of the TLS handshake;
	// then the wait for each next option (0 = DefaultHandshakeTimeout,
	// negative = none). Transmission has no idle timeout: a client may
	// stay connected without sending anything (see ReplyTimeout).
	HandshakeTimeout time.Duration
	// MaxConns caps the connections served at once, negotiating ones
	// included; a connection over the cap is closed at once (0 = no cap).
	MaxConns int
	Metrics  Metrics // may be nil
	// Workers is the number of requests served at once per connection
	// (0 = DefaultWorkers).
	Workers int
	// MaxHandshakeBytes caps the option bytes (headers and data) one
	// handshake may send; the connection is closed at the option that
	// passes it (0 = DefaultMaxHandshakeBytes). nbdinfo --list sends two
	// options, about 60 bytes, per export; the default lets it list some
	// 60,000 exports.
	MaxHandshakeBytes int64
	// MaxConnsPerClient caps the connections from one IP address,
	// negotiating ones included; a connection over the cap is closed at
	// once (0 = DefaultMaxConnsPerClient, negative = no cap). Connections
	// that are not TCP (ServeConn on a pipe) are not counted.
	MaxConnsPerClient int
	// BufferMemory caps the payload bytes all connections hold at once:
	// WRITE data read and not yet written to the backend, READ data and
	// block status replies built and not yet sent (0 =
	// DefaultBufferMemory). A connection waiting for it stops reading
	// requests; one connection holds at most a quarter of it (and at
	// most 64 MiB). One request larger than what is free proceeds once
	// nothing else is held, so the cap is passed by at most one request
	// (MaxPayload). See the package documentation.
	BufferMemory int64
	// ReplyTimeout closes a connection whose client takes not one byte
	// of its replies for that long (0 = DefaultReplyTimeout, negative =
	// none). A client that stops reading would otherwise keep its share
	// of BufferMemory, and four such clients all of it, for as long as
	// it stays connected. The wait starts again whenever bytes go out, so
	// a client that keeps reading, however slowly, is never cut off; and
	// it only runs while the server has replies to send: a connection
	// may stay idle for hours.
	ReplyTimeout time.Duration

	mu struct {
		sync.Mutex
		listeners map[*net.Listener]struct{}
		conns     map[*conn]struct{}
		clients   map[string]int // connections by client address
		shutdown  bool
	}
	memOnce sync.Once
	memory  *budget // shared by every connection, see BufferMemory
	pools   pools
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			var ne net.Error
			// Temporary is deprecated but still what net/http's accept
			// loop uses to tell EMFILE and friends from a closed listener.
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("nbd: accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(context.Background(), nc)
		if c == nil {
			continue
		}
		go c.serve()
	}
}

// ServeConn serves one already accepted connection (socket activation, a
// pipe) and returns when it ends. ctx cancels it.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	c := s.newConn(ctx, nc)
	if c == nil {
		return ErrServerClosed
	}
	return c.serve()
}

// Shutdown stops accepting, ends negotiating connections, lets requests
// already read finish and be replied, then closes connections. It does not
// flush backends. If ctx ends first, remaining connections are closed at
// once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.mu.shutdown = true
	for l := range s.mu.listeners {
		(*l).Close()
	}
	conns := make([]*conn, 0, len(s.mu.conns))
	for c := range s.mu.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.beginShutdown()
	}
	for i, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range conns[i:] {
				c.closeNow()
			}
			return ctx.Err()
		}
	}
	return nil
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.shutdown
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.mu.listeners, l)
		return true
	}
	if s.mu.shutdown {
		return false
	}
	if s.mu.listeners == nil {
		s.mu.listeners = make(map[*net.Listener]struct{})
	}
	s.mu.listeners[l] = struct{}{}
	return true
}

// Reasons for Metrics.ConnRefused.
const (
	RefusedServerLimit = "server_limit" // Server.MaxConns reached
	RefusedClientLimit = "client_limit" // Server.MaxConnsPerClient reached
)

// newConn registers nc, or closes it and returns nil when the server is
// shutting down or full, or the client has too many connections.
func (s *Server) newConn(ctx context.Context, nc net.Conn) *conn {
	c := newConn(ctx, s, nc)
	c.client = clientKey(nc.RemoteAddr())
	s.mu.Lock()
	reason := ""
	switch {
	case s.mu.shutdown:
		reason = "server shutting down"
	case s.MaxConns > 0 && len(s.mu.conns) >= s.MaxConns:
		reason = RefusedServerLimit
	case c.client != "" && s.maxConnsPerClient() > 0 && s.mu.clients[c.client] >= s.maxConnsPerClient():
		reason = RefusedClientLimit
	default:
		if s.mu.conns == nil {
			s.mu.conns = make(map[*conn]struct{})
			s.mu.clients = make(map[string]int)
		}
		s.mu.conns[c] = struct{}{}
		if c.client != "" {
			s.mu.clients[c.client]++
		}
	}
	s.mu.Unlock()
	if reason == "" {
		return c
	}
	switch reason {
	case RefusedServerLimit:
		c.log.Warn("nbd: connection refused: connection limit reached", "max_conns", s.MaxConns)
	case RefusedClientLimit:
		// Debug: a client over its limit must not flood the log.
		c.log.Debug("nbd: connection refused: too many connections from this client", "max_conns_per_client", s.maxConnsPerClient())
	default:
		c.log.Debug("nbd: connection refused: " + reason)
	}
	if s.Metrics != nil && reason != "server shutting down" {
		s.Metrics.ConnRefused(reason)
	}
	c.cancel()
	nc.Close()
	return nil
}

// clientKey is the address connections are counted by: the IP of a TCP
// peer, or "" (not counted).
func clientKey(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return ""
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c)
	if c.client != "" {
		if s.mu.clients[c.client]--; s.mu.clients[c.client] <= 0 {
			delete(s.mu.clients, c.client)
		}
	}
	s.mu.Unlock()
}

// BufferMemoryInUse returns the payload bytes connections hold now,
// counted against BufferMemory.
func (s *Server) BufferMemoryInUse() int64 { return s.bufferMemory().inUse() }

// bufferMemory is the budget shared by every connection.
func (s *Server) bufferMemory() *budget {
	s.memOnce.Do(func() {
		n := s.BufferMemory
		if n <= 0 {
			n = DefaultBufferMemory
		}
		s.memory = newBudget(n)
		if s.Metrics != nil {
			s.memory.changed = s.Metrics.BufferMemory
		}
	})
	return s.memory
}

// connMemory is what one connection may hold of BufferMemory: a quarter,
// so that one client that stops reading its replies cannot take it all,
// and at most connBudget.
func (s *Server) connMemory() int64 {
	return min(s.bufferMemory().limit/4, connBudget)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout == 0 {
		return DefaultHandshakeTimeout
	}
	return s.HandshakeTimeout
}

// replyTimeout is ReplyTimeout, its default, or 0 for none.
func (s *Server) replyTimeout() time.Duration {
	switch {
	case s.ReplyTimeout == 0:
		return DefaultReplyTimeout
	case s.ReplyTimeout < 0:
		return 0
	}
	return s.ReplyTimeout
}

func (s *Server) maxHandshakeBytes() int64 {
	if s.MaxHandshakeBytes <= 0 {
		return DefaultMaxHandshakeBytes
	}
	return s.MaxHandshakeBytes
}

func (s *Server) maxConnsPerClient() int {
	if s.MaxConnsPerClient == 0 {
		return DefaultMaxConnsPerClient
	}
	return s.MaxConnsPerClient
}

func (s *Server) workers() int {
	if s.Workers <= 0 {
		return DefaultWorkers
	}
	return s.Workers
}
