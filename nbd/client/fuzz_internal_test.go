package client

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
)

var be = binary.BigEndian

const fuzzSize = 1 << 20

// greeting is a fixed newstyle greeting with NO_ZEROES.
func greeting() []byte {
	b := be.AppendUint64(nil, nbd.MagicNBD)
	b = be.AppendUint64(b, nbd.MagicIHaveOpt)
	return be.AppendUint16(b, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
}

func optReply(opt, typ uint32, data []byte) []byte {
	b := be.AppendUint64(nil, nbd.MagicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// srReply answers NBD_OPT_STRUCTURED_REPLY.
func srReply(ok bool) []byte {
	if ok {
		return optReply(nbd.OptStructuredReply, nbd.RepAck, nil)
	}
	return optReply(nbd.OptStructuredReply, nbd.RepErrUnsup, nil)
}

// goReplies answers NBD_OPT_GO for an export of fuzzSize bytes.
func goReplies() []byte {
	exp := be.AppendUint16(nil, nbd.InfoExport)
	exp = be.AppendUint64(exp, fuzzSize)
	exp = be.AppendUint16(exp, nbd.FlagHasFlags|nbd.FlagSendFlush|nbd.FlagSendTrim|nbd.FlagSendWriteZeroes)
	sizes := be.AppendUint16(nil, nbd.InfoBlockSize)
	sizes = be.AppendUint32(sizes, 1)
	sizes = be.AppendUint32(sizes, 4096)
	sizes = be.AppendUint32(sizes, 65536)
	b := optReply(nbd.OptGo, nbd.RepInfo, exp)
	b = append(b, optReply(nbd.OptGo, nbd.RepInfo, sizes)...)
	return append(b, optReply(nbd.OptGo, nbd.RepAck, nil)...)
}

// chunk is a structured reply chunk with the payload parts concatenated.
func chunk(flags, typ uint16, cookie uint64, parts ...[]byte) []byte {
	var p []byte
	for _, x := range parts {
		p = append(p, x...)
	}
	b := be.AppendUint32(nil, nbd.MagicStructured)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

func simple(errno uint32, cookie uint64, data []byte) []byte {
	b := be.AppendUint32(nil, nbd.MagicSimple)
	b = be.AppendUint32(b, errno)
	b = be.AppendUint64(b, cookie)
	return append(b, data...)
}

// fuzzRequests are sent in this order, so their cookies are 1, 2, ...
var fuzzRequests = []struct {
	typ      uint16
	off, len int64
}{
	{nbd.CmdRead, 0, 512},
	{nbd.CmdWrite, 512, 512},
	{nbd.CmdRead, 4096, 100},
	{nbd.CmdFlush, 0, 0},
	{nbd.CmdWriteZeroes, 8192, 4096},
	{nbd.CmdRead, fuzzSize - 65536, 65536},
}

// pipeServer plays a server on a pipe: it writes script, waits for the
// first expect bytes the client sends, writes after and hangs up. What
// the client sends is read all along, so neither side blocks the other.
func pipeServer(t testing.TB, script []byte, expect int, after []byte) net.Conn {
	cs, ss := net.Pipe()
	got := make(chan struct{})
	go func() {
		var once sync.Once
		defer once.Do(func() { close(got) })
		b := make([]byte, 4096)
		for n := 0; ; {
			if n >= expect {
				once.Do(func() { close(got) })
			}
			m, err := ss.Read(b)
			if err != nil {
				return
			}
			n += m
		}
	}()
	go func() {
		defer ss.Close()
		ss.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := ss.Write(script); err != nil {
			return
		}
		<-got
		ss.Write(after)
	}()
	return cs
}

// FuzzReplies fuzzes what a server sends in transmission, after a valid
// handshake, to six requests in flight. Every request must end, with a
// result or an error, and Close must return.
func FuzzReplies(f *testing.F) {
	f.Add(false, simple(0, 1, make([]byte, 512)))
	f.Add(false, append(append(simple(0, 2, nil), simple(0, 1, make([]byte, 512))...), simple(28, 5, nil)...))
	f.Add(false, append(simple(5, 6, nil), simple(0, 3, make([]byte, 100))...))
	f.Add(false, simple(0, 6, make([]byte, 1000)))
	f.Add(false, simple(0, 99, nil))
	f.Add(false, append(be.AppendUint32(nil, nbd.MagicStructured), make([]byte, 16)...))
	read1 := append(chunk(0, nbd.ReplyTypeOffsetData, 1, be.AppendUint64(nil, 256), make([]byte, 256)),
		chunk(nbd.ReplyFlagDone, nbd.ReplyTypeOffsetHole, 1, be.AppendUint64(nil, 0), be.AppendUint32(nil, 256))...)
	f.Add(true, append(read1, simple(0, 2, nil)...))
	f.Add(true, append(chunk(nbd.ReplyFlagDone, nbd.ReplyTypeError, 3, be.AppendUint32(nil, 5), be.AppendUint16(nil, 3), []byte("bad")),
		chunk(nbd.ReplyFlagDone, nbd.ReplyTypeNone, 4)...))
	f.Add(true, chunk(nbd.ReplyFlagDone, nbd.ReplyTypeOffsetData, 6, be.AppendUint64(nil, fuzzSize-65536), make([]byte, 65536)))
	f.Add(true, chunk(nbd.ReplyFlagDone, nbd.ReplyTypeOffsetHole, 1, be.AppendUint64(nil, 0), be.AppendUint32(nil, 1<<31)))
	f.Fuzz(func(t *testing.T, structured bool, data []byte) {
		// What the client sends after the greeting: flags, STRUCTURED_REPLY,
		// GO, requests.
		hs := 4 + 16 + 16 + len(nbd.AppendInfoRequest(nil, "disk", nbd.InfoBlockSize))
		reqs := 0
		for _, r := range fuzzRequests {
			reqs += nbd.RequestLen
			if r.typ == nbd.CmdWrite {
				reqs += int(r.len)
			}
		}
		script := append(append(greeting(), srReply(structured)...), goReplies()...)
		nc := pipeServer(t, script, hs+reqs, data)
		c, err := Handshake(context.Background(), nc, fuzzTarget, Options{})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		var calls []*call
		for _, r := range fuzzRequests {
			var payload, buf []byte
			switch r.typ {
			case nbd.CmdWrite:
				payload = make([]byte, r.len)
			case nbd.CmdRead:
				buf = make([]byte, r.len)
			}
			calls = append(calls, c.start("fuzz", r.typ, 0, r.off, r.len, payload, buf))
		}
		for _, cl := range calls {
			err := c.wait(cl)
			var re *RequestError
			if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrProtocol) && !errors.As(err, &re) {
				t.Fatalf("request ended with %v", err)
			}
		}
		c.Close()
	})
}

// FuzzHandshake fuzzes everything a server sends, from its greeting on.
// Dial must end with a Conn or an error, never hang or panic, and a Conn
// it returns must respect what the server advertised.
func FuzzHandshake(f *testing.F) {
	f.Add(append(append(greeting(), srReply(true)...), goReplies()...))
	f.Add(append(append(greeting(), srReply(false)...), optReply(nbd.OptGo, nbd.RepErrUnknown, []byte("no such export"))...))
	noFixed := append(be.AppendUint64(be.AppendUint64(nil, nbd.MagicNBD), nbd.MagicIHaveOpt), 0, 0)
	f.Add(append(noFixed, append(be.AppendUint16(be.AppendUint64(nil, fuzzSize), 3), make([]byte, 124)...)...))
	unsup := append(append(greeting(), srReply(false)...), optReply(nbd.OptGo, nbd.RepErrUnsup, nil)...)
	f.Add(append(unsup, be.AppendUint16(be.AppendUint64(nil, 4096), 1)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, ss := net.Pipe()
		go func() {
			ss.Write(data)
			ss.Close()
		}()
		go io.Copy(io.Discard, ss)
		c, err := Handshake(context.Background(), cs, fuzzTarget, Options{})
		if err != nil {
			cs.Close()
			return
		}
		info := c.Info()
		if m := int(info.sizes.Min); info.MaxPayload() < m || info.MaxPayload()%m != 0 || info.MaxPayload() > nbd.MaxPayload {
			t.Fatalf("max payload %d with minimum block %d", info.MaxPayload(), m)
		}
		if c.Size() > 0 {
			c.ReadAt(make([]byte, min(c.Size(), 4096)), 0)
		}
		c.Close()
	})
}
