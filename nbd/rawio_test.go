package nbd

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// unixPair returns the two ends of a Unix stream socketpair as
// connections (non-blocking, on the runtime's poller).
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b = conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Each read returns what the socket holds, however little: one byte
// written is one byte read into a large buffer, and a buffer smaller
// than what is queued is filled and the rest left for the next read.
func TestRawReaderShortReads(t *testing.T) {
	client, server := unixPair(t)
	r := newSocketReader(server)
	if _, ok := r.(rawReader); !ok {
		t.Fatalf("a Unix connection is read through %T", r)
	}
	buf := make([]byte, 4096)
	for i := range 256 {
		if _, err := client.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		n, err := r.Read(buf)
		if n != 1 || err != nil || buf[0] != byte(i) {
			t.Fatalf("read after writing byte %d: %d bytes (% x), %v", i, n, buf[:n], err)
		}
	}
	client.Write([]byte("abc"))
	small := make([]byte, 2)
	if n, err := r.Read(small); n != 2 || err != nil || string(small) != "ab" {
		t.Fatalf("read into 2 bytes: %d (%q), %v", n, small[:n], err)
	}
	if n, err := r.Read(buf); n != 1 || err != nil || buf[0] != 'c' {
		t.Fatalf("read the rest: %d (%q), %v", n, buf[:n], err)
	}
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Fatalf("read into nothing: %d, %v", n, err)
	}
}

// On an empty socket the raw read gets EAGAIN and must wait on the
// poller: until the deadline, not returning an error, EOF or nothing;
// and it reads what comes after.
func TestRawReaderEmptySocketWaits(t *testing.T) {
	client, server := unixPair(t)
	r := newSocketReader(server)
	buf := make([]byte, 16)
	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of an empty socket: %d, %v; want to wait for the deadline", n, err)
	}
	server.SetReadDeadline(time.Time{})
	got := make(chan string, 1)
	go func() {
		n, err := r.Read(buf)
		if err != nil {
			t.Error(err)
		}
		got <- string(buf[:n])
	}()
	client.Write([]byte("late"))
	if s := <-got; s != "late" {
		t.Fatalf("read %q, want what was written after it started", s)
	}
}

// A read(2) error other than EAGAIN or EINTR is returned, with its errno.
func TestRawReaderReset(t *testing.T) {
	client, server := tcpPair(t)
	r := newSocketReader(server)
	if err := client.(*net.TCPConn).SetLinger(0); err != nil { // close with a reset
		t.Fatal(err)
	}
	client.Close()
	if _, err := r.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read of a reset connection: %v, want ECONNRESET", err)
	}
}

// fill writes to c until its socket is full (the next write would get
// EAGAIN) and returns what it wrote.
func fill(t *testing.T, c *net.UnixConn) []byte {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var junk []byte
	chunk := bytes.Repeat([]byte{0xee}, 512)
	err = rc.Write(func(fd uintptr) bool {
		for {
			n, err := unix.Write(int(fd), chunk)
			if n > 0 {
				junk = append(junk, chunk[:n]...)
			}
			if errors.Is(err, unix.EAGAIN) {
				return true
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				t.Error(err)
				return true
			}
		}
	})
	if err != nil || len(junk) == 0 {
		t.Fatalf("fill the socket: %d bytes, %v", len(junk), err)
	}
	return junk
}

// rawWritev into a socket that is full from the start (its first writev
// gets EAGAIN) and holds a few KiB: every writev after that is partial,
// often ending mid-buffer, over more buffers than one call takes, with
// empty ones among them. Every byte arrives, in order, once.
func TestRawWritevFullSocketShortWrites(t *testing.T) {
	client, server := unixPair(t)
	if err := server.SetWriteBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	junk := fill(t, server)
	rng := rand.New(rand.NewSource(3))
	var want []byte
	var bufs net.Buffers
	for i := range 500 {
		b := make([]byte, rng.Intn(3000))
		if i%7 == 0 {
			b = nil
		}
		rng.Read(b)
		want = append(want, b...)
		bufs = append(bufs, b)
	}
	bufs = append(bufs, nil, []byte{})
	rc, err := server.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := rawWritev(rc, &bufs, server, 0)
		server.CloseWrite() // a byte short or too many shows as EOF, not a hang
		done <- err
	}()
	got := make([]byte, len(junk)+len(want))
	_, rerr := io.ReadFull(client, got)
	if err := <-done; err != nil {
		t.Fatalf("writev: %v", err)
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !bytes.Equal(got[:len(junk)], junk) || !bytes.Equal(got[len(junk):], want) {
		t.Fatal("the bytes read differ from the bytes written")
	}
	if len(bufs) != 0 {
		t.Fatalf("%d buffers left unconsumed", len(bufs))
	}
	// Only empty buffers: nothing to write, all consumed.
	client, server = unixPair(t)
	if rc, err = server.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	empty := net.Buffers{nil, {}}
	if err := rawWritev(rc, &empty, server, 0); err != nil || len(empty) != 0 {
		t.Fatalf("writev of empty buffers: %v, %d left", err, len(empty))
	}
	server.Write([]byte("z"))
	one := make([]byte, 2)
	if n, err := client.Read(one); n != 1 || err != nil || one[0] != 'z' {
		t.Fatalf("after empty buffers read %q, %v; want only what followed", one[:n], err)
	}
}

// consume drops exactly n bytes, whether n ends mid-buffer, on a
// boundary or spans buffers, and the empty buffers it then faces.
func TestConsume(t *testing.T) {
	for _, c := range []struct {
		bufs []string
		n    int
		want []string
	}{
		{[]string{"abc", "de"}, 0, []string{"abc", "de"}},
		{[]string{"", "abc"}, 0, []string{"abc"}},
		{[]string{"abc", "de"}, 1, []string{"bc", "de"}},
		{[]string{"abc", "de"}, 3, []string{"de"}},
		{[]string{"abc", "", "", "de"}, 3, []string{"de"}},
		{[]string{"abc", "de", "f"}, 4, []string{"e", "f"}},
		{[]string{"abc", "de"}, 5, nil},
		{[]string{"abc", "de", ""}, 5, nil},
	} {
		var bufs net.Buffers
		for _, s := range c.bufs {
			bufs = append(bufs, []byte(s))
		}
		consume(&bufs, c.n)
		var got []string
		for _, b := range bufs {
			got = append(got, string(b))
		}
		if strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
			t.Errorf("consume(%q, %d) = %q, want %q", c.bufs, c.n, got, c.want)
		}
	}
}
