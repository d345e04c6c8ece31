package nbd_test

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) (*nbdtest.Client, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nbdtest.NewClient(nc)
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// One address gets MaxConnsPerClient connections, negotiating ones
// included; the next is closed at once and counted, and a freed slot is
// taken again. Other addresses are not affected.
func TestMaxConnsPerClient(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, func(s *nbd.Server) { s.MaxConnsPerClient = 2; s.Metrics = rec })
	a, _ := h.connect("disk", true, false)
	b := h.dial()
	if _, err := b.Greeting(); err != nil {
		t.Fatal(err)
	}
	over := h.dial()
	if got := mustClose(t, over); len(got) != 0 {
		t.Fatalf("connection over the limit got % x", got)
	}
	rec.mu.Lock()
	refused := rec.refused[nbd.RefusedClientLimit]
	rec.mu.Unlock()
	if refused != 1 {
		t.Fatalf("refusals counted: %v", rec.refused)
	}

	other, err := dialFrom(t, "127.0.0.2", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Greeting(); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}

	if err := a.Disconnect(); err != nil {
		t.Fatal(err)
	}
	// The freed slot is taken again (once the server has seen the close),
	// and served.
	var again *nbdtest.Client
	waitFor(t, func() bool {
		c, err := nbdtest.Dial(h.addr)
		if err != nil {
			return false
		}
		if err := c.StartFixed(); err != nil {
			c.Close()
			return false
		}
		again = c
		return true
	})
	defer again.Close()
	if _, err := again.Go("disk"); err != nil {
		t.Fatal(err)
	}
	ok(t)(again.Read(0, 512, 0))
}

// Clients that send READs and never read the replies hold at most
// BufferMemory between them; the others wait for it and are served once
// the stalled clients are gone.
func TestBufferMemoryCap(t *testing.T) {
	const (
		limit   = 8 << 20
		stalled = 12 // each may hold limit/4: together three times the cap
		reads   = 64
		size    = 1 << 20
	)
	rec := newRecorder()
	h := newHarness(t, func(s *nbd.Server) { s.BufferMemory = limit; s.MaxConnsPerClient = -1; s.Metrics = rec })
	var wg sync.WaitGroup
	var clients []*nbdtest.Client
	for range stalled {
		c, _ := h.connect("disk", false, false)
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Blocks once the server stops reading; ends when c is closed.
			for i := range reads {
				if c.Send(0, nbd.CmdRead, uint64(i), uint64(i%16)*size, size, nil) != nil {
					return
				}
			}
		}()
	}
	// The cap is reached: requests wait for memory. Without the shared
	// cap the clients would hold three times as much and nothing would
	// wait.
	waitFor(t, func() bool { return nbd.BufferMemoryWaiting(h.srv) > 0 })
	if got := h.srv.BufferMemoryInUse(); got > limit {
		t.Fatalf("%d bytes of buffers held, over the cap of %d", got, limit)
	}
	rec.mu.Lock()
	held, waiting := rec.held, rec.waiting
	rec.mu.Unlock()
	if held > limit || waiting == 0 {
		t.Fatalf("metrics: %d bytes held, %d waiting", held, waiting)
	}

	normal, _ := h.connect("disk", true, false)
	if err := normal.Send(0, nbd.CmdRead, 1, 0, 4096, nil); err != nil {
		t.Fatal(err)
	}
	if got := h.srv.BufferMemoryInUse(); got > limit {
		t.Fatalf("%d bytes of buffers held, over the cap of %d", got, limit)
	}
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
	r := ok(t)(normal.ReadReply())
	if r.Cookie != 1 || len(r.Data) != 4096 {
		t.Fatalf("reply %+v", r)
	}
	ok(t)(normal.Read(0, 32<<20>>1, 0)) // larger than a connection's share: served alone
	waitFor(t, func() bool {
		// Not under rec.mu: the server reports to rec while it holds its
		// budget's lock, which BufferMemoryInUse takes.
		inUse := h.srv.BufferMemoryInUse()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return inUse == 0 && rec.held == 0 && rec.waiting == 0
	})
}

// Metrics name exports by MetricsName, never by what clients send: names
// that do not resolve add no series, only a count.
func TestMetricsNames(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	rec := newRecorder()
	res := nbdtest.NewResolver(
		&nbd.Export{Name: "vol@1", Backend: mem, MetricsName: "vol"},
		&nbd.Export{Name: "vol@2", Backend: mem, MetricsName: "vol"},
		&nbd.Export{Name: "plain", Backend: mem},
	)
	h := startServer(t, mem, res, func(s *nbd.Server) { s.Metrics = rec })
	for _, name := range []string{"vol@1", "vol@2", "plain"} {
		c, _ := h.connect(name, true, false)
		ok(t)(c.Read(0, 512, 0))
		if err := c.Disconnect(); err != nil {
			t.Fatal(err)
		}
	}
	const madeUp = 50
	for i := range madeUp {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Go(fmt.Sprintf("nope-%d", i)); err == nil {
			t.Fatal("made-up name opened")
		}
		if _, err := c.Info(fmt.Sprintf("vol@x%d", i)); err == nil {
			t.Fatal("made-up name opened")
		}
		c.Close()
	}
	waitFor(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.closed["vol"] == 2 && rec.closed["plain"] == 1
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.opened) != 2 || rec.opened["vol"] != 2 || rec.opened["plain"] != 1 {
		t.Fatalf("connections by name: %v", rec.opened)
	}
	if len(rec.requests) != 2 || rec.requests["vol read"] != 2 || rec.requests["plain read"] != 1 {
		t.Fatalf("requests by name: %v", rec.requests)
	}
	if rec.unknown != 2*madeUp {
		t.Fatalf("unknown exports counted %d, want %d", rec.unknown, 2*madeUp)
	}
}

// A WRITE whose payload never comes gives its memory back when the
// connection ends: the server's budget outlives every connection.
func TestBufferMemoryCutWrite(t *testing.T) {
	h := newHarness(t)
	for range 3 {
		c, _ := h.connect("disk", false, false)
		if err := c.Write(nbdtest.Request(0, nbd.CmdWrite, 1, 0, 1<<20, make([]byte, 1000))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return h.srv.BufferMemoryInUse() == 1<<20 })
		c.Close()
		waitFor(t, func() bool { return h.srv.BufferMemoryInUse() == 0 })
	}
}
