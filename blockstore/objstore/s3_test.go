package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

// proxy forwards loopback connections to a server. Taken down, it cuts
// the open connections and drops new ones at once, as an endpoint that
// went away does, for a number of connections or for good.
type proxy struct {
	l       net.Listener
	target  string
	dropped atomic.Int64
	// flip, when set, changes the last byte of each flip found in what
	// clients send: a body damaged on its way.
	flip atomic.Pointer[[]byte]
	wg   sync.WaitGroup
	mu   struct {
		sync.Mutex
		drops int // connections still to drop; < 0 for all
		conns map[net.Conn]bool
	}
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target}
	p.mu.conns = map[net.Conn]bool{}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.takeDown(-1)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "http://" + p.l.Addr().String() }

// takeDown cuts the open connections and drops the next n (< 0: all).
func (p *proxy) takeDown(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.drops = n
	for c := range p.mu.conns {
		c.Close()
	}
}

// track registers an open connection, or reports that it must be dropped.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.drops != 0 {
		if p.mu.drops > 0 {
			p.mu.drops--
		}
		return false
	}
	p.mu.conns[c] = true
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.mu.conns, c)
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			p.dropped.Add(1)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			defer c.Close()
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			defer s.Close()
			go func() { io.Copy(flipWriter{s, p}, c); s.Close() }()
			io.Copy(c, s)
		}()
	}
}

// flipWriter writes to w what the client sent, damaged as p.flip says.
type flipWriter struct {
	w io.Writer
	p *proxy
}

func (f flipWriter) Write(b []byte) (int, error) {
	if m := f.p.flip.Load(); m != nil {
		for i := 0; ; {
			j := bytes.Index(b[i:], *m)
			if j < 0 {
				break
			}
			i += j + len(*m)
			b[i-1] ^= 1
		}
	}
	return f.w.Write(b)
}

func openVia(t *testing.T, srv *weed.Server, p *proxy, retryFor time.Duration) *objstore.S3 {
	t.Helper()
	bucket := strings.TrimPrefix(srv.NewBucket(t), "s3://")
	s, err := objstore.OpenS3(context.Background(), objstore.S3Config{
		Bucket: bucket, Endpoint: p.url(), EndpointFrom: "AWS_ENDPOINT_URL",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, RetryFor: retryFor,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestS3RetriesWhileEndpointAway: calls made while the endpoint drops
// every connection succeed once it is back.
func TestS3RetriesWhileEndpointAway(t *testing.T) {
	ctx := context.Background()
	srv := weed.Shared(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	s := openVia(t, srv, p, time.Minute)
	data := bytes.Repeat([]byte("rewind"), 1000)
	if err := s.Put(ctx, "a", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	p.takeDown(3) // the read must retry three times to get through
	got, err := s.GetRange(ctx, "a", 6, 12)
	if err != nil || string(got) != "rewindrewind" {
		t.Fatalf("read across an outage: %q, %v", got, err)
	}
	if n := p.dropped.Load(); n < 3 {
		t.Fatalf("only %d connections dropped", n)
	}
	// A put retried sends the whole object again, from a stream too.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	for _, r := range []io.Reader{bytes.NewReader(big), io.MultiReader(bytes.NewReader(big))} {
		p.takeDown(2)
		if err := s.Put(ctx, "big", r, int64(len(big))); err != nil {
			t.Fatalf("put across an outage: %v", err)
		}
		if got, err := s.GetRange(ctx, "big", 0, -1); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read back %d bytes, %v, after a put across an outage", len(got), err)
		}
	}
}

// TestS3PutDamagedOnTheWay: a body changed between rewind and the store
// is refused, by the checksum that goes with it, and nothing is stored.
func TestS3PutDamagedOnTheWay(t *testing.T) {
	ctx := context.Background()
	srv := weed.Shared(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	s := openVia(t, srv, p, 2*time.Second)
	marker := []byte("a pack's bytes, damaged on the way")
	p.flip.Store(&marker)
	readers := []func([]byte) io.Reader{
		func(b []byte) io.Reader { return bytes.NewReader(b) },
		func(b []byte) io.Reader { return objstore.NewBytesReader(b) }, // checksummed in place
	}
	for i, size := range []int{4 << 10, 8 << 20, 4 << 10, 8 << 20} {
		data := bytes.Repeat(marker, size/len(marker))
		err := s.Put(ctx, "damaged", readers[i/2](data), int64(len(data)))
		if err == nil {
			got, _ := s.GetRange(ctx, "damaged", 0, -1)
			t.Fatalf("a %d-byte put damaged on the way was accepted (stored %d bytes, equal to what was sent: %v)",
				len(data), len(got), bytes.Equal(got, data))
		}
		if _, err := s.Stat(ctx, "damaged"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("after a refused put: stat %v, want not found", err)
		}
	}
	p.flip.Store(nil)
	data := bytes.Repeat(marker, 100)
	for _, r := range readers {
		if err := s.Put(ctx, "whole", r(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestS3GivesUpWithinBudget: an endpoint that stays away fails a call with
// ErrUnreachable once the retry budget is spent.
func TestS3GivesUpWithinBudget(t *testing.T) {
	ctx := context.Background()
	srv := weed.Shared(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	s := openVia(t, srv, p, 300*time.Millisecond)
	p.takeDown(-1)
	_, err := s.Stat(ctx, "a")
	if !errors.Is(err, objstore.ErrUnreachable) || !strings.Contains(err.Error(), "check AWS_ENDPOINT_URL") {
		t.Fatalf("stat with the endpoint away: %v", err)
	}
	if p.dropped.Load() < 2 {
		t.Fatalf("gave up after %d attempts, without retrying", p.dropped.Load())
	}
	err = s.Put(ctx, "a", bytes.NewReader([]byte("x")), 1)
	if !errors.Is(err, objstore.ErrUnreachable) {
		t.Fatalf("put with the endpoint away: %v", err)
	}
}

// TestS3CallerDeadline: the caller's deadline ends the retries, and the
// error says so rather than blaming the endpoint.
func TestS3CallerDeadline(t *testing.T) {
	srv := weed.Shared(t)
	p := newProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	s := openVia(t, srv, p, time.Hour)
	p.takeDown(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := s.GetRange(ctx, "a", 0, 10)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, objstore.ErrUnreachable) {
		t.Fatalf("read past the caller's deadline: %v", err)
	}
}
