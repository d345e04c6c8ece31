package nbd

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawWritev writes bufs to a socket with writev issued as raw system
// calls, consuming *bufs, and waits on the runtime's poller only when the
// socket is full.
//
// Why: the socket is non-blocking, so a writev never waits; it copies
// the replies into the socket and, over loopback, hands them to the
// reader on the way. A call through the scheduler (net.Buffers.WriteTo)
// that lasts longer than the scheduler's 20 µs tick, as a writev of a
// few hundred kilobytes does, has its processor handed to another thread
// and then taken back, and keeps Go's monitor thread waking every 20 µs:
// on a virtual machine, where each such wake-up and switch is dear, that
// was about a tenth of the daemon's CPU on a read of a whole disk. Raw,
// the call keeps its processor for the length of the copy. Interleaved
// runs of nbdcopy of the benchmark image (fourteen each, medians): cold
// 1.19 s against 1.26 s, warm 0.79 s against 0.86 s.
//
// With stall > 0, a wait for the socket to drain during which no byte
// goes out for stall fails with an error wrapping os.ErrDeadlineExceeded.
// The write deadline of nc is set only when the socket is full, set again
// when it fills after bytes went out, and lifted at the end: a write that
// never waits costs nothing more, and one that waits adds no system call.
func rawWritev(rc syscall.RawConn, bufs *net.Buffers, nc net.Conn, stall time.Duration) error {
	var iov [64]unix.Iovec
	var werr error
	// armed: the deadline is set; moved: bytes went out since.
	var armed, moved bool
	write := func(fd uintptr) bool {
		for len(*bufs) > 0 {
			v := iov[:0]
			for _, b := range *bufs {
				if len(v) == len(iov) {
					break
				}
				if len(b) > 0 {
					e := unix.Iovec{Base: &b[0]}
					e.SetLen(len(b))
					v = append(v, e)
				}
			}
			if len(v) == 0 {
				*bufs = nil
				return true
			}
			n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
			switch errno {
			case 0:
				if raceEnabled {
					raceReadBuffers(*bufs, int(n))
				}
				consume(bufs, int(n))
				moved = true
			case unix.EINTR:
			case unix.EAGAIN:
				if stall > 0 && (!armed || moved) {
					// Not set yet, or bytes went out since: start it
					// again. Setting it from here is safe: it takes
					// none of the locks rc.Write holds.
					nc.SetWriteDeadline(time.Now().Add(stall))
					armed, moved = true, false
				}
				return false // full: wait until the socket is writable
			default:
				werr = errno
				return true
			}
		}
		return true
	}
	if err := rc.Write(write); err != nil {
		return err
	}
	if armed {
		nc.SetWriteDeadline(time.Time{})
	}
	return werr
}

// stallWriter writes to a connection that cannot writev (TLS) in pieces,
// each under a write deadline of stall from its start: a client that
// takes no byte for stall fails the write (os.ErrDeadlineExceeded), one
// that keeps taking bytes, however slowly, does not.
type stallWriter struct {
	nc    net.Conn
	stall time.Duration
}

// stallPiece is what a stallWriter writes under one deadline: a client
// must take 64 KiB within the stall, 546 bytes a second at the default.
const stallPiece = 64 << 10

func (w *stallWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		w.nc.SetWriteDeadline(time.Now().Add(w.stall))
		m, err := w.nc.Write(p[:min(len(p), stallPiece)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	w.nc.SetWriteDeadline(time.Time{})
	return n, nil
}

// raceReadBuffers tells the race detector that the first n bytes of bufs
// were read (by a writev).
func raceReadBuffers(bufs net.Buffers, n int) {
	for _, b := range bufs {
		if n <= 0 {
			return
		}
		raceRead(b[:min(n, len(b))])
		n -= len(b)
	}
}

// consume drops the first n bytes of bufs, and the buffers left empty.
func consume(bufs *net.Buffers, n int) {
	for n > 0 && len(*bufs) > 0 {
		if n < len((*bufs)[0]) {
			(*bufs)[0] = (*bufs)[0][n:]
			return
		}
		n -= len((*bufs)[0])
		*bufs = (*bufs)[1:]
	}
	for len(*bufs) > 0 && len((*bufs)[0]) == 0 {
		*bufs = (*bufs)[1:]
	}
}

// rawReader reads a socket with read(2) issued as raw system calls, and
// waits on the runtime's poller only when the socket is empty; deadlines
// hold as for the connection's own Read.
//
// Why: as for rawWritev. A read through the scheduler enters and leaves a
// system call; at queue depth 32, with replies served from memory, those
// reads kept Go's monitor thread waking every 20 µs, and its wake-ups
// and the thread switches they cause were a tenth of the daemon's CPU.
type rawReader struct{ rc syscall.RawConn }

// newSocketReader returns a raw reader of nc when it is a TCP or Unix
// socket, else nc itself.
func newSocketReader(nc net.Conn) io.Reader {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		if rc, err := nc.(syscall.Conn).SyscallConn(); err == nil {
			return rawReader{rc}
		}
	}
	return nc
}

func (r rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	read := func(fd uintptr) bool {
		for {
			m, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case 0:
				if n = int(m); n == 0 {
					rerr = io.EOF
				}
				raceWritten(p[:n])
				return true
			case unix.EINTR:
			case unix.EAGAIN:
				return false // empty: wait until the socket is readable
			default:
				rerr = os.NewSyscallError("read", errno)
				return true
			}
		}
	}
	if err := r.rc.Read(read); err != nil {
		return 0, err
	}
	return n, rerr
}
