package nbdtest

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewind-dev/rewind/nbd"
)

var be = binary.BigEndian

// Client is a raw NBD client for tests. Its high-level calls check what
// the server sends; its low-level calls (Send, SendOptionHeader, Write)
// send whatever bytes a test wants, malformed ones included. It is not
// safe for concurrent use, except that one goroutine may send while
// another receives.
type Client struct {
	Conn net.Conn
	r    *bufio.Reader

	// Structured is set once structured replies were acknowledged (and
	// cleared by StartTLS): it tells how to parse READ replies.
	Structured bool
	// HandshakeFlags are the server's handshake flags from Greeting.
	HandshakeFlags uint16

	mu      sync.Mutex             // guards pending: Send and ReadReply may run in parallel
	pending map[uint64]pendingRead // cookie -> READ awaiting its reply
	partial map[uint64]*Reply      // structured replies not DONE yet
	cookie  atomic.Uint64
}

// Dial connects to addr.
func Dial(addr string) (*Client, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return NewClient(c), nil
}

// NewClient wraps a connection.
func NewClient(c net.Conn) *Client {
	return &Client{
		Conn:    c,
		r:       bufio.NewReader(c),
		pending: make(map[uint64]pendingRead),
		partial: make(map[uint64]*Reply),
	}
}

func (c *Client) Close() error { return c.Conn.Close() }

// Write sends raw bytes.
func (c *Client) Write(b []byte) error {
	_, err := c.Conn.Write(b)
	return err
}

// ReadFull reads exactly n raw bytes.
func (c *Client) ReadFull(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c.r, b)
	return b, err
}

// ExpectClosed reads until the server closes the connection, and fails if
// that takes longer than d. Bytes read on the way are returned.
func (c *Client) ExpectClosed(d time.Duration) ([]byte, error) {
	c.Conn.SetReadDeadline(time.Now().Add(d))
	defer c.Conn.SetReadDeadline(time.Time{})
	b, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return b, fmt.Errorf("server did not close the connection within %v: %w", d, err)
	}
	return b, nil // EOF, reset, or a TLS alert: closed
}

// Greeting reads and checks the server's fixed newstyle greeting.
func (c *Client) Greeting() (uint16, error) {
	b, err := c.ReadFull(18)
	if err != nil {
		return 0, fmt.Errorf("read greeting: %w", err)
	}
	if be.Uint64(b) != nbd.MagicNBD || be.Uint64(b[8:]) != nbd.MagicIHaveOpt {
		return 0, fmt.Errorf("bad greeting % x", b)
	}
	c.HandshakeFlags = be.Uint16(b[16:])
	return c.HandshakeFlags, nil
}

// Start reads the greeting and sends client flags.
func (c *Client) Start(clientFlags uint32) error {
	if _, err := c.Greeting(); err != nil {
		return err
	}
	return c.Write(be.AppendUint32(nil, clientFlags))
}

