package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Options tune Dial.
type Options struct {
	// Writable makes Dial fail with ErrReadOnly when the server says the
	// export is read-only, instead of failing the first write.
	Writable bool
	// TLSConfig is used for nbds:// URIs. Nil means a default config that
	// checks the server's certificate against CAFile, or the system's
	// roots when CAFile is empty, for the URI's host name.
	TLSConfig *tls.Config
	// CAFile is a PEM file of certificate authorities to trust for nbds://
	// when TLSConfig is nil.
	CAFile string
	// SimpleReplies skips NBD_OPT_STRUCTURED_REPLY: every reply is then a
	// simple reply, and a failed READ may cost the connection.
	SimpleReplies bool
	// MetaContexts are the metadata contexts to select for BLOCK_STATUS
	// (for example "base:allocation", "qemu:dirty-bitmap:NAME"). It needs
	// structured replies. A context the server does not offer is not an
	// error: Info.MetaContext reports which were selected.
	MetaContexts []string
	// Timeout bounds connecting and the handshake when ctx has no earlier
	// deadline; zero means 30 seconds.
	Timeout time.Duration
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 30 * time.Second
}

// Dial connects to uri (see ParseURI) and negotiates the export it names.
// ctx bounds the connection and the handshake only.
func Dial(ctx context.Context, uri string, opts Options) (*Conn, error) {
	t, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout())
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, t.Network, t.Address)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v; check that it runs and listens there", ErrUnreachable, t, unwrapOp(err))
	}
	c, err := Handshake(ctx, nc, t, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// unwrapOp drops net.OpError's repetition of the address.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// tlsConfig returns the configuration for a TLS target.
func (o Options) tlsConfig(t Target) (*tls.Config, error) {
	if o.TLSConfig != nil {
		cfg := o.TLSConfig.Clone()
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg.ServerName = t.Host
		}
		return cfg, nil
	}
	cfg := &tls.Config{ServerName: t.Host, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("nbd client: read CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nbd client: %s holds no PEM certificate", o.CAFile)
		}
	}
	if cfg.ServerName == "" {
		return nil, fmt.Errorf("%w: %s: TLS over a unix socket needs Options.TLSConfig with a ServerName", ErrBadURI, t)
	}
	return cfg, nil
}
