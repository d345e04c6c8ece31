package nbd_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// gated blocks reads at one offset until its gate opens.
type gated struct {
	*nbdtest.Memory
	at      int64
	entered chan struct{}
	gate    chan struct{}
}

func newGated(mem *nbdtest.Memory, at int64) *gated {
	return &gated{Memory: mem, at: at, entered: make(chan struct{}, 16), gate: make(chan struct{})}
}

func (g *gated) ReadAt(p []byte, off int64) (int, error) {
	if off == g.at {
		g.entered <- struct{}{}
		<-g.gate
	}
	return g.Memory.ReadAt(p, off)
}

func TestOutOfOrderReplies(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(8192, 1), 1<<20) // holes are answered without ReadAt
	g := newGated(mem, 1<<20)
	h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "g", Backend: g}))
	c, _ := h.connect("g", true, false)
	if err := c.Send(0, nbd.CmdRead, 1, 1<<20, 4096, nil); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if err := c.Send(0, nbd.CmdRead, 2, 0, 4096, nil); err != nil {
		t.Fatal(err)
	}
	r := ok(t)(c.ReadReply())
	if r.Cookie != 2 {
		t.Fatalf("first reply for cookie %d, want 2", r.Cookie)
	}
	close(g.gate)
	if r := ok(t)(c.ReadReply()); r.Cookie != 1 {
		t.Fatalf("second reply for cookie %d", r.Cookie)
	}
}

// Many requests in one write come back complete, each exactly once.
func TestPipelinedRequests(t *testing.T) {
	h := newHarness(t)
	h.mem.Fill(pattern(1<<20, 8), 0)
	c, _ := h.connect("disk", true, true)
	const n = 500
	var script []byte
	for i := range n {
		cookie := uint64(i + 1)
		switch i % 3 {
		case 0:
			c.ExpectRead(cookie, uint64(i)*512, 4096)
			script = append(script, nbdtest.Request(0, nbd.CmdRead, cookie, uint64(i)*512, 4096, nil)...)
		case 1:
			script = append(script, nbdtest.Request(0, nbd.CmdBlockStatus, cookie, 0, 1<<20, nil)...)
		case 2:
			script = append(script, nbdtest.Request(0, nbd.CmdWrite, cookie, 2<<20, 512, pattern(512, 1))...)
		}
	}
	go c.Write(script) // the server pushes back while we read replies
	seen := map[uint64]bool{}
	for len(seen) < n {
		r, err := c.ReadReply()
		if err != nil {
			t.Fatal(err)
		}
		if r.Errno != 0 || r.Cookie == 0 || r.Cookie > n {
			t.Fatalf("reply %+v", r)
		}
		if seen[r.Cookie] {
			t.Fatalf("two replies for cookie %d", r.Cookie)
		}
		seen[r.Cookie] = true
	}
}

// Writes on one connection are persisted by a FLUSH on another, and read
// on a third, when the export says connections share the backend.
func TestMultiConnFlush(t *testing.T) {
	h := newHarness(t)
	a, info := h.connect("disk", false, false)
	if info.Flags&nbd.FlagCanMultiConn == 0 {
		t.Fatal("multi-conn not advertised")
	}
	if _, single := h.connect("single", false, false); single.Flags&nbd.FlagCanMultiConn != 0 {
		t.Fatal("multi-conn advertised for an unshared export")
	}
	b, _ := h.connect("disk", true, false)
	c, _ := h.connect("disk", true, true)
	data := pattern(65536, 11)
	ok(t)(a.WriteAt(data, 1<<20, 0))
	if h.mem.Dirty() == 0 {
		t.Fatal("write already flushed")
	}
	ok(t)(b.Do(0, nbd.CmdFlush, 0, 0, nil))
	if h.mem.Dirty() != 0 {
		t.Fatal("FLUSH on another connection left writes unflushed")
	}
	if r := ok(t)(c.Read(1<<20, 65536, 0)); !bytes.Equal(r.Data, data) {
		t.Fatal("third connection reads other data")
	}
	ok(t)(a.WriteAt(data, 2<<20, nbd.CmdFlagFUA))
	if h.mem.Dirty() != 0 {
		t.Fatal("FUA write left dirty data")
	}
}

