package nbd_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

var be = binary.BigEndian

func TestGreetingFlags(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	flags, err := c.Greeting()
	if err != nil {
		t.Fatal(err)
	}
	if flags != nbd.FlagFixedNewstyle|nbd.FlagNoZeroes {
		t.Fatalf("handshake flags %#x", flags)
	}
}

func TestUnknownClientFlagsDisconnect(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.Start(nbd.FlagCFixedNewstyle | 1<<5); err != nil {
		t.Fatal(err)
	}
	if b := mustClose(t, c); len(b) != 0 {
		t.Fatalf("got % x before close", b)
	}
}

func TestExportName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
	}{
		{"oldnewstyle", 0},
		{"fixed", nbd.FlagCFixedNewstyle},
		{"fixed-nozeroes", nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes},
		{"nozeroes", nbd.FlagCNoZeroes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.dial()
			if err := c.Start(tc.flags); err != nil {
				t.Fatal(err)
			}
			info, err := c.ExportName("disk", tc.flags&nbd.FlagCNoZeroes != 0)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != testSize || info.Flags&nbd.FlagHasFlags == 0 || info.Flags&nbd.FlagSendDF != 0 {
				t.Fatalf("info %+v", info)
			}
			// The reply is exactly as long as negotiated: a request
			// right after it is answered in sync.
			data := pattern(4096, 3)
			ok(t)(c.WriteAt(data, 8192, 0))
			r := ok(t)(c.Read(8192, 4096, 0))
			if !r.Simple || !bytes.Equal(r.Data, data) {
				t.Fatalf("read back %+v", r)
			}
			if err := c.Disconnect(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExportNameRefusals(t *testing.T) {
	h := newHarness(t)
	for _, name := range []string{"nope", strings.Repeat("x", 4097)} {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if err := c.SendOption(nbd.OptExportName, []byte(name)); err != nil {
			t.Fatal(err)
		}
		if b := mustClose(t, c); len(b) != 0 {
			t.Fatalf("EXPORT_NAME %.10q: got % x before close", name, b)
		}
	}
	if n := h.res.TotalOpens(); n != 0 {
		t.Fatalf("%d opens", n)
	}
}

func TestNonFixedNewstyleOnlyExportName(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.Start(0); err != nil {
		t.Fatal(err)
	}
	if err := c.SendOption(nbd.OptList, nil); err != nil {
		t.Fatal(err)
	}
	if b := mustClose(t, c); len(b) != 0 {
		t.Fatalf("got % x", b)
	}
}

func TestInfoThenGo(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	infos := []uint16{nbd.InfoName, nbd.InfoDescription, nbd.InfoBlockSize, 99}
	info, err := c.Info("disk", infos...)
	if err != nil {
		t.Fatal(err)
	}
	want := nbdtest.ExportInfo{
		Size:     testSize,
		Flags:    nbd.FlagHasFlags | nbd.FlagSendFlush | nbd.FlagSendFUA | nbd.FlagSendTrim | nbd.FlagSendWriteZeroes | nbd.FlagSendCache | nbd.FlagSendFastZero | nbd.FlagCanMultiConn,
		MinBlock: 1, PrefBlock: 65536, MaxBlock: nbd.MaxPayload,
		Name: "disk", Description: "a test disk", HaveName: true, HaveDescription: true,
	}
	if info != want {
		t.Fatalf("INFO\n got %+v\nwant %+v", info, want)
	}
	// The server releases the export after its reply is on the wire: wait
	// for the release rather than race it.
	for deadline := time.Now().Add(5 * time.Second); h.res.Releases("disk") == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if h.res.Opens("disk") != 1 || h.res.Releases("disk") != 1 {
		t.Fatalf("INFO: %d opens, %d releases", h.res.Opens("disk"), h.res.Releases("disk"))
	}
	gi, err := c.Go("disk", infos...)
	if err != nil {
		t.Fatal(err)
	}
	if gi != info {
		t.Fatalf("GO after INFO differs:\n%+v\n%+v", gi, info)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.res.Releases("disk") == 2 })
}

func TestReadOnlyFlags(t *testing.T) {
	h := newHarness(t)
	_, info := h.connect("ro", true, false)
	want := nbd.FlagHasFlags | nbd.FlagReadOnly | nbd.FlagSendFlush | nbd.FlagSendFUA | nbd.FlagSendCache | nbd.FlagSendDF
	if info.Flags != want {
		t.Fatalf("flags %#x, want %#x", info.Flags, want)
	}
	if info.PrefBlock != 4096 {
		t.Fatalf("preferred block %d", info.PrefBlock)
	}
}

func TestGoUnknownExportThenRetry(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Go("missing")
	oe := mustOptionError(t, err, nbd.RepErrUnknown)
	if !strings.Contains(oe.Msg, "missing") {
		t.Fatalf("message %q", oe.Msg)
	}
	// A 4096-byte name makes a longer message: it must be cut to 4096.
	_, err = c.Go(strings.Repeat("é", 2048))
	mustOptionError(t, err, nbd.RepErrUnknown)
	if _, err := c.Go("single"); err != nil {
		t.Fatal(err)
	}
}

func TestList(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	got, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["disk"] != "a test disk" || got["ro"] != "read-only" {
		t.Fatalf("list %q", got)
	}
	_, err = c.Option(nbd.OptList, []byte{1})
	mustOptionError(t, err, nbd.RepErrInvalid)
	if h.res.TotalOpens() != 0 {
		t.Fatal("LIST opened an export")
	}
}

func TestAbort(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Option(nbd.OptAbort, []byte("ignored")); err != nil {
		t.Fatal(err)
	}
	mustClose(t, c)
}

func TestUnknownOptionsKeepSync(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	for _, opt := range []uint32{0, nbd.OptPeekExport, nbd.OptExtendedHeaders, 12, 1000, 0xffffffff} {
		_, err := c.Option(opt, bytes.Repeat([]byte{0xaa}, int(opt%300)))
		mustOptionError(t, err, nbd.RepErrUnsup)
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedOptionsKeepSync(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	name := func(n uint32, s string) []byte { return append(be.AppendUint32(nil, n), s...) }
	cases := []struct {
		opt  uint32
		data []byte
	}{
		{nbd.OptGo, nil},
		{nbd.OptGo, []byte{0, 0, 0}},
		{nbd.OptGo, append(name(5, "disk"), 0, 0)},          // name length > option length - 6
		{nbd.OptGo, append(name(0xffffffff, "disk"), 0, 0)}, // CVE-2022-26495
		{nbd.OptInfo, append(name(4, "disk"), 0, 2, 0, 1)},  // 2 infos, 1 sent
		{nbd.OptInfo, append(name(4, "disk"), 0, 0, 9)},     // trailing byte
		{nbd.OptGo, append(name(4097, strings.Repeat("a", 4097)), 0, 0)},
		{nbd.OptStructuredReply, []byte{0}},
		{nbd.OptListMetaContext, []byte{0, 0}},
		{nbd.OptListMetaContext, append(name(4, "disk"), 0xff, 0xff, 0xff, 0xff)}, // count overflow
		{nbd.OptListMetaContext, append(name(4, "disk"), append(be.AppendUint32(nil, 1), name(99, "base:")...)...)}, // query overruns
		{nbd.OptListMetaContext, append(name(0xfffffffc, "disk"), 0, 0, 0, 0)},
	}
	for _, tc := range cases {
		_, err := c.Option(tc.opt, tc.data)
		mustOptionError(t, err, nbd.RepErrInvalid)
	}
	if h.res.TotalOpens() != 0 {
		t.Fatal("malformed option opened an export")
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
}

func TestMetaContexts(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	_, err := c.MetaContexts(nbd.OptSetMetaContext, "disk", nbd.MetaContextBaseAllocation)
	mustOptionError(t, err, nbd.RepErrInvalid) // structured replies first
	if err := c.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt     uint32
		queries []string
		want    map[string]uint32
	}{
		{nbd.OptListMetaContext, nil, map[string]uint32{"base:allocation": 0}},
		{nbd.OptListMetaContext, []string{"base:"}, map[string]uint32{"base:allocation": 0}},
		{nbd.OptListMetaContext, []string{"qemu:dirty-bitmap:a", "x-foo:"}, map[string]uint32{}},
		{nbd.OptSetMetaContext, nil, map[string]uint32{}},
		{nbd.OptSetMetaContext, []string{"base:"}, map[string]uint32{}},
		{nbd.OptSetMetaContext, []string{"x-foo:bar", "base:allocation", "nocolon"}, map[string]uint32{"base:allocation": 1}},
	} {
		got, err := c.MetaContexts(tc.opt, "disk", tc.queries...)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) || (len(got) == 1 && got["base:allocation"] != tc.want["base:allocation"]) {
			t.Fatalf("opt %d %q: got %v, want %v", tc.opt, tc.queries, got, tc.want)
		}
	}
	if h.res.TotalOpens() != 0 {
		t.Fatal("meta context option opened an export")
	}
}

// A context selected for one export does not apply to another.
func TestMetaContextOtherExport(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if err := c.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MetaContexts(nbd.OptSetMetaContext, "ro", nbd.MetaContextBaseAllocation); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
	r, err := c.BlockStatus(0, 4096, 0)
	mustReply(t, r, err, nbd.EINVAL)
}

func TestOptionLimits(t *testing.T) {
	h := newHarness(t)
	t.Run("huge length", func(t *testing.T) {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if err := c.SendOptionHeader(nbd.OptGo, 0xffffffff); err != nil {
			t.Fatal(err)
		}
		mustClose(t, c)
	})
	t.Run("over 64 KiB", func(t *testing.T) {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if err := c.SendOption(12345, make([]byte, 64<<10+1)); err != nil {
			t.Fatal(err)
		}
		mustClose(t, c)
	})
	t.Run("over the byte budget", func(t *testing.T) {
		h := newHarness(t, func(s *nbd.Server) { s.MaxHandshakeBytes = 10 * 16 })
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if _, err := c.Option(200, nil); err == nil {
				t.Fatalf("option %d accepted", i)
			}
		}
		if err := c.SendOption(200, nil); err != nil {
			t.Fatal(err)
		}
		mustClose(t, c)
	})
	t.Run("bad option magic", func(t *testing.T) {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		if err := c.Write(make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
		mustClose(t, c)
	})
}

// Truncating a valid client handshake at every byte must end each
// connection cleanly, with every opened export released.
func TestTruncatedHandshakes(t *testing.T) {
	h := newHarness(t)
	var script bytes.Buffer
	script.Write(be.AppendUint32(nil, nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes))
	opt := func(o uint32, data []byte) {
		script.Write(be.AppendUint64(nil, nbd.MagicIHaveOpt))
		script.Write(be.AppendUint32(nil, o))
		script.Write(be.AppendUint32(nil, uint32(len(data))))
		script.Write(data)
	}
	opt(nbd.OptStructuredReply, nil)
	opt(nbd.OptSetMetaContext, nbdtest.MetaData("disk", nbd.MetaContextBaseAllocation))
	opt(nbd.OptInfo, nbdtest.InfoData("disk", nbd.InfoBlockSize))
	opt(nbd.OptGo, nbdtest.InfoData("disk", nbd.InfoBlockSize))
	full := script.Bytes()
	for i := 0; i < len(full); i++ {
		c := h.dial()
		if _, err := c.Greeting(); err != nil {
			t.Fatal(err)
		}
		if err := c.Write(full[:i]); err != nil {
			t.Fatal(err)
		}
		c.Conn.(interface{ CloseWrite() error }).CloseWrite()
		mustClose(t, c)
	}
	waitFor(t, func() bool { return h.res.Opens("disk") == h.res.Releases("disk") })
}

// The same for a request stream cut at every byte.
func TestTruncatedRequests(t *testing.T) {
	h := newHarness(t)
	full := nbdtest.Request(0, nbd.CmdWrite, 1, 0, 16, pattern(16, 1))
	full = append(full, nbdtest.Request(0, nbd.CmdRead, 2, 0, 16, nil)...)
	full = append(full, nbdtest.Request(0, nbd.CmdDisc, 3, 0, 0, nil)...)
	for i := 0; i <= len(full); i++ {
		c, _ := h.connect("disk", i%2 == 0, false)
		if err := c.Write(full[:i]); err != nil {
			t.Fatal(err)
		}
		c.Conn.(interface{ CloseWrite() error }).CloseWrite()
		mustClose(t, c)
	}
	waitFor(t, func() bool { return h.res.Opens("disk") == h.res.Releases("disk") })
}

func TestHandshakeDeadline(t *testing.T) {
	h := newHarness(t, func(s *nbd.Server) { s.HandshakeTimeout = 200 * time.Millisecond })
	idle := h.dial()
	start := time.Now()
	if _, err := idle.Greeting(); err != nil {
		t.Fatal(err)
	}
	mustClose(t, idle)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle client closed after %v", d)
	}
	// The deadline ends with the handshake: transmission may idle.
	c, _ := h.connect("disk", true, false)
	time.Sleep(400 * time.Millisecond) // longer than the handshake deadline, on purpose
	ok(t)(c.Read(0, 512, 0))
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client may ask about every export of a long list in one handshake,
// as nbdinfo --list does (INFO and LIST_META_CONTEXT for each), far
// more options than the 64 an earlier count limit allowed.
func TestManyOptions(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if err := c.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		name := []string{"disk", "ro", "single"}[i%3]
		if _, err := c.Info(name, nbd.InfoName, nbd.InfoDescription); err != nil {
			t.Fatalf("INFO %d: %v", i, err)
		}
		if _, err := c.MetaContexts(nbd.OptListMetaContext, name); err != nil {
			t.Fatalf("LIST_META_CONTEXT %d: %v", i, err)
		}
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
	ok(t)(c.Read(0, 512, 0))
}

// The deadline is renewed after each option: a client that keeps asking
// may negotiate longer than HandshakeTimeout in all. Before TLS is up on
// a TLS server it is not: options refused for want of TLS buy no time.
func TestHandshakeDeadlinePerOption(t *testing.T) {
	const timeout = time.Second
	h := newHarness(t, func(s *nbd.Server) { s.HandshakeTimeout = timeout })
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 3*timeout {
		time.Sleep(timeout / 4) // a slow client, on purpose
		if _, err := c.Info("disk"); err != nil {
			t.Fatalf("INFO after %v: %v", time.Since(start), err)
		}
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
	ok(t)(c.Read(0, 512, 0))

	pki, err := nbdtest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ht := newHarness(t, func(s *nbd.Server) { s.HandshakeTimeout = timeout; s.TLSConfig = pki.ServerConfig() })
	c = ht.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		time.Sleep(timeout / 4)
		_, err := c.Option(nbd.OptList, nil)
		var oe *nbdtest.OptionError
		if errors.As(err, &oe) && oe.Type == nbd.RepErrTLSReqd {
			if time.Since(start) > 10*timeout {
				t.Fatalf("still negotiating without TLS after %v", time.Since(start))
			}
			continue
		}
		if err == nil {
			t.Fatal("NBD_OPT_LIST answered before TLS")
		}
		break // closed by the deadline
	}
}
