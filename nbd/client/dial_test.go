package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

func TestParseURI(t *testing.T) {
	for _, c := range []struct {
		uri  string
		want client.Target
	}{
		{"nbd://localhost/disk", client.Target{Network: "tcp", Address: "localhost:10809", Export: "disk", Host: "localhost"}},
		{"nbd://127.0.0.1:1234/a%20b", client.Target{Network: "tcp", Address: "127.0.0.1:1234", Export: "a b", Host: "127.0.0.1"}},
		{"nbd://[::1]:5/", client.Target{Network: "tcp", Address: "[::1]:5", Host: "::1"}},
		{"nbds://h/x", client.Target{Network: "tcp", Address: "h:10809", Export: "x", Host: "h", TLS: true}},
		{"nbd+unix:///disk?socket=/run/n.sock", client.Target{Network: "unix", Address: "/run/n.sock", Export: "disk"}},
		{"nbds+unix:///?socket=s", client.Target{Network: "unix", Address: "s", TLS: true}},
	} {
		got, err := client.ParseURI(c.uri)
		if err != nil || got != c.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", c.uri, got, err, c.want)
		}
	}
	for _, bad := range []string{
		"http://h/x", "nbd:///x", "nbd+unix:///x", "nbd+unix://h/x?socket=s",
		"nbd://h/x?tls=1", "nbd://u@h/x", "nbd://h/x#f", "/dev/sdb", "nbd://h:port/x",
	} {
		if _, err := client.ParseURI(bad); !errors.Is(err, client.ErrBadURI) {
			t.Errorf("ParseURI(%q): %v, want ErrBadURI", bad, err)
		}
	}
}

// oneLine fails the test unless err is a single line naming the target.
func oneLine(t *testing.T, err error, target string) {
	t.Helper()
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, target) {
		t.Errorf("error %q is not one line naming %s", msg, target)
	}
}

func TestDialErrors(t *testing.T) {
	s := startServer(t, nil)
	ctx := context.Background()

	// Nothing listens on a port just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = client.Dial(ctx, "nbd://"+addr+"/disk", client.Options{})
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("dial a closed port: %v", err)
	}
	oneLine(t, err, addr)
	_, err = client.Dial(ctx, "nbd+unix:///disk?socket="+filepath.Join(t.TempDir(), "none"), client.Options{})
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("dial a missing socket: %v", err)
	}

	_, err = client.Dial(ctx, s.uri("nope"), client.Options{})
	if !errors.Is(err, client.ErrUnknownExport) {
		t.Fatalf("unknown export: %v", err)
	}
	oneLine(t, err, `"nope"`)

	_, err = client.Dial(ctx, s.uri("ro"), client.Options{Writable: true})
	if !errors.Is(err, client.ErrReadOnly) {
		t.Fatalf("read-only export with Writable: %v", err)
	}
	oneLine(t, err, s.tcp)

	// The unix socket serves the same exports.
	c := dial(t, "nbd+unix:///disk?socket="+s.sock, client.Options{Writable: true})
	if c.Size() != testSize {
		t.Fatalf("size over the unix socket %d", c.Size())
	}

	// A server that never greets: the context's deadline ends the dial.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			nc, err := silent.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := client.Dial(dctx, "nbd://"+silent.Addr().String()+"/x", client.Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial a silent server: %v", err)
	}
}

func TestTLS(t *testing.T) {
	pki, err := nbdtest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(srv *nbd.Server) { srv.TLSConfig = pki.ServerConfig() })
	ctx := context.Background()

	_, err = client.Dial(ctx, s.uri("disk"), client.Options{})
	if !errors.Is(err, client.ErrTLSRequired) {
		t.Fatalf("plain dial to a TLS server: %v", err)
	}
	oneLine(t, err, s.tcp)

	c := dial(t, "nbds://"+s.tcp+"/disk", client.Options{Writable: true, TLSConfig: pki.ClientConfig(&pki.Client)})
	if _, err := c.WriteAt([]byte("over tls"), 512); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8)
	if _, err := c.ReadAt(got, 512); err != nil || string(got) != "over tls" {
		t.Fatalf("read back %q, %v", got, err)
	}

	// Over the unix socket; a certificate the server's CA did not sign is
	// refused.
	cfg := pki.ClientConfig(&pki.Client)
	dial(t, "nbds+unix:///disk?socket="+s.sock, client.Options{TLSConfig: cfg})
	rogue := pki.ClientConfig(&pki.Rogue)
	if c, err := client.Dial(ctx, "nbds://"+s.tcp+"/disk", client.Options{TLSConfig: rogue}); err == nil {
		c.Close()
		t.Fatal("a rogue client certificate was accepted")
	}
	// CAFile alone checks the server (which then wants a client cert).
	_, err = client.Dial(ctx, "nbds://"+s.tcp+"/disk", client.Options{CAFile: filepath.Join(pki.Dir, "ca-cert.pem")})
	var cv *tls.CertificateVerificationError
	if err == nil || errors.As(err, &cv) {
		t.Fatalf("CAFile without a client certificate: %v", err)
	}
}

// Close fails a request the server has not answered, at once.
func TestCloseFailsPending(t *testing.T) {
	blk := &blocking{counting: &counting{Memory: nbdtest.NewMemory(1<<20, testBlock)}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	blk.Fill(make([]byte, 4096), 0) // data: a hole is answered without ReadAt
	s := startServer(t, nil, &nbd.Export{Name: "slow", Backend: blk})
	c, err := client.Dial(context.Background(), s.uri("slow"), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer close(blk.release)
	done := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(make([]byte, 4096), 0)
		done <- err
	}()
	<-blk.entered
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("pending read after Close: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 1), 0); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// blocking holds reads until release is closed.
type blocking struct {
	*counting
	entered, release chan struct{}
}

func (b *blocking) ReadAt(p []byte, off int64) (int, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	return b.counting.ReadAt(p, off)
}