// Several clients hammer disjoint regions with pipelined reads and writes.
func TestConcurrentClients(t *testing.T) {
	h := newHarness(t)
	var g errgroup.Group
	for k := range 6 {
		g.Go(func() error {
			c, _ := h.connect("disk", k%2 == 0, false)
			base := uint64(k) * (2 << 20)
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			shadow := make([]byte, 2<<20)
			for round := range 20 {
				var want []uint64
				// Pipelined writes may run in any order: keep them
				// apart, each in its own 32 KiB slot.
				slots := rng.Perm(len(shadow) / 32768)
				for i := range 16 {
					off := uint64(slots[i]) * 32768
					n := uint32(4096 * (1 + rng.IntN(8)))
					cookie := uint64(round*100 + i + 1)
					if i%2 == 0 {
						p := pattern(int(n), byte(round+i))
						copy(shadow[off:], p)
						if err := c.Send(0, nbd.CmdWrite, cookie, base+off, n, p); err != nil {
							return err
						}
					} else if err := c.Send(0, nbd.CmdFlush, cookie, 0, 0, nil); err != nil {
						return err
					}
					want = append(want, cookie)
				}
				for range want {
					if r, err := c.ReadReply(); err != nil || r.Errno != 0 {
						return fmt.Errorf("client %d: %v %v", k, r, err)
					}
				}
				r, err := c.Read(base, uint32(len(shadow)), 0)
				if err != nil || !bytes.Equal(r.Data, shadow) {
					return fmt.Errorf("client %d round %d: data differs (%v)", k, round, err)
				}
			}
			return c.Disconnect()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// faulty fails or panics on chosen operations.
type faulty struct {
	*nbdtest.Memory
	readErr, writeErr, extErr error
	panicOn                   int64
}

func (f *faulty) ReadAt(p []byte, off int64) (int, error) {
	if off == f.panicOn {
		panic("injected")
	}
	if f.readErr != nil && off >= 1<<20 {
		return 0, f.readErr
	}
	return f.Memory.ReadAt(p, off)
}

func (f *faulty) WriteAt(p []byte, off int64) (int, error) {
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	return f.Memory.WriteAt(p, off)
}

func (f *faulty) Extents(off, n int64) ([]nbd.Extent, error) {
	if f.extErr != nil {
		return nil, f.extErr
	}
	return f.Memory.Extents(off, n)
}

func TestBackendErrors(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	mem.Fill(pattern(2<<20, 3), 0)
	f := &faulty{Memory: mem, readErr: errors.New("disk on fire"), writeErr: fmt.Errorf("pack: %w", syscall.ENOSPC),
		extErr: fmt.Errorf("index: %w", syscall.EINVAL), panicOn: 4096}
	h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "f", Backend: f}))
	for _, structured := range []bool{false, true} {
		c, _ := h.connect("f", structured, structured)
		r := fails(t, nbd.EIO)(c.Read(1<<20, 4096, 0))
		if structured && bytes.Contains([]byte(r.Msg), []byte("fire")) {
			t.Fatalf("backend detail leaked to the client: %q", r.Msg)
		}
		fails(t, nbd.ENOSPC)(c.WriteAt(pattern(512, 1), 0, 0))
		fails(t, nbd.EIO)(c.Read(4096, 512, 0)) // the backend panics
		// Extents failing: reads still work (as data), block status fails.
		if r := ok(t)(c.Read(0, 65536, 0)); !bytes.Equal(r.Data, mem.Bytes()[:65536]) {
			t.Fatal("read without extents differs")
		}
		if structured {
			fails(t, nbd.EINVAL)(c.BlockStatus(0, 4096, 0))
		}
	}
}

// recorder is a Metrics that records what it is told.
type recorder struct {
	mu       sync.Mutex
	opened   map[string]int
	closed   map[string]int
	requests map[string]int
	failed   map[string]int
	refused  map[string]int
	unknown  int
	held     int64 // buffer memory
	waiting  int
	bytes    int64
}

func newRecorder() *recorder {
	return &recorder{opened: map[string]int{}, closed: map[string]int{}, requests: map[string]int{},
		failed: map[string]int{}, refused: map[string]int{}}
}

func (r *recorder) ConnOpened(e string)    { r.mu.Lock(); r.opened[e]++; r.mu.Unlock() }
func (r *recorder) ConnClosed(e string)    { r.mu.Lock(); r.closed[e]++; r.mu.Unlock() }
func (r *recorder) ConnRefused(why string) { r.mu.Lock(); r.refused[why]++; r.mu.Unlock() }
func (r *recorder) UnknownExport()         { r.mu.Lock(); r.unknown++; r.mu.Unlock() }
func (r *recorder) BufferMemory(held int64, waiting int) {
	r.mu.Lock()
	r.held, r.waiting = held, waiting
	r.mu.Unlock()
}
func (r *recorder) Request(e, cmd string, n int64, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[e+" "+cmd]++
	r.bytes += n
	var errno nbd.Errno
	if err != nil && errors.As(err, &errno) {
		r.failed[fmt.Sprintf("%s %s %d", e, cmd, errno)]++
	}
}

func TestMetrics(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, func(s *nbd.Server) { s.Metrics = rec })
	c, _ := h.connect("disk", true, true)
	ok(t)(c.Read(0, 4096, 0))
	ok(t)(c.WriteAt(pattern(4096, 1), 0, 0))
	ok(t)(c.BlockStatus(0, 4096, 0))
	fails(t, nbd.EINVAL)(c.Read(testSize, 1, 0))
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return rec.closed["disk"] == 1 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.opened["disk"] != 1 || rec.requests["disk read"] != 2 || rec.requests["disk write"] != 1 ||
		rec.requests["disk block_status"] != 1 || rec.failed["disk read 22"] != 1 || rec.bytes != 3*4096+1 {
		t.Fatalf("metrics %+v", rec)
	}
}
