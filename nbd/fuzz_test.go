package nbd_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

const fuzzSize = 1 << 20

// serveFuzz runs a server on one end of a pipe, writes in to it, closes,
// and checks the server ends promptly with every opened export released.
// check, if set, reads the server's output; otherwise it is discarded.
func serveFuzz(t *testing.T, mem *nbdtest.Memory, in []byte, check func(io.Reader) error) {
	res := nbdtest.NewResolver(
		&nbd.Export{Name: "disk", Backend: mem, MultiConn: true},
		&nbd.Export{Name: "ro", Backend: mem, ReadOnly: true},
	)
	srv := &nbd.Server{Resolver: res, HandshakeTimeout: 5 * time.Second, Workers: 4}
	cs, ss := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), ss) }()
	checked := make(chan error, 1)
	go func() {
		if check == nil {
			_, err := io.Copy(io.Discard, cs)
			checked <- err
			return
		}
		checked <- check(cs)
		io.Copy(io.Discard, cs)
	}()
	cs.SetWriteDeadline(time.Now().Add(5 * time.Second))
	cs.Write(in) // fails once the server hangs up: that is fine
	cs.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not end after the client closed")
	}
	if err := <-checked; err != nil && err != io.ErrClosedPipe {
		t.Fatal(err)
	}
	if o, r := res.Opens("disk")+res.Opens("ro"), res.Releases("disk")+res.Releases("ro"); o != r {
		t.Fatalf("%d exports opened, %d released", o, r)
	}
}

type script []byte

// seed is a request stream without the magics, as FuzzRequests takes it.
type seed []byte

func (s seed) req(flags, typ uint16, off uint64, n uint32, payload []byte) seed {
	return append(s, nbdtest.Request(flags, typ, uint64(len(s)), off, n, payload)[4:]...)
}

func (s script) flags(f uint32) script { return append(s, be.AppendUint32(nil, f)...) }
func (s script) opt(o uint32, data []byte) script {
	return append(s, optionBytes(o, data)...)
}
func (s script) req(flags, typ uint16, off uint64, n uint32, payload []byte) script {
	return append(s, nbdtest.Request(flags, typ, uint64(len(s)), off, n, payload)...)
}

