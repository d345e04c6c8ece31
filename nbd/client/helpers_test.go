package client_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/client"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

const (
	testSize  = 16 << 20
	testBlock = 4096
)

// counting wraps a Memory and records the largest write and read the
// server passed it, and how many writes.
type counting struct {
	*nbdtest.Memory
	maxWrite, maxRead, writes atomic.Int64
}

func (c *counting) WriteAt(p []byte, off int64) (int, error) {
	c.writes.Add(1)
	for {
		m := c.maxWrite.Load()
		if int64(len(p)) <= m || c.maxWrite.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	return c.Memory.WriteAt(p, off)
}

func (c *counting) ReadAt(p []byte, off int64) (int, error) {
	for {
		m := c.maxRead.Load()
		if int64(len(p)) <= m || c.maxRead.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	return c.Memory.ReadAt(p, off)
}

// server is rewind's NBD server in-process, on TCP and on a unix socket.
type server struct {
	mem  *counting
	tcp  string // host:port
	sock string // unix socket path
}

// startServer serves "disk" (writable), "ro" (read-only) and any extra
// exports on 127.0.0.1 and a unix socket until the test ends.
func startServer(t *testing.T, configure func(*nbd.Server), extra ...*nbd.Export) *server {
	t.Helper()
	mem := &counting{Memory: nbdtest.NewMemory(testSize, testBlock)}
	exports := append([]*nbd.Export{
		{Name: "disk", Backend: mem, MultiConn: true, BlockSize: 65536},
		{Name: "ro", Backend: mem, ReadOnly: true},
	}, extra...)
	srv := &nbd.Server{Resolver: nbdtest.NewResolver(exports...), Workers: 8}
	if configure != nil {
		configure(srv)
	}
	s := &server{mem: mem, sock: filepath.Join(t.TempDir(), "nbd.sock")}
	var wg sync.WaitGroup
	for _, l := range []struct{ network, addr string }{{"tcp", "127.0.0.1:0"}, {"unix", s.sock}} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		if l.network == "tcp" {
			s.tcp = ln.Addr().String()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, nbd.ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		wg.Wait()
	})
	return s
}

func (s *server) uri(export string) string { return "nbd://" + s.tcp + "/" + export }

// dial connects with opts and closes the connection when the test ends.
func dial(t *testing.T, uri string, opts client.Options) *client.Conn {
	t.Helper()
	c, err := client.Dial(context.Background(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pattern returns n bytes that depend on seed and position.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i) ^ byte(i>>8)*7
	}
	return b
}
