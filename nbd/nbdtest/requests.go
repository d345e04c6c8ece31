package nbdtest

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/rewind-dev/rewind/nbd"
)

type pendingRead struct {
	off    uint64
	length uint32
}

// Request encodes a request header followed by payload.
func Request(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) []byte {
	b := be.AppendUint32(make([]byte, 0, 28+len(payload)), nbd.MagicRequest)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint64(b, off)
	b = be.AppendUint32(b, length)
	return append(b, payload...)
}

// NextCookie returns a cookie not used before on this client.
func (c *Client) NextCookie() uint64 { return c.cookie.Add(1) }

// Send sends one request (and payload, which may differ from length to
// test the server) in one write. READs are remembered so that their
// replies can be parsed.
func (c *Client) Send(flags, typ uint16, cookie, off uint64, length uint32, payload []byte) error {
	if typ == nbd.CmdRead {
		c.mu.Lock()
		c.pending[cookie] = pendingRead{off, length}
		c.mu.Unlock()
	}
	return c.Write(Request(flags, typ, cookie, off, length, payload))
}

// ExpectRead registers a READ sent with Write (raw), so that its reply can
// be parsed.
func (c *Client) ExpectRead(cookie, off uint64, length uint32) {
	c.mu.Lock()
	c.pending[cookie] = pendingRead{off, length}
	c.mu.Unlock()
}

// Chunk is one structured reply chunk.
type Chunk struct {
	Flags, Type uint16
	Payload     []byte
}

// Descriptor is one block status extent.
type Descriptor struct{ Length, Flags uint32 }

// Reply is a complete reply: a simple reply, or structured chunks up to
// the one marked DONE.
type Reply struct {
	Cookie    uint64
	Simple    bool
	Errno     uint32 // 0, the simple reply's error, or the first error chunk's
	Msg       string // the first error chunk's message
	Chunks    []Chunk
	Data      []byte // READ data, holes as zeroes
	Holes     int    // OFFSET_HOLE chunks
	DataChunk int    // OFFSET_DATA chunks
	ContextID uint32
	Extents   []Descriptor

	read    pendingRead
	covered [][2]uint64 // byte ranges covered by content chunks
}

// Err returns the reply's error as an nbd.Errno, or nil.
func (r *Reply) Err() error {
	if r.Errno == 0 {
		return nil
	}
	return nbd.Errno(r.Errno)
}

// ReadReply reads messages until one reply is complete and returns it. It
// checks the structure of what it reads (magic, chunk lengths, content
// chunks within the request and not overlapping, a successful READ fully
// covered, nonzero extents) and returns an error on any violation.
func (c *Client) ReadReply() (*Reply, error) {
	for {
		h, err := c.ReadFull(4)
		if err != nil {
			return nil, err
		}
		switch m := be.Uint32(h); m {
		case nbd.MagicSimple:
			return c.readSimple()
		case nbd.MagicStructured:
			r, err := c.readChunk()
			if err != nil || r != nil {
				return r, err
			}
		default:
			return nil, fmt.Errorf("bad reply magic %#x", m)
		}
	}
}

func (c *Client) takePending(cookie uint64) (pendingRead, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[cookie]
	delete(c.pending, cookie)
	return p, ok
}

func (c *Client) readSimple() (*Reply, error) {
	b, err := c.ReadFull(12)
	if err != nil {
		return nil, err
	}
	r := &Reply{Simple: true, Errno: be.Uint32(b), Cookie: be.Uint64(b[4:])}
	p, isRead := c.takePending(r.Cookie)
	if isRead && c.Structured {
		return r, fmt.Errorf("simple reply to READ %#x with structured replies on", r.Cookie)
	}
	if isRead && r.Errno == 0 {
		r.Data, err = c.ReadFull(int(p.length))
	}
	return r, err
}

// readChunk reads one chunk; it returns the reply when the chunk is DONE.
func (c *Client) readChunk() (*Reply, error) {
	b, err := c.ReadFull(16)
	if err != nil {
		return nil, err
	}
	ch := Chunk{Flags: be.Uint16(b), Type: be.Uint16(b[2:])}
	cookie, n := be.Uint64(b[4:]), be.Uint32(b[12:])
	if n > 64<<20 {
		return nil, fmt.Errorf("chunk of %d bytes", n)
	}
	if ch.Payload, err = c.ReadFull(int(n)); err != nil {
		return nil, err
	}
	r := c.partial[cookie]
	if r == nil {
		r = &Reply{Cookie: cookie}
		r.read, _ = c.takePending(cookie)
		if r.read.length > 0 {
			r.Data = make([]byte, r.read.length)
		}
		c.partial[cookie] = r
	}
	r.Chunks = append(r.Chunks, ch)
	if err := r.addChunk(ch); err != nil {
		return nil, fmt.Errorf("cookie %#x: %w", cookie, err)
	}
	if ch.Flags&nbd.ReplyFlagDone == 0 {
		return nil, nil
	}
	delete(c.partial, cookie)
	return r, r.complete()
}

