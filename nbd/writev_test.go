package nbd

import (
	"bytes"
	"io"
	"math/rand"
	"net"
	"syscall"
	"testing"
	"time"
)

// rawWritev delivers every byte in order through partial writes and a
// full socket: the reader starts late and reads in small pieces, so the
// writer fills the socket, waits, and resumes mid-buffer.
func TestRawWritevFillsAndResumes(t *testing.T) {
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
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
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
	go func() { done <- rawWritev(rc, &bufs) }()

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
	if err := rawWritev(rc, &big); err == nil {
		t.Fatal("writing to a closed peer succeeded")
	}
}
