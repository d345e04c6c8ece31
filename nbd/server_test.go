package nbd_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// Shutdown lets a request already read finish and be replied, closes
// negotiating and idle connections, and makes Serve return.
func TestShutdownWithClients(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(8192, 1), 1<<20)
	g := newGated(mem, 1<<20)
	res := nbdtest.NewResolver(&nbd.Export{Name: "g", Backend: g})
	srv := &nbd.Server{Resolver: res, Logger: testLogger(t)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	h := &harness{t: t, srv: srv, addr: l.Addr().String(), mem: mem, res: res}

	negotiating := h.dial()
	if err := negotiating.StartFixed(); err != nil {
		t.Fatal(err)
	}
	idle, _ := h.connect("g", true, false)
	busy, _ := h.connect("g", false, false)
	if err := busy.Send(0, nbd.CmdRead, 7, 1<<20, 4096, nil); err != nil {
		t.Fatal(err)
	}
	<-g.entered

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	mustClose(t, negotiating)
	mustClose(t, idle)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	if _, err := net.Dial("tcp", h.addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	close(g.gate)
	r := ok(t)(busy.ReadReply())
	if r.Cookie != 7 || len(r.Data) != 4096 {
		t.Fatalf("in-flight reply %+v", r)
	}
	mustClose(t, busy)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, nbd.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if res.Opens("g") != res.Releases("g") {
		t.Fatalf("%d opens, %d releases", res.Opens("g"), res.Releases("g"))
	}
	if err := srv.Serve(l); !errors.Is(err, nbd.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// When Shutdown's context ends first, connections are closed anyway.
func TestShutdownTimeout(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(8192, 1), 0)
	g := newGated(mem, 0)
	defer close(g.gate)
	h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "g", Backend: g}))
	c, _ := h.connect("g", true, false)
	if err := c.Send(0, nbd.CmdRead, 1, 0, 4096, nil); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	mustClose(t, c)
}

func TestMaxConns(t *testing.T) {
	h := newHarness(t, func(s *nbd.Server) { s.MaxConns = 2 })
	a, _ := h.connect("disk", true, false)
	b := h.dial()
	if _, err := b.Greeting(); err != nil {
		t.Fatal(err)
	}
	over := h.dial()
	if b := mustClose(t, over); len(b) != 0 {
		t.Fatalf("connection over the cap got % x", b)
	}
	if err := a.Disconnect(); err != nil {
		t.Fatal(err)
	}
	// The freed slot is taken again (once the server has seen the close).
	waitFor(t, func() bool {
		c, err := nbdtest.Dial(h.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Greeting()
		return err == nil
	})
}

// ServeConn serves a connection the caller accepted, such as a pipe.
func TestServeConnPipe(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	srv := &nbd.Server{Resolver: nbdtest.NewResolver(&nbd.Export{Name: "", Backend: mem}), Logger: testLogger(t)}
	cs, ss := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), ss) }()
	c := nbdtest.NewClient(cs)
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Go(""); err != nil {
		t.Fatal(err)
	}
	ok(t)(c.WriteAt(pattern(4096, 1), 0, nbd.CmdFlagFUA))
	ok(t)(c.Read(0, 4096, 0))
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
}
