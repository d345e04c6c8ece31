package nbd

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// In FORCEDTLS no state can be negotiated before STARTTLS, so the reset
// cannot be seen from the wire; check it on the negotiation itself
// (CVE-2021-3716).
func TestStartTLSDiscardsState(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	cs, ss := net.Pipe()
	defer cs.Close()
	c := newConn(context.Background(), srv, ss)
	defer c.closeNow()
	n := &negotiation{c: c, nc: ss, br: bufio.NewReader(ss), fixed: true,
		structured: true, meta: metaSelection{export: "disk", allocation: true}}

	client := make(chan error, 1)
	go func() {
		ack := make([]byte, optionReplyLen)
		if _, err := io.ReadFull(cs, ack); err != nil {
			client <- err
			return
		}
		client <- tls.Client(cs, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}()
	if err := n.startTLS(nil); err != nil {
		t.Fatal(err)
	}
	if err := <-client; err != nil {
		t.Fatal(err)
	}
	if n.structured || n.meta != (metaSelection{}) || !n.tls {
		t.Fatalf("after STARTTLS: structured=%v meta=%+v tls=%v", n.structured, n.meta, n.tls)
	}
	if _, ok := n.nc.(*tls.Conn); !ok {
		t.Fatal("negotiation still talks over the raw connection")
	}
}
