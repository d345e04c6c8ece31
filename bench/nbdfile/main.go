// Command nbdfile serves one file over NBD with rewind's NBD server and
// nothing else: no timeline, no recording. The protect benchmark runs it
// beside `rewind protect`, nbdkit and qemu-nbd on the same primary, so
// that each run shows what the server itself reaches on the machine and
// what recording the writes costs on top. Anyone who can connect may read
// and write FILE, so it listens on a loopback address only.
//
//	nbdfile -listen 127.0.0.1:10809 FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/nbd"
)

// file is FILE as an nbd.Backend: reads and writes in place, FLUSH as an
// fdatasync (as nbdkit's file plugin and qemu-nbd do), zeroes and trims
// as punched holes.
type file struct {
	f    *os.File
	size int64
}

func (b *file) Size() int64                              { return b.size }
func (b *file) ReadAt(p []byte, off int64) (int, error)  { return b.f.ReadAt(p, off) }
func (b *file) WriteAt(p []byte, off int64) (int, error) { return b.f.WriteAt(p, off) }
func (b *file) Flush() error                             { return unix.Fdatasync(int(b.f.Fd())) }
func (b *file) Trim(off, n int64) error                  { return b.WriteZeroes(off, n) }

func (b *file) WriteZeroes(off, n int64) error {
	return unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (b *file) Extents(off, n int64) ([]nbd.Extent, error) {
	return []nbd.Extent{{Offset: off, Length: n}}, nil
}

type resolver struct{ b *file }

func (r resolver) Open(context.Context, string) (*nbd.Export, error) {
	return &nbd.Export{Name: "", Backend: r.b, BlockSize: 4096, MultiConn: true}, nil
}

func (r resolver) List(context.Context) ([]nbd.ExportInfo, error) {
	return []nbd.ExportInfo{{Name: ""}}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:10809", "address to serve NBD on")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: nbdfile [-listen ADDR] FILE")
		os.Exit(2)
	}
	if err := run(*listen, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "nbdfile:", err)
		os.Exit(1)
	}
}

func run(addr, path string) error {
	// It serves FILE read-write to whoever connects, with no TLS and no
	// name to know: a benchmark's tool, for this machine only.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen address %s: only a loopback address (127.0.0.1, ::1) is allowed", addr)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := &nbd.Server{Resolver: resolver{&file{f: f, size: st.Size()}}}
	return s.Serve(l)
}
