package nbd

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// The raw reader delivers every byte in order while the writer sends in
// pieces with pauses (so that it finds the socket empty and waits), keeps
// the connection's read deadline, and reports the peer's close as EOF.
func TestRawReaderWaitsDeadlinesAndEOF(t *testing.T) {
	client, server := tcpPair(t)
	r := newSocketReader(server)
	if _, ok := r.(rawReader); !ok {
		t.Fatalf("a TCP connection is read through %T", r)
	}
	rng := rand.New(rand.NewSource(2))
	want := make([]byte, 3<<20)
	rng.Read(want)
	go func() {
		for b := want; len(b) > 0; {
			n := min(len(b), 1+rng.Intn(256<<10))
			if _, err := client.Write(b[:n]); err != nil {
				t.Error(err)
				return
			}
			b = b[n:]
			time.Sleep(time.Millisecond)
		}
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read differ from the bytes written")
	}

	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("x"))
	client.Close()
	if n, err := r.Read(got); n != 1 || err != nil || got[0] != 'x' {
		t.Fatalf("read %d bytes (%q), %v; want the last byte", n, got[:n], err)
	}
	if _, err := r.Read(got); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
}

// rawWritev delivers every byte in order through partial writes and a
// full socket: the reader starts late and reads in small pieces, so the
// writer fills the socket, waits, and resumes mid-buffer.
func TestRawWritevFillsAndResumes(t *testing.T) {
	client, server := tcpPair(t)
	if err := server.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewSource(1))
	var want []byte
	var bufs net.Buffers
	for range 300 { // more buffers than one writev takes, some empty
		b := make([]byte, rng.Intn(40<<10))
		rng.Read(b)
		want = append(want, b...)
		bufs = append(bufs, b)
	}
	rc, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rawWritev(rc, &bufs, server, 0) }()

	time.Sleep(50 * time.Millisecond) // let the socket fill
	got := make([]byte, 0, len(want))
	piece := make([]byte, 16<<10)
	for len(got) < len(want) {
		n, err := client.Read(piece)
		got = append(got, piece[:n]...)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read differ from the bytes written")
	}
	if len(bufs) != 0 {
		t.Fatalf("%d buffers left unconsumed", len(bufs))
	}

	// A closed peer is an error, not a hang.
	client.Close()
	big := net.Buffers{make([]byte, 8<<20)}
	if err := rawWritev(rc, &big, server, 0); err == nil {
		t.Fatal("writing to a closed peer succeeded")
	}
}
