package nbd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// negotiation is the state of one fixed newstyle handshake.
type negotiation struct {
	c          *conn
	nc         net.Conn // raw, or TLS once STARTTLS succeeded
	br         *bufio.Reader
	fixed      bool // client set NBD_FLAG_C_FIXED_NEWSTYLE
	noZeroes   bool // client set NBD_FLAG_C_NO_ZEROES
	tls        bool
	structured bool          // NBD_OPT_STRUCTURED_REPLY acknowledged
	meta       metaSelection // last NBD_OPT_SET_META_CONTEXT
	data       []byte        // option data, reused
	out        []byte        // replies being built, reused
}

// metaSelection is what the last NBD_OPT_SET_META_CONTEXT selected.
type metaSelection struct {
	export     string
	allocation bool
}

// metaContextID is the context id of base:allocation; ids are opaque and
// connection-local.
const metaContextID = 1

const readBufferSize = 64 << 10

// handshake negotiates until the client enters transmission, and returns
// the session, or an error after which the connection is closed.
//
// The deadline (HandshakeTimeout) first covers the greeting and, on a
// server that requires TLS, everything up to the end of the TLS
// handshake; from then on it is renewed after each option, so that a
// client may take as long as it needs to ask about many exports while
// one that goes quiet is dropped. nbdinfo --list over libnbd 1.14 waits
// 200 ms per export (each LIST_META_CONTEXT is sent with MSG_MORE to its
// end, and the client's kernel holds it back), minutes for a thousand
// volumes (see the package documentation, Limits). Total work is
// bounded by MaxHandshakeBytes.
func (c *conn) handshake() (*session, error) {
	timeout := c.srv.handshakeTimeout()
	if timeout > 0 {
		c.setDeadline(time.Now().Add(timeout))
	}
	n := &negotiation{c: c, nc: c.raw, br: bufio.NewReaderSize(newSocketReader(c.raw), readBufferSize)}
	if _, err := c.raw.Write(appendGreeting(nil)); err != nil {
		return nil, err
	}
	var fl [4]byte
	if _, err := io.ReadFull(n.br, fl[:]); err != nil {
		return nil, fmt.Errorf("read client flags: %w", err)
	}
	cf := be.Uint32(fl[:])
	if cf&^clientFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: %#x", errBadClientFlags, cf)
	}
	n.fixed = cf&FlagCFixedNewstyle != 0
	n.noZeroes = cf&FlagCNoZeroes != 0
	// Options are bounded in bytes and, by the deadline, in time, not in
	// number: a client may ask about every export the list shows.
	budget := c.srv.maxHandshakeBytes()
	for {
		opt, data, err := n.readOption()
		if err != nil {
			return nil, err
		}
		if budget -= optionHeaderLen + int64(len(data)); budget < 0 {
			return nil, fmt.Errorf("%w: more than %d bytes of options", errHandshakeTooLong, c.srv.maxHandshakeBytes())
		}
		sess, err := n.option(opt, data)
		if err != nil || sess != nil {
			return sess, err
		}
		if timeout > 0 && (c.srv.TLSConfig == nil || n.tls) {
			c.setDeadline(time.Now().Add(timeout))
		}
	}
}

// readOption reads one option header and all its data, so that an option
// that is refused never desynchronises the stream.
func (n *negotiation) readOption() (uint32, []byte, error) {
	var h [optionHeaderLen]byte
	if _, err := io.ReadFull(n.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option header: %w", err)
	}
	if m := be.Uint64(h[0:]); m != MagicIHaveOpt {
		return 0, nil, fmt.Errorf("%w: option magic %#x", errBadMagic, m)
	}
	opt, length := be.Uint32(h[8:]), be.Uint32(h[12:])
	if length > maxOptionLen {
		return 0, nil, fmt.Errorf("%w: option %d claims %d bytes", errOptionTooLong, opt, length)
	}
	if cap(n.data) < int(length) {
		n.data = make([]byte, length)
	}
	data := n.data[:length]
	if _, err := io.ReadFull(n.br, data); err != nil {
		return 0, nil, fmt.Errorf("read option %d data: %w", opt, err)
	}
	return opt, data, nil
}

