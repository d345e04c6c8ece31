package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"time"

	"github.com/rewind-dev/rewind/nbd"
)

// maxOptionReply caps the data of one option reply the client accepts.
const maxOptionReply = 64 << 10

// handshake is the state of one negotiation.
type handshake struct {
	nc         net.Conn
	br         *bufio.Reader
	t          Target
	noZeros    bool
	structured bool
}

// Handshake negotiates the export t.Export over nc (fixed newstyle,
// STARTTLS when t.TLS, NBD_OPT_GO with NBD_OPT_EXPORT_NAME as fallback)
// and returns the connection in transmission. ctx bounds the handshake.
// On error the caller still owns nc.
func Handshake(ctx context.Context, nc net.Conn, t Target, opts Options) (*Conn, error) {
	if len(t.Export) > maxNameLen {
		return nil, fmt.Errorf("%w: export name longer than %d bytes", ErrBadURI, maxNameLen)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	h := &handshake{nc: nc, br: bufio.NewReader(nc), t: t}
	info, err := h.run(ctx, opts)
	if err != nil {
		// The socket's deadlines come from ctx only, and may fire a moment
		// before ctx reports its own.
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			cause := context.Cause(ctx)
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			err = fmt.Errorf("nbd client: the handshake with %s did not finish: %w; check that it is an NBD server", t, cause)
		}
		return nil, err
	}
	if !stop() {
		return nil, fmt.Errorf("nbd client: handshake with %s: %w", t, context.Cause(ctx))
	}
	h.nc.SetDeadline(time.Time{})
	c := newConn(h.nc, h.br, info, t, h.structured)
	if opts.Writable && info.ReadOnly() {
		c.Close()
		return nil, fmt.Errorf("%w: %s; writes need a writable export (qemu-nbd without -r, an export not marked read-only)", ErrReadOnly, t)
	}
	return c, nil
}

func (h *handshake) run(ctx context.Context, opts Options) (Info, error) {
	var g [nbd.GreetingLen]byte
	if _, err := io.ReadFull(h.br, g[:]); err != nil {
		return Info{}, h.ioErr("read the greeting", err)
	}
	flags, ok := nbd.DecodeGreeting(&g)
	if !ok {
		return Info{}, fmt.Errorf("%w: %s is not a newstyle NBD server (bad greeting)", ErrProtocol, h.t)
	}
	fixed := flags&nbd.FlagFixedNewstyle != 0
	var cflags uint32
	if fixed {
		cflags |= nbd.FlagCFixedNewstyle
	}
	if flags&nbd.FlagNoZeroes != 0 {
		cflags |= nbd.FlagCNoZeroes
		h.noZeros = true
	}
	if err := h.write(be32(cflags)); err != nil {
		return Info{}, err
	}
	if h.t.TLS {
		if !fixed {
			return Info{}, fmt.Errorf("%w: %s does not offer TLS (no fixed newstyle)", ErrProtocol, h.t)
		}
		if err := h.startTLS(ctx, opts); err != nil {
			return Info{}, err
		}
	}
	if !fixed {
		return h.exportName()
	}
	if !opts.SimpleReplies {
		if err := h.structuredReplies(); err != nil {
			return Info{}, err
		}
	}
	var meta map[string]uint32
	if len(opts.MetaContexts) > 0 {
		if !h.structured {
			return Info{}, fmt.Errorf("%w: %s: block status needs structured replies, which the server did not agree to", ErrProtocol, h.t)
		}
		var err error
		if meta, err = h.setMetaContexts(opts.MetaContexts); err != nil {
			return Info{}, err
		}
	}
	info, err := h.optGo()
	if errors.Is(err, errGoUnsupported) {
		return h.exportName()
	}
	info.meta = meta
	return info, err
}

// setMetaContexts selects the metadata contexts named, and returns the
// ids of those the server selected.
func (h *handshake) setMetaContexts(names []string) (map[string]uint32, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(h.t.Export)))
	data = append(data, h.t.Export...)
	data = binary.BigEndian.AppendUint32(data, uint32(len(names)))
	for _, n := range names {
		data = binary.BigEndian.AppendUint32(data, uint32(len(n)))
		data = append(data, n...)
	}
	meta := map[string]uint32{}
	err := h.option(nbd.OptSetMetaContext, data, func(typ uint32, d []byte) error {
		if typ != nbd.RepMetaContext || len(d) < 4 {
			return fmt.Errorf("%w: %s answered NBD_OPT_SET_META_CONTEXT with reply type %d", ErrProtocol, h.t, typ)
		}
		meta[string(d[4:])] = binary.BigEndian.Uint32(d)
		return nil
	})
	var oe *optionError
	if errors.As(err, &oe) {
		if oe.typ == nbd.RepErrUnknown {
			h.abort()
			return nil, fmt.Errorf("%w: %s has no export %q (%v); check the export name", ErrUnknownExport, h.t.hostString(), h.t.Export, oe)
		}
		return map[string]uint32{}, nil // no contexts: BLOCK_STATUS is unavailable
	}
	return meta, err
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