// StartFixed is Start with fixed newstyle and no zeroes.
func (c *Client) StartFixed() error {
	return c.Start(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
}

// SendOptionHeader sends an option header claiming length bytes of data,
// without the data.
func (c *Client) SendOptionHeader(opt, length uint32) error {
	b := be.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = be.AppendUint32(b, opt)
	return c.Write(be.AppendUint32(b, length))
}

// SendOption sends an option and its data in one write.
func (c *Client) SendOption(opt uint32, data []byte) error {
	b := be.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return c.Write(append(b, data...))
}

// OptionReply is one reply to an option.
type OptionReply struct {
	Opt, Type uint32
	Data      []byte
}

// IsError reports whether the reply is an error reply.
func (r OptionReply) IsError() bool { return r.Type&nbd.RepFlagError != 0 }

// OptionError is an error reply, as an error.
type OptionError struct {
	Type uint32
	Msg  string
}

func (e *OptionError) Error() string { return fmt.Sprintf("option error %#x: %s", e.Type, e.Msg) }

// ReadOptionReply reads one option reply.
func (c *Client) ReadOptionReply() (OptionReply, error) {
	h, err := c.ReadFull(20)
	if err != nil {
		return OptionReply{}, fmt.Errorf("read option reply: %w", err)
	}
	if m := be.Uint64(h); m != nbd.MagicOptReply {
		return OptionReply{}, fmt.Errorf("bad option reply magic %#x", m)
	}
	r := OptionReply{Opt: be.Uint32(h[8:]), Type: be.Uint32(h[12:])}
	n := be.Uint32(h[16:])
	if n > 16<<20 {
		return r, fmt.Errorf("option reply of %d bytes", n)
	}
	r.Data, err = c.ReadFull(int(n))
	return r, err
}

// Option sends an option and reads its replies up to the final one (ACK
// or an error). The final reply is last in the slice; an error reply is
// also returned as an *OptionError.
func (c *Client) Option(opt uint32, data []byte) ([]OptionReply, error) {
	if err := c.SendOption(opt, data); err != nil {
		return nil, err
	}
	var replies []OptionReply
	for {
		r, err := c.ReadOptionReply()
		if err != nil {
			return replies, err
		}
		if r.Opt != opt {
			return replies, fmt.Errorf("reply to option %d while waiting for %d", r.Opt, opt)
		}
		replies = append(replies, r)
		switch {
		case r.IsError():
			return replies, &OptionError{Type: r.Type, Msg: string(r.Data)}
		case r.Type == nbd.RepAck:
			return replies, nil
		}
	}
}

// StructuredReplies negotiates structured replies.
func (c *Client) StructuredReplies() error {
	if _, err := c.Option(nbd.OptStructuredReply, nil); err != nil {
		return err
	}
	c.Structured = true
	return nil
}

// MetaData encodes the data of a meta context option.
func MetaData(export string, queries ...string) []byte {
	b := be.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = be.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// MetaContexts sends LIST or SET_META_CONTEXT and returns the contexts
// replied, name to id.
func (c *Client) MetaContexts(opt uint32, export string, queries ...string) (map[string]uint32, error) {
	replies, err := c.Option(opt, MetaData(export, queries...))
	if err != nil {
		return nil, err
	}
	ctxs := make(map[string]uint32)
	for _, r := range replies {
		if r.Type == nbd.RepMetaContext {
			if len(r.Data) < 4 {
				return nil, fmt.Errorf("short meta context reply")
			}
			ctxs[string(r.Data[4:])] = be.Uint32(r.Data)
		}
	}
	return ctxs, nil
}

// InfoData encodes the data of NBD_OPT_INFO and NBD_OPT_GO.
func InfoData(name string, infos ...uint16) []byte {
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// ExportInfo is what INFO, GO or EXPORT_NAME told about an export.
type ExportInfo struct {
	Size                          uint64
	Flags                         uint16
	MinBlock, PrefBlock, MaxBlock uint32 // zero unless NBD_INFO_BLOCK_SIZE came
	Name, Description             string
	HaveName, HaveDescription     bool
}

// Go sends NBD_OPT_GO and parses its replies.
func (c *Client) Go(name string, infos ...uint16) (ExportInfo, error) {
	return c.infoGo(nbd.OptGo, name, infos)
}

// Info sends NBD_OPT_INFO and parses its replies.
func (c *Client) Info(name string, infos ...uint16) (ExportInfo, error) {
	return c.infoGo(nbd.OptInfo, name, infos)
}

func (c *Client) infoGo(opt uint32, name string, infos []uint16) (ExportInfo, error) {
	var info ExportInfo
	replies, err := c.Option(opt, InfoData(name, infos...))
	if err != nil {
		return info, err
	}
	haveExport := false
	for _, r := range replies {
		if r.Type != nbd.RepInfo {
			continue
		}
		if len(r.Data) < 2 {
			return info, fmt.Errorf("short info reply")
		}
		d := r.Data[2:]
		switch be.Uint16(r.Data) {
		case nbd.InfoExport:
			if len(d) != 10 {
				return info, fmt.Errorf("NBD_INFO_EXPORT of %d bytes", len(r.Data))
			}
			info.Size, info.Flags, haveExport = be.Uint64(d), be.Uint16(d[8:]), true
		case nbd.InfoBlockSize:
			if len(d) != 12 {
				return info, fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.Data))
			}
			info.MinBlock, info.PrefBlock, info.MaxBlock = be.Uint32(d), be.Uint32(d[4:]), be.Uint32(d[8:])
		case nbd.InfoName:
			info.Name, info.HaveName = string(d), true
		case nbd.InfoDescription:
			info.Description, info.HaveDescription = string(d), true
		}
	}
	if !haveExport {
		return info, fmt.Errorf("no NBD_INFO_EXPORT before ACK")
	}
	return info, nil
}

// ExportName sends NBD_OPT_EXPORT_NAME and reads the reply; noZeroes says
// whether the client negotiated NBD_FLAG_C_NO_ZEROES.
func (c *Client) ExportName(name string, noZeroes bool) (ExportInfo, error) {
	if err := c.SendOption(nbd.OptExportName, []byte(name)); err != nil {
		return ExportInfo{}, err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b, err := c.ReadFull(n)
	if err != nil {
		return ExportInfo{}, fmt.Errorf("read EXPORT_NAME reply: %w", err)
	}
	for _, z := range b[10:] {
		if z != 0 {
			return ExportInfo{}, fmt.Errorf("nonzero padding after EXPORT_NAME")
		}
	}
	return ExportInfo{Size: be.Uint64(b), Flags: be.Uint16(b[8:])}, nil
}

// List sends NBD_OPT_LIST and returns the export names and descriptions.
func (c *Client) List() (map[string]string, error) {
	replies, err := c.Option(nbd.OptList, nil)
	if err != nil {
		return nil, err
	}
	exports := make(map[string]string)
	for _, r := range replies {
		if r.Type != nbd.RepServer {
			continue
		}
		if len(r.Data) < 4 || uint64(be.Uint32(r.Data)) > uint64(len(r.Data)-4) {
			return nil, fmt.Errorf("malformed NBD_REP_SERVER")
		}
		n := be.Uint32(r.Data)
		exports[string(r.Data[4:4+n])] = string(r.Data[4+n:])
	}
	return exports, nil
}

// StartTLS negotiates STARTTLS and runs the TLS handshake. Like a server,
// the client forgets structured replies.
func (c *Client) StartTLS(cfg *tls.Config) error {
	if _, err := c.Option(nbd.OptStartTLS, nil); err != nil {
		return err
	}
	if c.r.Buffered() != 0 {
		return fmt.Errorf("server sent %d bytes after STARTTLS ACK", c.r.Buffered())
	}
	tc := tls.Client(c.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.Conn = tc
	c.r = bufio.NewReader(tc)
	c.Structured = false
	return nil
}
