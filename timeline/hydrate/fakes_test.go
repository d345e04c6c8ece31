package hydrate

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/timeline"
)

// memSource is a Source in memory with holes at a block size.
type memSource struct {
	bs int64
	mu struct {
		sync.RWMutex
		data []byte
		hole []bool // per block
	}
	onRead    func(p []byte, off int64) // called after the read, without locks
	onExtents func(off int64)           // called before Extents, without locks
}

func newMemSource(size, bs int64) *memSource {
	s := &memSource{bs: bs}
	s.mu.data = make([]byte, size)
	s.mu.hole = make([]bool, (size+bs-1)/bs)
	for i := range s.mu.hole {
		s.mu.hole[i] = true
	}
	return s
}

// write stores p at off as a workload would; blocks it touches become data.
func (s *memSource) write(p []byte, off int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.mu.data[off:], p)
	for b := off / s.bs; b*s.bs < off+int64(len(p)); b++ {
		s.mu.hole[b] = false
	}
}

// trim makes whole blocks [off, off+n) holes.
func (s *memSource) trim(off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.mu.data[off : off+n])
	for b := off / s.bs; b*s.bs < off+n; b++ {
		s.mu.hole[b] = true
	}
}

func (s *memSource) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return int64(len(s.mu.data))
}

func (s *memSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.RLock()
	n := copy(p, s.mu.data[off:])
	s.mu.RUnlock()
	if s.onRead != nil {
		s.onRead(p[:n], off)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Extents reports at most 3 blocks' worth, to exercise callers' loops.
func (s *memSource) Extents(off, n int64) ([]timeline.Extent, error) {
	if s.onExtents != nil {
		s.onExtents(off)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	end := min(off+n, off/s.bs*s.bs+3*s.bs, int64(len(s.mu.data)))
	var out []timeline.Extent
	for lo := off; lo < end; {
		b := lo / s.bs
		hi := min((b+1)*s.bs, end)
		h := s.mu.hole[b]
		if k := len(out); k > 0 && out[k-1].Hole == h {
			out[k-1].Length += hi - lo
		} else {
			out = append(out, timeline.Extent{Offset: lo, Length: hi - lo, Hole: h})
		}
		lo = hi
	}
	return out, nil
}

func (s *memSource) sum() [32]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return sha256.Sum256(s.mu.data)
}

// memTarget is a Target in memory that counts calls and can fail.
type memTarget struct {
	mu struct {
		sync.Mutex
		data           []byte
		writes, zeroes int
		flushes        int
		offsets        []int64 // WriteAt offsets in order
	}
	onWrite func(p []byte, off int64) error // called first, without locks; an error fails the write
}

func newMemTarget(size int64) *memTarget {
	t := &memTarget{}
	t.mu.data = make([]byte, size)
	return t
}

func (t *memTarget) WriteAt(p []byte, off int64) (int, error) {
	if t.onWrite != nil {
		if err := t.onWrite(p, off); err != nil {
			return 0, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.writes++
	t.mu.offsets = append(t.mu.offsets, off)
	return copy(t.mu.data[off:], p), nil
}

func (t *memTarget) WriteZeroes(off, n int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.zeroes++
	clear(t.mu.data[off : off+n])
	return nil
}

func (t *memTarget) Flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.flushes++
	return nil
}

func (t *memTarget) Size() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.mu.data))
}

func (t *memTarget) sum() [32]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return sha256.Sum256(t.mu.data)
}

func (t *memTarget) writeCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.writes
}

// fakeClock is virtual time: Sleep moves it forward at once, to the
// latest wake-up any sleeper asked for.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	if t.After(c.now) {
		c.now = t
	}
	c.mu.Unlock()
	return ctx.Err()
}

// memStore is a Store in memory that can stop taking saves, as a
// crashed daemon would.
type memStore struct {
	mu     sync.Mutex
	p      []byte
	frozen bool
	saves  int
}

func (s *memStore) Save(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.frozen {
		s.p = append([]byte(nil), p...)
		s.saves++
	}
	return nil
}

func (s *memStore) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p, nil
}

func (s *memStore) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
}

var errBoom = errors.New("injected target failure")

// run starts c.Run and returns a function that waits for its result.
func run(ctx context.Context, c *Copier) func() error {
	ch := make(chan error, 1)
	go func() { ch <- c.Run(ctx) }()
	return func() error { return <-ch }
}

// noPause is a pause callback for tests that need none.
func noPause() func() { return func() {} }

// cutoverMatches cuts over, waits for the copier to end, and fails with
// msg unless the target then holds exactly what the source does.
func cutoverMatches(t *testing.T, c *Copier, wait func() error, src *memSource, dst *memTarget, msg string) {
	t.Helper()
	resume, err := c.Cutover(context.Background(), noPause)
	if err != nil {
		t.Fatal(err)
	}
	resume()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if dst.sum() != src.sum() {
		t.Fatal(msg)
	}
}
