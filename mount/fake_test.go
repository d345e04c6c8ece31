package mount

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fakeSource is an in-memory daemon: volumes with versions at instants,
// labels, and clones with a writable head.
type fakeSource struct {
	now    time.Time
	opened atomic.Int64
	closed atomic.Int64
	mu     sync.Mutex
	vols   map[string]*fakeVolume
}

type fakeVolume struct {
	versions []fakeVersion // oldest first
	labels   map[string]time.Time
	clone    bool
	head     *fakeImage // the writable head of a clone
	flushes  atomic.Int64
}

type fakeVersion struct {
	at   time.Time
	data []byte
}

func newFakeSource(now time.Time) *fakeSource {
	return &fakeSource{now: now, vols: map[string]*fakeVolume{}}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func (s *fakeSource) addVersion(vol string, at time.Time, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vols[vol]
	if v == nil {
		v = &fakeVolume{labels: map[string]time.Time{}}
		s.vols[vol] = v
	}
	v.versions = append(v.versions, fakeVersion{at: at, data: data})
}

func (s *fakeSource) addLabel(vol, label string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vols[vol].labels[label] = at
}

func (s *fakeSource) addClone(vol string, at time.Time, data []byte) *fakeVolume {
	s.addVersion(vol, at, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vols[vol]
	v.clone = true
	v.head = &fakeImage{data: slices.Clone(data), writable: true, flushes: &v.flushes}
	return v
}

func (s *fakeSource) Volumes(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.vols))
	for n := range s.vols {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func (s *fakeSource) volume(name string) (*fakeVolume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vols[name]
	if v == nil {
		return nil, fmt.Errorf("volume %s: %w", name, fs.ErrNotExist)
	}
	return v, nil
}

func (s *fakeSource) Instants(ctx context.Context, vol string) ([]string, error) {
	v, err := s.volume(vol)
	if err != nil {
		return nil, err
	}
	var out []string
	for l := range v.labels {
		out = append(out, l)
	}
	for _, ver := range v.versions {
		out = append(out, ver.at.UTC().Format("20060102T150405Z"))
	}
	return out, nil
}

func (s *fakeSource) Points(ctx context.Context, vol string) ([]string, error) {
	v, err := s.volume(vol)
	if err != nil {
		return nil, err
	}
	var out []string
	for l := range v.labels {
		out = append(out, l)
	}
	slices.Sort(out)
	return out, nil
}

func (s *fakeSource) Open(ctx context.Context, name string) (Image, bool, error) {
	vol, when, hasWhen := strings.Cut(name, "@")
	v, err := s.volume(vol)
	if err != nil {
		return nil, false, err
	}
	s.opened.Add(1)
	if !hasWhen && v.clone {
		return &fakeImage{data: v.head.data, writable: true, flushes: &v.flushes, head: v.head, closed: &s.closed}, true, nil
	}
	t, err := s.resolve(v, when)
	if err != nil {
		s.opened.Add(-1)
		return nil, false, fmt.Errorf("%s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(v.versions) - 1; i >= 0; i-- {
		if !v.versions[i].at.After(t) {
			return &fakeImage{data: v.versions[i].data, closed: &s.closed}, false, nil
		}
	}
	s.opened.Add(-1)
	return nil, false, fmt.Errorf("%s has no data before %s: %w", vol, v.versions[0].at, fs.ErrNotExist)
}

func (s *fakeSource) resolve(v *fakeVolume, when string) (time.Time, error) {
	switch {
	case when == "" || when == "latest":
		return s.now.Add(time.Hour * 24 * 365), nil
	case strings.HasPrefix(when, "-"):
		d, err := time.ParseDuration(when[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("bad WHEN %q: %w", when, fs.ErrNotExist)
		}
		return s.now.Add(-d), nil
	}
	if t, ok := parseInstant(when); ok {
		return t, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := v.labels[when]; ok {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("no recovery point %q: %w", when, fs.ErrNotExist)
}

// fakeImage serves data; a writable one writes through to its clone's
// head under a lock shared by every image of that head.
type fakeImage struct {
	data     []byte
	writable bool
	head     *fakeImage // for clone images: the head whose lock guards data
	mu       sync.RWMutex
	flushes  *atomic.Int64
	reads    atomic.Int64
	closed   *atomic.Int64
}

func (f *fakeImage) lock() *sync.RWMutex {
	if f.head != nil {
		return &f.head.mu
	}
	return &f.mu
}

func (f *fakeImage) Size() int64 { return int64(len(f.data)) }

func (f *fakeImage) ReadAt(p []byte, off int64) (int, error) {
	f.reads.Add(1)
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	if f.writable {
		f.lock().RLock()
		defer f.lock().RUnlock()
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *fakeImage) WriteAt(p []byte, off int64) (int, error) {
	if !f.writable {
		return 0, fmt.Errorf("fake image is read-only: %w", syscall.EROFS)
	}
	f.lock().Lock()
	defer f.lock().Unlock()
	return copy(f.data[off:], p), nil
}

func (f *fakeImage) Flush() error {
	if f.flushes != nil {
		f.flushes.Add(1)
	}
	return nil
}

func (f *fakeImage) Close() error {
	if f.closed != nil {
		f.closed.Add(1)
	}
	return nil
}

// patternImage is a large read-only image computed on the fly from a
// 1 MiB random block, for throughput tests.
type patternImage struct {
	size  int64
	block []byte
	reads atomic.Int64
}

func newPatternImage(size int64) *patternImage {
	return &patternImage{size: size, block: randomBytes(7, 1<<20)}
}

func (p *patternImage) Size() int64 { return p.size }

func (p *patternImage) ReadAt(b []byte, off int64) (int, error) {
	p.reads.Add(1)
	if off >= p.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && off+int64(n) < p.size {
		pos := off + int64(n)
		c := copy(b[n:], p.block[pos%int64(len(p.block)):])
		c = int(min(int64(c), p.size-pos))
		n += c
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (p *patternImage) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("pattern image: %w", syscall.EROFS)
}
func (p *patternImage) Flush() error { return nil }
func (p *patternImage) Close() error { return nil }

// fileImage is a read-only image backed by a file; it counts write
// attempts, which must never happen on history.
type fileImage struct {
	f      *os.File
	size   int64
	writes atomic.Int64
}

func openFileImage(path string) (*fileImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileImage{f: f, size: fi.Size()}, nil
}

func (f *fileImage) Size() int64                             { return f.size }
func (f *fileImage) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }
func (f *fileImage) WriteAt(p []byte, off int64) (int, error) {
	f.writes.Add(1)
	return 0, fmt.Errorf("history is read-only: %w", syscall.EROFS)
}
func (f *fileImage) Flush() error { return nil }
func (f *fileImage) Close() error { return f.f.Close() }