// option handles one option. It returns a session when transmission
// starts, an error when the connection must close, or neither.
func (n *negotiation) option(opt uint32, data []byte) (*session, error) {
	if !n.fixed && opt != OptExportName {
		return nil, fmt.Errorf("%w: option %d", errNotFixed, opt)
	}
	if n.c.shuttingDown() && opt != OptAbort {
		if opt == OptExportName {
			return nil, fmt.Errorf("%w: server shutting down", errExportName)
		}
		return nil, n.replyError(opt, RepErrShutdown, "the server is shutting down")
	}
	if n.c.srv.TLSConfig != nil && !n.tls {
		switch opt {
		case OptStartTLS, OptAbort:
		case OptExportName:
			return nil, errTLSRequired
		default:
			return nil, n.replyError(opt, RepErrTLSReqd, "this server requires TLS: send NBD_OPT_STARTTLS first")
		}
	}
	switch opt {
	case OptExportName:
		return n.exportName(data)
	case OptAbort:
		n.reply(opt, RepAck, nil) // the client may already be gone
		return nil, errAbort
	case OptList:
		return nil, n.list(data)
	case OptStartTLS:
		return nil, n.startTLS(data)
	case OptInfo, OptGo:
		return n.infoGo(opt, data)
	case OptStructuredReply:
		if len(data) != 0 {
			return nil, n.replyError(opt, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		n.structured = true
		return nil, n.reply(opt, RepAck, nil)
	case OptListMetaContext, OptSetMetaContext:
		return nil, n.metaContext(opt, data)
	default:
		return nil, n.replyError(opt, RepErrUnsup, fmt.Sprintf("option %d is not supported", opt))
	}
}

// reply sends one option reply in one write.
func (n *negotiation) reply(opt, typ uint32, data []byte) error {
	n.out = appendOptionReply(n.out[:0], opt, typ, data, "")
	return n.flush()
}

// replyError sends an error reply whose data is a message for the user.
func (n *negotiation) replyError(opt, typ uint32, msg string) error {
	return n.reply(opt, typ, []byte(truncString(msg)))
}

func (n *negotiation) flush() error {
	_, err := n.nc.Write(n.out)
	return err
}

func (n *negotiation) list(data []byte) error {
	if len(data) != 0 {
		return n.replyError(OptList, RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	exports, err := n.c.srv.Resolver.List(n.c.ctx)
	if err != nil {
		n.c.log.Warn("nbd: listing exports failed", "err", err)
		return n.replyError(OptList, RepErrPlatform, "listing exports failed on the server")
	}
	n.out = n.out[:0]
	var rec []byte
	for _, e := range exports {
		name, desc := truncString(e.Name), truncString(e.Description)
		rec = be.AppendUint32(rec[:0], uint32(len(name)))
		rec = append(append(rec, name...), desc...)
		n.out = appendOptionReply(n.out, OptList, RepServer, rec, "")
	}
	n.out = appendOptionReply(n.out, OptList, RepAck, nil, "")
	return n.flush()
}

// startTLS upgrades the connection and forgets everything negotiated
// before it (CVE-2021-3716).
func (n *negotiation) startTLS(data []byte) error {
	switch {
	case n.c.srv.TLSConfig == nil:
		return n.replyError(OptStartTLS, RepErrPolicy, "TLS is not configured on this server")
	case len(data) != 0:
		return n.replyError(OptStartTLS, RepErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case n.tls:
		return n.replyError(OptStartTLS, RepErrInvalid, "TLS is already active")
	case n.br.Buffered() != 0:
		// Plaintext sent behind STARTTLS would otherwise be taken for
		// data from inside the TLS session: a man in the middle's
		// injection.
		return fmt.Errorf("%w: %d bytes", errPipelinedTLS, n.br.Buffered())
	}
	if err := n.reply(OptStartTLS, RepAck, nil); err != nil {
		return err
	}
	tc := tls.Server(n.c.raw, n.c.srv.TLSConfig)
	n.c.setTLS(tc)
	if err := tc.HandshakeContext(n.c.ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	n.nc = tc
	n.br.Reset(tc)
	n.tls = true
	n.structured = false
	n.meta = metaSelection{}
	return nil
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot fail but by
// closing the connection.
func (n *negotiation) exportName(data []byte) (*session, error) {
	if len(data) > maxString {
		return nil, fmt.Errorf("%w: name of %d bytes", errExportName, len(data))
	}
	name := string(data)
	exp, err := n.open(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", errExportName, name, err)
	}
	sess := n.newSession(name, exp)
	n.out = be.AppendUint64(n.out[:0], uint64(sess.size))
	n.out = be.AppendUint16(n.out, sess.flags)
	if !n.noZeroes {
		n.out = append(n.out, make([]byte, exportNameZeroesLen)...)
	}
	if err := n.flush(); err != nil {
		sess.end()
		return nil, err
	}
	return sess, nil
}

// infoGo handles NBD_OPT_INFO and NBD_OPT_GO.
func (n *negotiation) infoGo(opt uint32, data []byte) (*session, error) {
	req, err := parseInfoRequest(data)
	if err != nil {
		return nil, n.replyError(opt, RepErrInvalid, err.Error())
	}
	exp, err := n.open(req.name)
	if err != nil {
		return nil, n.openFailed(opt, req.name, err)
	}
	sess := n.newSession(req.name, exp)
	n.out = appendInfoReplies(n.out[:0], opt, sess, req.infos)
	n.out = appendOptionReply(n.out, opt, RepAck, nil, "")
	err = n.flush()
	if opt == OptInfo || err != nil {
		sess.end()
		return nil, err
	}
	return sess, nil
}

// open asks the resolver for an export and checks what it returns.
func (n *negotiation) open(name string) (*Export, error) {
	exp, err := n.c.srv.Resolver.Open(n.c.ctx, name)
	if err != nil {
		if m := n.c.srv.Metrics; m != nil {
			m.UnknownExport()
		}
		return nil, err
	}
	if exp == nil || exp.Backend == nil || exp.Backend.Size() < 0 {
		if exp != nil && exp.Release != nil {
			exp.Release()
		}
		return nil, fmt.Errorf("nbd: resolver returned an unusable export for %q", name)
	}
	return exp, nil
}

func (n *negotiation) openFailed(opt uint32, name string, err error) error {
	if errors.Is(err, ErrUnknownExport) {
		n.c.log.Debug("nbd: unknown export", "name", name, "err", err)
	} else {
		n.c.log.Warn("nbd: opening export failed", "name", name, "err", err)
	}
	return n.replyError(opt, RepErrUnknown, err.Error())
}

// newSession makes the transmission state from what was negotiated.
func (n *negotiation) newSession(name string, exp *Export) *session {
	canonical := exp.Name
	if canonical == "" {
		canonical = name
	}
	label := exp.MetricsName
	if label == "" {
		label = canonical
	}
	s := &session{
		exp:        exp,
		name:       canonical,
		label:      label,
		nc:         n.nc,
		br:         n.br,
		tls:        n.tls,
		structured: n.structured,
		metaAlloc:  n.structured && n.meta.allocation && n.meta.export == name,
		size:       exp.Backend.Size(),
		blockSize:  preferredBlockSize(exp.BlockSize),
		metrics:    n.c.srv.Metrics,
	}
	s.flags = transmissionFlags(exp, n.structured)
	return s
}