func (h *handshake) write(b []byte) error {
	if _, err := h.nc.Write(b); err != nil {
		return h.ioErr("send", err)
	}
	return nil
}

func (h *handshake) ioErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s closed the connection during the handshake (%s)", ErrProtocol, h.t, what)
	}
	return fmt.Errorf("nbd client: handshake with %s: %s: %w", h.t, what, err)
}

// option sends an option and reads its replies, calling each for every
// non-error reply until NBD_REP_ACK. An error reply is returned as
// *optionError.
func (h *handshake) option(opt uint32, data []byte, each func(typ uint32, data []byte) error) error {
	if err := h.write(nbd.AppendOption(nil, opt, data)); err != nil {
		return err
	}
	for {
		var b [nbd.OptionReplyLen]byte
		if _, err := io.ReadFull(h.br, b[:]); err != nil {
			return h.ioErr("read an option reply", err)
		}
		r, ok := nbd.DecodeOptionReply(&b)
		if !ok || r.Option != opt {
			return fmt.Errorf("%w: %s sent a malformed option reply", ErrProtocol, h.t)
		}
		if r.Length > maxOptionReply {
			return fmt.Errorf("%w: %s sent an option reply of %d bytes", ErrProtocol, h.t, r.Length)
		}
		data := make([]byte, r.Length)
		if _, err := io.ReadFull(h.br, data); err != nil {
			return h.ioErr("read an option reply", err)
		}
		switch {
		case r.Type&nbd.RepFlagError != 0:
			return &optionError{typ: r.Type, msg: oneLine(data)}
		case r.Type == nbd.RepAck:
			if len(data) != 0 {
				return fmt.Errorf("%w: %s sent data with NBD_REP_ACK", ErrProtocol, h.t)
			}
			return nil
		}
		if err := each(r.Type, data); err != nil {
			return err
		}
	}
}

// optionError is an error reply to an option.
type optionError struct {
	typ uint32
	msg string
}

func (e *optionError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("option error %#x", e.typ)
	}
	return e.msg
}

