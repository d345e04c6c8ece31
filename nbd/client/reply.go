package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/rewind-dev/rewind/nbd"
)

// maxStatusChunk caps a block status chunk: a context id and 128 Ki
// descriptors.
const maxStatusChunk = 4 + 8<<17

// maxErrorChunk caps an error chunk's payload: a 4096-byte message and
// its fixed fields.
const maxErrorChunk = 4096 + 14

// replyReader reads replies, simple and (when negotiated) structured,
// and completes the calls they answer. It runs on the reader goroutine.
type replyReader struct {
	r          io.Reader
	find       func(cookie uint64, last bool) *call
	structured bool
	scratch    [nbd.ChunkHeaderLen]byte
}

// run reads replies until an error; it never returns nil.
func (rr *replyReader) run() error {
	for {
		if _, err := io.ReadFull(rr.r, rr.scratch[:4]); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: the server closed the connection", ErrClosed)
			}
			return fmt.Errorf("%w: %v", ErrClosed, err)
		}
		var err error
		switch magic := binary.BigEndian.Uint32(rr.scratch[:4]); {
		case magic == nbd.MagicSimple:
			err = rr.simple()
		case magic == nbd.MagicStructured && rr.structured:
			err = rr.chunk()
		default:
			err = fmt.Errorf("%w: bad reply magic %#x", ErrProtocol, magic)
		}
		if err != nil {
			return err
		}
	}
}

func (rr *replyReader) read(b []byte) error {
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return fmt.Errorf("%w: read a reply: %v", ErrClosed, err)
	}
	return nil
}

// complete ends cl with err (if any) and returns err.
func complete(cl *call, err error) error {
	if cl.err == nil {
		cl.err = err
	}
	close(cl.done)
	return err
}

func (rr *replyReader) simple() error {
	b := (*[nbd.SimpleReplyLen]byte)(rr.scratch[:nbd.SimpleReplyLen])
	if err := rr.read(b[4:]); err != nil {
		return err
	}
	rep, _ := nbd.DecodeSimpleReply(b)
	cl := rr.find(rep.Cookie, true)
	if cl == nil {
		return fmt.Errorf("%w: reply to unknown request %d", ErrProtocol, rep.Cookie)
	}
	if cl.typ == nbd.CmdRead && rr.structured {
		return complete(cl, fmt.Errorf("%w: simple reply to a READ after structured replies were negotiated", ErrProtocol))
	}
	cl.errno = rep.Errno
	if rep.Errno == 0 && cl.typ == nbd.CmdRead {
		if err := rr.read(cl.buf); err != nil {
			return complete(cl, err)
		}
	}
	return complete(cl, nil)
}

// chunk reads one structured reply chunk. Content must lie within the
// request; a READ that ends without error must have been covered whole.
func (rr *replyReader) chunk() error {
	b := &rr.scratch
	if err := rr.read(b[4:]); err != nil {
		return err
	}
	h, _ := nbd.DecodeChunkHeader(b)
	done := h.Flags&nbd.ReplyFlagDone != 0
	cl := rr.find(h.Cookie, done)
	if cl == nil {
		return fmt.Errorf("%w: reply chunk for unknown request %d", ErrProtocol, h.Cookie)
	}
	// end completes cl early, on an error that ends the connection.
	end := func(err error) error {
		if !done {
			rr.find(h.Cookie, true)
		}
		return complete(cl, err)
	}
	fail := func(format string, args ...any) error {
		return end(fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...))
	}
	switch {
	case h.Type == nbd.ReplyTypeNone:
		if h.Length != 0 || !done {
			return fail("NONE chunk with length %d or without DONE", h.Length)
		}
	case h.Type == nbd.ReplyTypeOffsetData || h.Type == nbd.ReplyTypeOffsetHole:
		if cl.typ != nbd.CmdRead {
			return fail("content chunk for a request other than READ")
		}
		if err := rr.content(cl, h); err != nil {
			return end(err)
		}
	case h.Type == nbd.ReplyTypeBlockStatus:
		if cl.typ != nbd.CmdBlockStatus {
			return fail("block status chunk for a request other than BLOCK_STATUS")
		}
		if h.Length < 12 || (h.Length-4)%8 != 0 || h.Length > maxStatusChunk {
			return fail("block status chunk of %d bytes", h.Length)
		}
		p := make([]byte, h.Length)
		if err := rr.read(p); err != nil {
			return end(err)
		}
		if binary.BigEndian.Uint32(p) == cl.metaID {
			for d := p[4:]; len(d) >= 8; d = d[8:] {
				cl.extents = append(cl.extents, Extent{Length: int64(binary.BigEndian.Uint32(d)), Flags: binary.BigEndian.Uint32(d[4:])})
			}
		}
	case h.Type&(1<<15) != 0:
		if h.Length < 6 || h.Length > maxErrorChunk {
			return fail("error chunk of %d bytes", h.Length)
		}
		p := make([]byte, h.Length)
		if err := rr.read(p); err != nil {
			return end(err)
		}
		if int(binary.BigEndian.Uint16(p[4:])) > len(p)-6 {
			return fail("error message longer than its chunk")
		}
		errno := nbd.Errno(binary.BigEndian.Uint32(p))
		if errno == 0 {
			errno = nbd.EINVAL
		}
		if cl.errno == 0 {
			cl.errno = errno
		}
	default:
		return fail("unexpected chunk type %d", h.Type)
	}
	if !done {
		return nil
	}
	if cl.typ == nbd.CmdRead && cl.errno == 0 && cl.covered != cl.length {
		return complete(cl, fmt.Errorf("%w: READ answered with %d of %d bytes", ErrProtocol, cl.covered, cl.length))
	}
	return complete(cl, nil)
}

// content reads an OFFSET_DATA or OFFSET_HOLE chunk into cl's buffer.
func (rr *replyReader) content(cl *call, h nbd.ChunkHeader) error {
	var off [12]byte
	if h.Type == nbd.ReplyTypeOffsetHole && h.Length != 12 || h.Type == nbd.ReplyTypeOffsetData && h.Length < 9 {
		return fmt.Errorf("%w: content chunk of %d bytes", ErrProtocol, h.Length)
	}
	n := int64(h.Length) - 8
	if err := rr.read(off[:8]); err != nil {
		return err
	}
	if h.Type == nbd.ReplyTypeOffsetHole {
		if err := rr.read(off[8:]); err != nil {
			return err
		}
		n = int64(binary.BigEndian.Uint32(off[8:]))
	}
	start := binary.BigEndian.Uint64(off[:8])
	if n == 0 || start < uint64(cl.off) || start-uint64(cl.off) > uint64(cl.length) || n > cl.length-int64(start-uint64(cl.off)) {
		return fmt.Errorf("%w: chunk of %d bytes at %d outside the READ of %d at %d", ErrProtocol, n, start, cl.length, cl.off)
	}
	dst := cl.buf[start-uint64(cl.off):][:n]
	cl.covered += n
	if h.Type == nbd.ReplyTypeOffsetHole {
		clear(dst)
		return nil
	}
	return rr.read(dst)
}