// FuzzHandshake fuzzes everything the client sends, from its flags on.
func FuzzHandshake(f *testing.F) {
	fixed := script(nil).flags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
	f.Add([]byte(fixed.opt(nbd.OptGo, nbdtest.InfoData("disk", nbd.InfoBlockSize)).req(0, nbd.CmdRead, 0, 512, nil)))
	f.Add([]byte(script(nil).flags(0).opt(nbd.OptExportName, []byte("disk")).req(0, nbd.CmdWrite, 0, 4, []byte("abcd"))))
	f.Add([]byte(fixed.opt(nbd.OptList, nil).opt(nbd.OptInfo, nbdtest.InfoData("ro", 0, 1, 2, 3)).opt(nbd.OptAbort, nil)))
	f.Add([]byte(fixed.opt(nbd.OptStructuredReply, nil).
		opt(nbd.OptListMetaContext, nbdtest.MetaData("disk")).
		opt(nbd.OptSetMetaContext, nbdtest.MetaData("disk", "base:allocation", "qemu:x")).
		opt(nbd.OptGo, nbdtest.InfoData("disk")).
		req(nbd.CmdFlagReqOne, nbd.CmdBlockStatus, 0, 0xffffffff, nil).
		req(0, nbd.CmdBlockStatus, 4096, 8192, nil).req(nbd.CmdFlagDF, nbd.CmdRead, 0, 4096, nil)))
	f.Add([]byte(fixed.opt(nbd.OptStartTLS, nil).opt(77, []byte("x")).opt(nbd.OptGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add([]byte(fixed.opt(nbd.OptGo, nbdtest.InfoData("nope")).opt(nbd.OptExportName, []byte("nope"))))
	f.Add([]byte(fixed[:2]))
	mem := nbdtest.NewMemory(fuzzSize, 512)
	f.Fuzz(func(t *testing.T, in []byte) {
		serveFuzz(t, mem, in, nil)
	})
}

// FuzzRequests fuzzes the request stream after a fixed, valid handshake
// with structured replies and base:allocation, and checks the structure
// of every reply the server sends. The input is taken as request headers
// without their magic (which TestDisconnectingRequests covers), each WRITE
// followed by as much of its payload as the input has, so that mutations
// reach the commands rather than the magic check.
func FuzzRequests(f *testing.F) {
	var s seed
	f.Add([]byte(s.req(0, nbd.CmdRead, 0, 4096, nil).req(nbd.CmdFlagDF, nbd.CmdRead, 512, 1, nil)))
	f.Add([]byte(s.req(nbd.CmdFlagFUA, nbd.CmdWrite, 100, 3, []byte("abc")).req(0, nbd.CmdFlush, 0, 0, nil)))
	f.Add([]byte(s.req(0, nbd.CmdWrite, fuzzSize, 4, []byte("abcd")).req(0, nbd.CmdWrite, 0, 0xffffffff, nil)))
	f.Add([]byte(s.req(0, nbd.CmdBlockStatus, fuzzSize-4096, 0xffffffff, nil).req(nbd.CmdFlagReqOne, nbd.CmdBlockStatus, 0, fuzzSize, nil)))
	f.Add([]byte(s.req(0, nbd.CmdBlockStatus, 0xffffffffffffff00, 0x200, nil).req(0, 99, 0, 0, nil)))
	f.Add([]byte(s.req(nbd.CmdFlagFastZero|nbd.CmdFlagNoHole, nbd.CmdWriteZeroes, 0, 8192, nil).req(0, nbd.CmdTrim, 4096, 4096, nil)))
	f.Add([]byte(s.req(0, nbd.CmdCache, 0, fuzzSize, nil).req(0, nbd.CmdRead, 0, 0, nil).req(0, nbd.CmdDisc, 0, 0, nil)))
	f.Add([]byte(s.req(0, nbd.CmdRead, 0, nbd.MaxPayload+1, nil).req(0xffff, nbd.CmdRead, 0, 1, nil)))
	handshake := script(nil).flags(nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes).
		opt(nbd.OptStructuredReply, nil).
		opt(nbd.OptSetMetaContext, nbdtest.MetaData("disk", nbd.MetaContextBaseAllocation)).
		opt(nbd.OptGo, nbdtest.InfoData("disk"))
	mem := nbdtest.NewMemory(fuzzSize, 512)
	mem.Fill(pattern(64<<10, 1), 64<<10)
	f.Fuzz(func(t *testing.T, in []byte) {
		stream := append([]byte(nil), handshake...)
		for len(in) >= 24 {
			stream = be.AppendUint32(stream, nbd.MagicRequest)
			stream = append(stream, in[:24]...)
			typ, length := be.Uint16(in[2:]), be.Uint32(in[20:])
			in = in[24:]
			if typ == nbd.CmdWrite {
				n := min(int(length), len(in))
				stream = append(stream, in[:n]...)
				in = in[n:]
			}
		}
		serveFuzz(t, mem, stream, checkReplies)
	})
}

// checkReplies skips the handshake replies, then parses transmission
// replies and fails on anything malformed.
func checkReplies(r io.Reader) error {
	br := bufio.NewReader(r)
	// Greeting (18), then ACK (20), META_CONTEXT (20+4+15) and ACK, INFO
	// EXPORT (20+12), INFO BLOCK_SIZE (20+14), ACK.
	if _, err := io.ReadFull(br, make([]byte, 18+20+39+20+32+34+20)); err != nil {
		return nil // the server hung up during the handshake
	}
	for {
		var h [4]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil
		}
		switch m := be.Uint32(h[:]); m {
		case nbd.MagicSimple:
			if _, err := io.ReadFull(br, make([]byte, 12)); err != nil {
				return fmt.Errorf("truncated simple reply")
			}
		case nbd.MagicStructured:
			if err := checkChunk(br); err != nil {
				return err
			}
		default:
			return fmt.Errorf("bad reply magic %#x", m)
		}
	}
}

func checkChunk(br *bufio.Reader) error {
	var h [16]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return fmt.Errorf("truncated chunk header")
	}
	typ, n := be.Uint16(h[2:]), be.Uint32(h[12:])
	if n > nbd.MaxPayload+64 && typ != nbd.ReplyTypeBlockStatus {
		return fmt.Errorf("chunk of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		return fmt.Errorf("truncated chunk")
	}
	switch typ {
	case nbd.ReplyTypeOffsetData:
		if n < 9 || be.Uint64(p)+uint64(n-8) > fuzzSize {
			return fmt.Errorf("bad OFFSET_DATA")
		}
	case nbd.ReplyTypeOffsetHole:
		if n != 12 || be.Uint32(p[8:]) == 0 || be.Uint64(p)+uint64(be.Uint32(p[8:])) > fuzzSize {
			return fmt.Errorf("bad OFFSET_HOLE")
		}
	case nbd.ReplyTypeBlockStatus:
		if n < 12 || (n-4)%8 != 0 || (n-4)/8 > 1<<20 {
			return fmt.Errorf("bad BLOCK_STATUS length %d", n)
		}
		var sum uint64
		for q := p[4:]; len(q) > 0; q = q[8:] {
			if be.Uint32(q) == 0 {
				return fmt.Errorf("zero-length extent")
			}
			sum += uint64(be.Uint32(q))
		}
		if sum > fuzzSize {
			return fmt.Errorf("extents past the export")
		}
	case nbd.ReplyTypeError:
		if n < 6 || be.Uint32(p) == 0 || int(be.Uint16(p[4:])) != int(n)-6 || n-6 > 4096 {
			return fmt.Errorf("bad error chunk")
		}
	default:
		return fmt.Errorf("unexpected chunk type %d", typ)
	}
	return nil
}
