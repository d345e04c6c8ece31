package client

import (
	"fmt"
	"io"
	"math"

	"github.com/rewind-dev/rewind/nbd"
)

var (
	_ io.ReaderAt = (*Conn)(nil)
	_ io.WriterAt = (*Conn)(nil)
)

// zeroes is written where the server cannot WRITE_ZEROES; never modified.
var zeroes = make([]byte, 1<<20)

// check validates a request's range and alignment.
func (c *Conn) check(op string, off, n int64) error {
	if off < 0 || n < 0 || off > c.Size() || n > c.Size()-off {
		return fmt.Errorf("%w: %s of %d bytes at %d, export of %d bytes", ErrOutOfRange, op, n, off, c.Size())
	}
	if m := int64(c.info.sizes.Min); off%m != 0 || (n%m != 0 && off+n != c.Size()) {
		return fmt.Errorf("%w: %s of %d bytes at %d, minimum block size %d", ErrUnaligned, op, n, off, m)
	}
	return nil
}

func (c *Conn) writable(op string) error {
	if c.info.ReadOnly() {
		return fmt.Errorf("%w: %s refused on %s", ErrReadOnly, op, c.target)
	}
	return nil
}

// pieces sends [off, off+n) as requests of at most max bytes, all in
// flight at once, and waits for them. It returns the bytes done before
// the first failed piece, and that piece's error.
func (c *Conn) pieces(n, max int64, send func(off, n int64) *call) (int64, error) {
	var calls []*call
	for done := int64(0); done < n; done += max {
		calls = append(calls, send(done, min(max, n-done)))
	}
	var ok int64
	var first error
	for _, cl := range calls {
		if err := c.wait(cl); err != nil && first == nil {
			first = err
		} else if first == nil {
			ok += cl.length
		}
	}
	return ok, first
}

// ReadAt reads len(p) bytes at off. A read past the end of the export
// reads what there is and returns io.EOF.
func (c *Conn) ReadAt(p []byte, off int64) (int, error) {
	var eof error
	if off >= 0 && off+int64(len(p)) > c.Size() {
		p = p[:max(0, c.Size()-off)]
		eof = io.EOF
	}
	if err := c.check("read", off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := c.pieces(int64(len(p)), int64(c.info.maxPayload), func(o, n int64) *call {
		return c.start("read", nbd.CmdRead, 0, off+o, n, nil, p[o:o+n])
	})
	if err != nil {
		return int(n), err
	}
	return int(n), eof
}

// WriteAt writes p at off. A write past the end of the export fails
// whole (ErrOutOfRange) and writes nothing.
func (c *Conn) WriteAt(p []byte, off int64) (int, error) {
	n, err := c.write(p, off, 0)
	return int(n), err
}

// WriteAtFUA writes p at off and returns once it is persisted (NBD's FUA;
// a Flush after the write when the server lacks FUA).
func (c *Conn) WriteAtFUA(p []byte, off int64) (int, error) {
	if !c.info.CanFUA() {
		n, err := c.write(p, off, 0)
		if err == nil {
			err = c.Flush()
		}
		return int(n), err
	}
	n, err := c.write(p, off, nbd.CmdFlagFUA)
	return int(n), err
}

func (c *Conn) write(p []byte, off int64, flags uint16) (int64, error) {
	if err := c.writable("write"); err != nil {
		return 0, err
	}
	if err := c.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	return c.pieces(int64(len(p)), int64(c.info.maxPayload), func(o, n int64) *call {
		return c.start("write", nbd.CmdWrite, flags, off+o, n, p[o:o+n], nil)
	})
}

// WriteZeroes makes [off, off+n) read as zeroes. With noHole the range
// stays allocated (NBD_CMD_FLAG_NO_HOLE). A server without WRITE_ZEROES
// gets zeroes written.
func (c *Conn) WriteZeroes(off, n int64, noHole bool) error {
	if err := c.writable("write_zeroes"); err != nil {
		return err
	}
	if err := c.check("write_zeroes", off, n); err != nil {
		return err
	}
	if !c.info.CanWriteZeroes() {
		piece := min(int64(len(zeroes)), int64(c.info.maxPayload))
		_, err := c.pieces(n, piece, func(o, n int64) *call {
			return c.start("write", nbd.CmdWrite, 0, off+o, n, zeroes[:n], nil)
		})
		return err
	}
	var flags uint16
	if noHole {
		flags = nbd.CmdFlagNoHole
	}
	// As qemu does: zeroes in pieces no larger than a payload, which
	// every server accepts.
	_, err := c.pieces(n, int64(c.info.maxPayload), func(o, n int64) *call {
		return c.start("write_zeroes", nbd.CmdWriteZeroes, flags, off+o, n, nil, nil)
	})
	return err
}

// Trim tells the server that [off, off+n) is no longer needed; its
// content is undefined until written. It does nothing on a server
// without TRIM (trimming is advisory).
func (c *Conn) Trim(off, n int64) error {
	if err := c.writable("trim"); err != nil {
		return err
	}
	if err := c.check("trim", off, n); err != nil {
		return err
	}
	if !c.info.CanTrim() {
		return nil
	}
	max := int64(math.MaxInt32) / int64(c.info.sizes.Min) * int64(c.info.sizes.Min)
	_, err := c.pieces(n, max, func(o, n int64) *call {
		return c.start("trim", nbd.CmdTrim, 0, off+o, n, nil, nil)
	})
	return err
}

// Flush persists every write completed before it. It does nothing on a
// server without FLUSH (it has no write cache).
func (c *Conn) Flush() error {
	if !c.info.CanFlush() {
		return nil
	}
	return c.do("flush", nbd.CmdFlush, 0, 0, 0, nil, nil)
}