func (r *Reply) addChunk(ch Chunk) error {
	p := ch.Payload
	switch ch.Type {
	case nbd.ReplyTypeNone:
		if len(p) != 0 || ch.Flags&nbd.ReplyFlagDone == 0 {
			return fmt.Errorf("NONE chunk with %d bytes, flags %#x", len(p), ch.Flags)
		}
	case nbd.ReplyTypeOffsetData:
		if len(p) < 9 {
			return fmt.Errorf("OFFSET_DATA of %d bytes", len(p))
		}
		r.DataChunk++
		off := be.Uint64(p)
		if err := r.cover(off, uint64(len(p)-8)); err != nil {
			return err
		}
		copy(r.Data[off-r.read.off:], p[8:])
	case nbd.ReplyTypeOffsetHole:
		if len(p) != 12 || be.Uint32(p[8:]) == 0 {
			return fmt.Errorf("bad OFFSET_HOLE % x", p)
		}
		r.Holes++
		return r.cover(be.Uint64(p), uint64(be.Uint32(p[8:])))
	case nbd.ReplyTypeBlockStatus:
		if len(p) < 12 || (len(p)-4)%8 != 0 {
			return fmt.Errorf("BLOCK_STATUS of %d bytes", len(p))
		}
		if r.Extents != nil {
			return fmt.Errorf("two BLOCK_STATUS chunks for one context")
		}
		r.ContextID = be.Uint32(p)
		for q := p[4:]; len(q) > 0; q = q[8:] {
			d := Descriptor{be.Uint32(q), be.Uint32(q[4:])}
			if d.Length == 0 {
				return fmt.Errorf("zero-length extent")
			}
			r.Extents = append(r.Extents, d)
		}
	case nbd.ReplyTypeError, nbd.ReplyTypeErrorOffset:
		if len(p) < 6 {
			return fmt.Errorf("error chunk of %d bytes", len(p))
		}
		errno, ml := be.Uint32(p), int(be.Uint16(p[4:]))
		extra := 0
		if ch.Type == nbd.ReplyTypeErrorOffset {
			extra = 8
		}
		if errno == 0 || ml > len(p)-6-extra || ml > 4096 {
			return fmt.Errorf("bad error chunk errno=%d msglen=%d len=%d", errno, ml, len(p))
		}
		if r.Errno == 0 {
			r.Errno, r.Msg = errno, string(p[6:6+ml])
		}
	default:
		return fmt.Errorf("unknown chunk type %d", ch.Type)
	}
	return nil
}

// cover records a content chunk, checking it lies in the request and
// overlaps nothing sent before.
func (r *Reply) cover(off, n uint64) error {
	if r.read.length == 0 {
		return fmt.Errorf("content chunk in a reply that is not to a READ")
	}
	end := r.read.off + uint64(r.read.length)
	if off < r.read.off || off > end || n > end-off {
		return fmt.Errorf("content chunk %d+%d outside request %d+%d", off, n, r.read.off, r.read.length)
	}
	for _, c := range r.covered {
		if off < c[1] && c[0] < off+n {
			return fmt.Errorf("content chunk %d+%d overlaps %d-%d", off, n, c[0], c[1])
		}
	}
	r.covered = append(r.covered, [2]uint64{off, off + n})
	return nil
}

// complete checks a finished structured reply.
func (r *Reply) complete() error {
	if r.read.length == 0 || r.Errno != 0 {
		return nil
	}
	slices.SortFunc(r.covered, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	next := r.read.off
	for _, c := range r.covered {
		if c[0] != next {
			return fmt.Errorf("READ reply leaves %d-%d uncovered", next, c[0])
		}
		next = c[1]
	}
	if next != r.read.off+uint64(r.read.length) {
		return fmt.Errorf("READ reply covers up to %d of %d+%d", next, r.read.off, r.read.length)
	}
	return nil
}

// Do sends a request with a fresh cookie and reads its reply, which must
// be the next one.
func (c *Client) Do(flags, typ uint16, off uint64, length uint32, payload []byte) (*Reply, error) {
	cookie := c.NextCookie()
	if err := c.Send(flags, typ, cookie, off, length, payload); err != nil {
		return nil, err
	}
	r, err := c.ReadReply()
	if err == nil && r.Cookie != cookie {
		err = fmt.Errorf("reply for cookie %#x, want %#x", r.Cookie, cookie)
	}
	return r, err
}

// Read reads n bytes at off.
func (c *Client) Read(off uint64, n uint32, flags uint16) (*Reply, error) {
	return c.Do(flags, nbd.CmdRead, off, n, nil)
}

// WriteAt writes p at off.
func (c *Client) WriteAt(p []byte, off uint64, flags uint16) (*Reply, error) {
	return c.Do(flags, nbd.CmdWrite, off, uint32(len(p)), p)
}

// BlockStatus asks for block status of n bytes at off.
func (c *Client) BlockStatus(off uint64, n uint32, flags uint16) (*Reply, error) {
	return c.Do(flags, nbd.CmdBlockStatus, off, n, nil)
}

// Disconnect sends NBD_CMD_DISC and waits for the server to close.
func (c *Client) Disconnect() error {
	if err := c.Send(0, nbd.CmdDisc, c.NextCookie(), 0, 0, nil); err != nil {
		return err
	}
	b, err := io.ReadAll(c.r)
	if len(b) != 0 {
		return fmt.Errorf("%d bytes after NBD_CMD_DISC", len(b))
	}
	_ = err // a reset is as good as a close
	return nil
}