// oneLine makes a server's message safe to print on one line.
func oneLine(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

func (h *handshake) startTLS(ctx context.Context, opts Options) error {
	cfg, err := opts.tlsConfig(h.t)
	if err != nil {
		return err
	}
	err = h.option(nbd.OptStartTLS, nil, func(uint32, []byte) error {
		return fmt.Errorf("%w: %s answered STARTTLS with data", ErrProtocol, h.t)
	})
	var oe *optionError
	if errors.As(err, &oe) {
		h.abort()
		return fmt.Errorf("nbd client: %s does not offer TLS (%v); use nbd:// for a plain connection", h.t, oe)
	}
	if err != nil {
		return err
	}
	if h.br.Buffered() > 0 {
		return fmt.Errorf("%w: %s sent data after accepting STARTTLS", ErrProtocol, h.t)
	}
	tc := tls.Client(h.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nbd client: TLS with %s: %w", h.t, err)
	}
	h.nc = tc
	h.br = bufio.NewReader(tc)
	return nil
}

// abort ends the negotiation softly (NBD_OPT_ABORT), without waiting.
func (h *handshake) abort() {
	h.nc.Write(nbd.AppendOption(nil, nbd.OptAbort, nil))
}

// structuredReplies asks for structured replies; a server may say no.
func (h *handshake) structuredReplies() error {
	err := h.option(nbd.OptStructuredReply, nil, func(uint32, []byte) error {
		return fmt.Errorf("%w: %s answered NBD_OPT_STRUCTURED_REPLY with data", ErrProtocol, h.t)
	})
	var oe *optionError
	switch {
	case err == nil:
		h.structured = true
	case errors.As(err, &oe):
		// Simple replies, then.
	default:
		return err
	}
	return nil
}

var errGoUnsupported = errors.New("NBD_OPT_GO unsupported")

// optGo negotiates with NBD_OPT_GO, asking for block size constraints
// (which promises the server to honour them).
func (h *handshake) optGo() (Info, error) {
	var info Info
	var haveExport, haveSizes bool
	err := h.option(nbd.OptGo, nbd.AppendInfoRequest(nil, h.t.Export, nbd.InfoBlockSize), func(typ uint32, data []byte) error {
		if typ != nbd.RepInfo {
			return fmt.Errorf("%w: %s answered NBD_OPT_GO with reply type %d", ErrProtocol, h.t, typ)
		}
		it, exp, sizes, ok := nbd.DecodeInfo(data)
		if !ok {
			return fmt.Errorf("%w: %s sent malformed information %d", ErrProtocol, h.t, it)
		}
		switch it {
		case nbd.InfoExport:
			info.size, info.flags, haveExport = exp.Size, exp.Flags, true
		case nbd.InfoBlockSize:
			info.sizes, haveSizes = sizes, true
		}
		return nil
	})
	var oe *optionError
	if errors.As(err, &oe) {
		switch oe.typ {
		case nbd.RepErrUnsup:
			return Info{}, errGoUnsupported
		case nbd.RepErrUnknown:
			h.abort()
			return Info{}, fmt.Errorf("%w: %s has no export %q (%v); check the export name", ErrUnknownExport, h.t.hostString(), h.t.Export, oe)
		case nbd.RepErrTLSReqd:
			h.abort()
			return Info{}, fmt.Errorf("%w: %s (%v); use nbds://", ErrTLSRequired, h.t, oe)
		default:
			h.abort()
			return Info{}, fmt.Errorf("%w: %s: %v", ErrRefused, h.t, oe)
		}
	}
	if err != nil {
		return Info{}, err
	}
	if !haveExport {
		return Info{}, fmt.Errorf("%w: %s acknowledged NBD_OPT_GO without NBD_INFO_EXPORT", ErrProtocol, h.t)
	}
	return info.finish(haveSizes, h.t)
}

// exportName enters transmission with NBD_OPT_EXPORT_NAME, for servers
// without NBD_OPT_GO. The server can only refuse by hanging up.
func (h *handshake) exportName() (Info, error) {
	if err := h.write(nbd.AppendOption(nil, nbd.OptExportName, []byte(h.t.Export))); err != nil {
		return Info{}, err
	}
	var b [nbd.ExportNameReplyLen]byte
	if _, err := io.ReadFull(h.br, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Info{}, fmt.Errorf("%w: %s closed the connection on export %q (unknown or refused); check the export name", ErrUnknownExport, h.t.hostString(), h.t.Export)
		}
		return Info{}, h.ioErr("read the export", err)
	}
	exp := nbd.DecodeExportNameReply(&b)
	if !h.noZeros {
		if _, err := io.ReadFull(h.br, make([]byte, nbd.ExportNameZeroesLen)); err != nil {
			return Info{}, h.ioErr("read the export", err)
		}
	}
	info := Info{size: exp.Size, flags: exp.Flags}
	return info.finish(false, h.t)
}

// hostString names the server without the export.
func (t Target) hostString() string {
	if t.Network == "unix" {
		return "the server on " + t.Address
	}
	return "the server at " + t.Address
}

// finish validates what the server sent and fills in the defaults.
func (info Info) finish(haveSizes bool, t Target) (Info, error) {
	if info.flags&nbd.FlagHasFlags == 0 {
		info.flags = 0
	}
	if info.size > math.MaxInt64 {
		return Info{}, fmt.Errorf("%w: %s reports an export of %d bytes", ErrProtocol, t, info.size)
	}
	if !haveSizes {
		info.sizes = nbd.InfoBlockSizes{Min: 1, Preferred: 4096, MaxPayload: nbd.MaxPayload}
	}
	s := info.sizes
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	if !pow2(s.Min) || s.Min > 64<<10 || !pow2(s.Preferred) || s.Preferred < s.Min || s.MaxPayload < s.Min {
		return Info{}, fmt.Errorf("%w: %s sent impossible block sizes %d/%d/%d", ErrProtocol, t, s.Min, s.Preferred, s.MaxPayload)
	}
	info.maxPayload = min(s.MaxPayload, nbd.MaxPayload) / s.Min * s.Min
	return info, nil
}
