package nbd_test

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

func newTLSHarness(t *testing.T) (*harness, *nbdtest.PKI) {
	t.Helper()
	pki, err := nbdtest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newHarness(t, func(s *nbd.Server) { s.TLSConfig = pki.ServerConfig() }), pki
}

// Before STARTTLS, every option but STARTTLS and ABORT is refused and no
// export is opened (FORCEDTLS; CVE-2019-14850).
func TestTLSRequired(t *testing.T) {
	h, _ := newTLSHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		opt  uint32
		data []byte
	}{
		{nbd.OptList, nil},
		{nbd.OptInfo, nbdtest.InfoData("disk")},
		{nbd.OptGo, nbdtest.InfoData("disk")},
		{nbd.OptStructuredReply, nil},
		{nbd.OptListMetaContext, nbdtest.MetaData("disk")},
		{nbd.OptSetMetaContext, nbdtest.MetaData("disk", nbd.MetaContextBaseAllocation)},
		{999, []byte("junk")},
	} {
		_, err := c.Option(o.opt, o.data)
		mustOptionError(t, err, nbd.RepErrTLSReqd)
	}
	if _, err := c.Option(nbd.OptAbort, nil); err != nil {
		t.Fatal(err)
	}
	mustClose(t, c)

	c = h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	if err := c.SendOption(nbd.OptExportName, []byte("disk")); err != nil {
		t.Fatal(err)
	}
	if b := mustClose(t, c); len(b) != 0 {
		t.Fatalf("EXPORT_NAME before TLS got % x", b)
	}
	if h.res.TotalOpens() != 0 {
		t.Fatal("an export was opened before TLS")
	}
}

func TestTLSSession(t *testing.T) {
	h, pki := newTLSHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Option(nbd.OptStartTLS, []byte{0})
	mustOptionError(t, err, nbd.RepErrInvalid)
	if err := c.StartTLS(pki.ClientConfig(&pki.Client)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Option(nbd.OptStartTLS, nil)
	mustOptionError(t, err, nbd.RepErrInvalid) // TLS already on
	if l, err := c.List(); err != nil || len(l) != 3 {
		t.Fatalf("LIST over TLS: %v %v", l, err)
	}
	if err := c.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MetaContexts(nbd.OptSetMetaContext, "disk", nbd.MetaContextBaseAllocation); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
	data := pattern(1<<20, 4)
	ok(t)(c.WriteAt(data, 0, nbd.CmdFlagFUA))
	if r := ok(t)(c.Read(0, 1<<20, 0)); !bytes.Equal(r.Data, data) {
		t.Fatal("read over TLS differs")
	}
	ok(t)(c.BlockStatus(0, 1<<20, 0))
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
}

// Nothing negotiated in plaintext survives STARTTLS (CVE-2021-3716): a
// man in the middle's STRUCTURED_REPLY is refused before TLS, and after
// it the session starts from nothing.
func TestTLSDiscardsPlaintextState(t *testing.T) {
	h, pki := newTLSHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Option(nbd.OptStructuredReply, nil)
	mustOptionError(t, err, nbd.RepErrTLSReqd)
	if err := c.StartTLS(pki.ClientConfig(&pki.Client)); err != nil {
		t.Fatal(err)
	}
	_, err = c.MetaContexts(nbd.OptSetMetaContext, "disk", nbd.MetaContextBaseAllocation)
	mustOptionError(t, err, nbd.RepErrInvalid) // structured replies not negotiated
	info, err := c.Go("disk")
	if err != nil {
		t.Fatal(err)
	}
	if info.Flags&nbd.FlagSendDF != 0 {
		t.Fatal("DF advertised without structured replies")
	}
	if r := ok(t)(c.Read(0, 512, 0)); !r.Simple {
		t.Fatal("structured reply without negotiation")
	}
}

// Plaintext pipelined behind STARTTLS is an injection: hard disconnect,
// no ACK.
func TestTLSPipelinedPlaintext(t *testing.T) {
	h, _ := newTLSHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	script := append(optionBytes(nbd.OptStartTLS, nil), optionBytes(nbd.OptStructuredReply, nil)...)
	if err := c.Write(script); err != nil {
		t.Fatal(err)
	}
	if b := mustClose(t, c); len(b) != 0 {
		t.Fatalf("server answered % x", b)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	h, pki := newTLSHarness(t)
	for name, cert := range map[string]*tls.Certificate{"none": nil, "rogue CA": &pki.Rogue} {
		c := h.dial()
		if err := c.StartFixed(); err != nil {
			t.Fatal(err)
		}
		err := c.StartTLS(pki.ClientConfig(cert))
		if err == nil {
			// TLS 1.3 reports the client's rejection on first read.
			_, err = c.List()
		}
		if err == nil {
			t.Fatalf("%s: TLS accepted", name)
		}
	}
	// A client that does not trust the server's CA gives up too.
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	cfg := pki.ClientConfig(&pki.Client)
	cfg.RootCAs = nil
	if err := c.StartTLS(cfg); err == nil {
		t.Fatal("client accepted an unknown CA")
	}
	if h.res.TotalOpens() != 0 {
		t.Fatal("export opened without authentication")
	}
}

func TestStartTLSNotConfigured(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	if err := c.StartFixed(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Option(nbd.OptStartTLS, nil)
	mustOptionError(t, err, nbd.RepErrPolicy)
	if _, err := c.Go("disk"); err != nil {
		t.Fatal(err)
	}
}

func optionBytes(opt uint32, data []byte) []byte {
	b := be.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}
