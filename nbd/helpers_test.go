package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

const (
	testSize  = 16 << 20
	testBlock = 512
)

// harness runs a Server on 127.0.0.1 with three exports over Memory
// backends: "disk" (writable, multi-conn), "ro" (read-only) and "single"
// (writable, no multi-conn, sharing disk's memory).
type harness struct {
	t    *testing.T
	srv  *nbd.Server
	addr string
	mem  *nbdtest.Memory
	res  *nbdtest.Resolver
	done chan error
}

func newHarness(t *testing.T, configure ...func(*nbd.Server)) *harness {
	t.Helper()
	mem := nbdtest.NewMemory(testSize, testBlock)
	res := nbdtest.NewResolver(
		&nbd.Export{Name: "disk", Description: "a test disk", Backend: mem, MultiConn: true, BlockSize: 65536},
		&nbd.Export{Name: "ro", Description: "read-only", Backend: mem, ReadOnly: true},
		&nbd.Export{Name: "single", Backend: mem},
	)
	return startServer(t, mem, res, configure...)
}

func startServer(t *testing.T, mem *nbdtest.Memory, res nbd.Resolver, configure ...func(*nbd.Server)) *harness {
	t.Helper()
	srv := &nbd.Server{Resolver: res, Logger: testLogger(t)}
	for _, f := range configure {
		f(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, addr: l.Addr().String(), mem: mem, done: make(chan error, 1)}
	if r, ok := res.(*nbdtest.Resolver); ok {
		h.res = r
	}
	go func() { h.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-h.done; !errors.Is(err, nbd.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return h
}

func (h *harness) dial() *nbdtest.Client {
	h.t.Helper()
	c, err := nbdtest.Dial(h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// connect negotiates fixed newstyle, optionally structured replies and
// base:allocation, then GO.
func (h *harness) connect(name string, structured, meta bool) (*nbdtest.Client, nbdtest.ExportInfo) {
	h.t.Helper()
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		h.t.Fatal(err)
	}
	if structured {
		if err := c.StructuredReplies(); err != nil {
			h.t.Fatal(err)
		}
	}
	if meta {
		ctxs, err := c.MetaContexts(nbd.OptSetMetaContext, name, nbd.MetaContextBaseAllocation)
		if err != nil || len(ctxs) != 1 {
			h.t.Fatalf("SET_META_CONTEXT: %v %v", ctxs, err)
		}
	}
	info, err := c.Go(name, nbd.InfoBlockSize)
	if err != nil {
		h.t.Fatal(err)
	}
	return c, info
}

// testLogger logs to t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// mustReply fails the test unless the reply came with the wanted errno.
func mustReply(t *testing.T, r *nbdtest.Reply, err error, want nbd.Errno) *nbdtest.Reply {
	t.Helper()
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	if nbd.Errno(r.Errno) != want {
		t.Fatalf("errno %d (%q), want %d", r.Errno, r.Msg, want)
	}
	return r
}

// ok returns a check that a reply succeeded: ok(t)(c.Read(...)).
func ok(t *testing.T) func(*nbdtest.Reply, error) *nbdtest.Reply {
	return func(r *nbdtest.Reply, err error) *nbdtest.Reply {
		t.Helper()
		return mustReply(t, r, err, 0)
	}
}

// fails returns a check that a reply failed with errno.
func fails(t *testing.T, errno nbd.Errno) func(*nbdtest.Reply, error) *nbdtest.Reply {
	return func(r *nbdtest.Reply, err error) *nbdtest.Reply {
		t.Helper()
		return mustReply(t, r, err, errno)
	}
}

// mustOptionError fails unless err is an option error reply of type want.
func mustOptionError(t *testing.T, err error, want uint32) *nbdtest.OptionError {
	t.Helper()
	var oe *nbdtest.OptionError
	if !errors.As(err, &oe) || oe.Type != want {
		t.Fatalf("got %v, want option error %#x", err, want)
	}
	if len(oe.Msg) > 4096 {
		t.Fatalf("error message of %d bytes", len(oe.Msg))
	}
	return oe
}

// mustClose fails unless the server closes the connection soon.
func mustClose(t *testing.T, c *nbdtest.Client) []byte {
	t.Helper()
	b, err := c.ExpectClosed(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/4096)
	}
	return b
}

var _ io.Writer = (*testWriter)(nil)
