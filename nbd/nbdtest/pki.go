package nbdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throw-away certificate authority with a server certificate for
// localhost and 127.0.0.1, a client certificate it signed, and a rogue
// client certificate signed by another authority.
type PKI struct {
	CAPool                *x509.CertPool
	Server, Client, Rogue tls.Certificate
	// Dir holds the PEM files in the layout libnbd (tls-certificates=DIR)
	// and qemu (tls-creds-x509 dir=DIR, endpoint=client) read:
	// ca-cert.pem, client-cert.pem, client-key.pem, server-cert.pem,
	// server-key.pem.
	Dir string
}

// NewPKI makes the certificates and writes them to dir.
func NewPKI(dir string) (*PKI, error) {
	ca, caKey, err := newCert("rewind test CA", nil, nil, true)
	if err != nil {
		return nil, err
	}
	other, otherKey, err := newCert("rogue CA", nil, nil, true)
	if err != nil {
		return nil, err
	}
	p := &PKI{CAPool: x509.NewCertPool(), Dir: dir}
	p.CAPool.AddCert(ca.Leaf)
	files := map[string][]byte{"ca-cert.pem": pemCert(ca)}
	for _, c := range []struct {
		name   string
		out    *tls.Certificate
		signer *tls.Certificate
		key    *ecdsa.PrivateKey
	}{
		{"server", &p.Server, ca, caKey},
		{"client", &p.Client, ca, caKey},
		{"rogue", &p.Rogue, other, otherKey},
	} {
		cert, key, err := newCert(c.name, c.signer, c.key, false)
		if err != nil {
			return nil, err
		}
		*c.out = *cert
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		files[c.name+"-cert.pem"] = pemCert(cert)
		files[c.name+"-key.pem"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ServerConfig requires and verifies client certificates.
func (p *PKI) ServerConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAPool,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientConfig trusts the CA and presents cert (nil for none).
func (p *PKI) ClientConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.CAPool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func newCert(name string, signer *tls.Certificate, signerKey *ecdsa.PrivateKey, isCA bool) (*tls.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"rewind tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	parent, parentKey := tmpl, key
	if signer != nil {
		parent, parentKey = signer.Leaf, signerKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, key, nil
}

func pemCert(c *tls.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}
