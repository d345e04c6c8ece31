package nbd_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// smallBuffers is a socket buffer size small enough that a reply of a
// few hundred kilobytes fills the socket: the kernel doubles it.
const smallBuffers = 32 << 10

// smallSendBuffers hands out connections whose send buffers are small, so
// that the server's writes wait for the client early.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetWriteBuffer(smallBuffers); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, err
}

// forPlainAndTLS runs test over plain connections (written with raw
// writev) and over TLS (written through a buffer).
func forPlainAndTLS(t *testing.T, test func(*testing.T, *nbdtest.PKI)) {
	t.Run("plain", func(t *testing.T) { test(t, nil) })
	t.Run("tls", func(t *testing.T) {
		pki, err := nbdtest.NewPKI(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		test(t, pki)
	})
}

// startSmallServer serves "disk" (a Memory of testSize, filled with a
// pattern) on a listener with small send buffers, with TLS required
// when pki is not nil.
func startSmallServer(t *testing.T, pki *nbdtest.PKI, configure func(*nbd.Server)) (*nbd.Server, *nbdtest.Memory, string) {
	t.Helper()
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(testSize, 3), 0)
	srv := &nbd.Server{
		Resolver: nbdtest.NewResolver(&nbd.Export{Name: "disk", Backend: mem}),
		Logger:   testLogger(t),
	}
	if pki != nil {
		srv.TLSConfig = pki.ServerConfig()
	}
	configure(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(smallSendBuffers{l}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, nbd.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, mem, l.Addr().String()
}

// connectSmall connects with a small receive buffer, starts TLS when
// pki is not nil, and negotiates GO for "disk" with simple replies.
func connectSmall(t *testing.T, addr string, pki *nbdtest.PKI) *nbdtest.Client {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, smallBuffers)
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := nbdtest.NewClient(nc)
	t.Cleanup(func() { c.Close() })
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if pki != nil {
		if err := c.StartTLS(pki.ClientConfig(&pki.Client)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
	return c
}

// Clients that never read their replies hold the whole buffer memory, and
// another client's READ waits for it; the reply timeout closes them, the
// memory comes back, and the other client is served.
func TestReplyTimeoutClosesStalledClients(t *testing.T) {
	forPlainAndTLS(t, testReplyTimeoutClosesStalledClients)
}

func testReplyTimeoutClosesStalledClients(t *testing.T, pki *nbdtest.PKI) {
	const (
		limit   = 4 << 20
		stalled = 4 // each holds its quarter: together all of it
		reads   = 32
		size    = limit/stalled - 1024 // with its reply header, one fits a quarter, two do not
	)
	srv, mem, addr := startSmallServer(t, pki, func(s *nbd.Server) {
		s.BufferMemory = limit
		s.ReplyTimeout = 3 * time.Second
	})
	var clients []*nbdtest.Client
	for range stalled {
		c := connectSmall(t, addr, pki)
		clients = append(clients, c)
		for i := range reads { // 28 bytes each: never blocks
			if err := c.Send(0, nbd.CmdRead, uint64(i), uint64(i%16)*size, size, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each holds its quarter in a reply the socket does not take.
	waitFor(t, func() bool { return srv.BufferMemoryInUse() >= stalled*size })

	other := connectSmall(t, addr, pki)
	if err := other.Send(0, nbd.CmdRead, 1, 4096, 64<<10, nil); err != nil {
		t.Fatal(err)
	}
	// It waits for memory (until the stalled clients are cut off).
	waitFor(t, func() bool { return nbd.BufferMemoryWaiting(srv) == 1 })
	other.Conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := ok(t)(other.ReadReply())
	if r.Cookie != 1 || !bytes.Equal(r.Data, mem.Bytes()[4096:4096+64<<10]) {
		t.Fatalf("reply %#x with %d bytes, not the data asked for", r.Cookie, len(r.Data))
	}
	// The first stalled client cut off frees enough for that READ; the
	// others' timeouts may still be running, a few milliseconds behind.
	// Reading one of them now would be progress and spare it: wait, not
	// reading, until all of their memory is back, which happens only when
	// all of them are closed (each holds its reply until then).
	waitFor(t, func() bool { return srv.BufferMemoryInUse() == 0 })
	for i, c := range clients {
		if _, err := c.ExpectClosed(30 * time.Second); err != nil {
			t.Fatalf("stalled client %d: %v", i, err)
		}
	}
	// The other client is still served.
	ok(t)(other.Read(0, 4096, 0))
}

// A client that reads its reply slowly, a piece at a time with pauses
// far shorter than the reply timeout, gets all of it, though the reply
// takes longer than the timeout to go out: the timeout is about
// progress, not about the length of a write.
func TestReplyTimeoutSparesSlowReader(t *testing.T) {
	forPlainAndTLS(t, testReplyTimeoutSparesSlowReader)
}

func testReplyTimeoutSparesSlowReader(t *testing.T, pki *nbdtest.PKI) {
	const (
		timeout = time.Second
		size    = 4 << 20 // about 2.5 s at 16 KiB every 10 ms
		piece   = 16 << 10
		pause   = 10 * time.Millisecond
	)
	_, mem, addr := startSmallServer(t, pki, func(s *nbd.Server) { s.ReplyTimeout = timeout })
	c := connectSmall(t, addr, pki)
	if err := c.Send(0, nbd.CmdRead, 7, 0, size, nil); err != nil {
		t.Fatal(err)
	}
	c.Conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	var got []byte
	for len(got) < 16+size {
		b, err := c.ReadFull(min(piece, 16+size-len(got)))
		if err != nil {
			t.Fatalf("after %d bytes in %v: %v", len(got), time.Since(start), err)
		}
		got = append(got, b...)
		time.Sleep(pause)
	}
	be := binary.BigEndian
	if be.Uint32(got) != nbd.MagicSimple || be.Uint32(got[4:]) != 0 || be.Uint64(got[8:]) != 7 {
		t.Fatalf("reply header % x", got[:16])
	}
	if !bytes.Equal(got[16:], mem.Bytes()[:size]) {
		t.Fatal("the data read differ from the disk")
	}
	t.Logf("%d bytes read in %v with a reply timeout of %v", size, time.Since(start), timeout)
	// Idle past the timeout (nothing to wait for but time): the deadline
	// of the write that waited must not be left to fail the next one.
	time.Sleep(timeout + timeout/2)
	ok(t)(c.Read(0, 1<<20, 0))
}

// A client cut off with many small replies queued behind the one being
// written gets all their memory given back, not just the written batch's.
func TestReplyTimeoutGivesBackQueuedReplies(t *testing.T) {
	srv, _, addr := startSmallServer(t, nil, func(s *nbd.Server) { s.ReplyTimeout = time.Second })
	c := connectSmall(t, addr, nil)
	for i := range 64 {
		if err := c.Send(0, nbd.CmdRead, uint64(i), uint64(i)*(64<<10), 64<<10, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return srv.BufferMemoryInUse() > 4*(64<<10) })
	// Not a byte read meanwhile: reading would be progress.
	waitFor(t, func() bool { return srv.BufferMemoryInUse() == 0 })
	if _, err := c.ExpectClosed(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
