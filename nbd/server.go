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
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWorkers          = 16
	DefaultMaxOptions       = 64
)

// Server serves NBD exports. Set its fields before calling Serve; do not
// change them afterwards. The zero value of every field but Resolver is
// usable.
type Server struct {
	Resolver  Resolver
	TLSConfig *tls.Config // nil = no TLS; non-nil = TLS mandatory (FORCEDTLS)
	Logger    *slog.Logger
	// HandshakeTimeout bounds the whole negotiation, TLS included
	// (0 = DefaultHandshakeTimeout, negative = none).
	HandshakeTimeout time.Duration
	// MaxConns caps the connections served at once, negotiating ones
	// included; a connection over the cap is closed at once (0 = no cap).
	MaxConns int
	Metrics  Metrics // may be nil
	// Workers is the number of requests served at once per connection
	// (0 = DefaultWorkers).
	Workers int
	// MaxOptions caps the options one handshake may send; the connection
	// is closed at the next one (0 = DefaultMaxOptions). nbdinfo --list
	// sends one NBD_OPT_INFO per export.
	MaxOptions int

	mu struct {
		sync.Mutex
		listeners map[*net.Listener]struct{}
		conns     map[*conn]struct{}
		shutdown  bool
	}
	pools pools
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

// newConn registers nc, or closes it and returns nil when the server is
// shutting down or full.
func (s *Server) newConn(ctx context.Context, nc net.Conn) *conn {
	c := newConn(ctx, s, nc)
	s.mu.Lock()
	reason := ""
	switch {
	case s.mu.shutdown:
		reason = "server shutting down"
	case s.MaxConns > 0 && len(s.mu.conns) >= s.MaxConns:
		reason = "connection limit reached"
	default:
		if s.mu.conns == nil {
			s.mu.conns = make(map[*conn]struct{})
		}
		s.mu.conns[c] = struct{}{}
	}
	s.mu.Unlock()
	if reason != "" {
		c.log.Warn("nbd: connection refused: "+reason, "max_conns", s.MaxConns)
		c.cancel()
		nc.Close()
		return nil
	}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.mu.conns, c)
	s.mu.Unlock()
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

func (s *Server) maxOptions() int {
	if s.MaxOptions <= 0 {
		return DefaultMaxOptions
	}
	return s.MaxOptions
}

func (s *Server) workers() int {
	if s.Workers <= 0 {
		return DefaultWorkers
	}
	return s.Workers
}
