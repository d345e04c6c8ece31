package nbdtest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/rewind-dev/rewind/nbd"
)

// Memory is an in-memory nbd.Backend that tracks holes per block: a block
// is a hole until written, and becomes one again when zeroed or trimmed
// whole. It also implements nbd.FastZeroer, nbd.NoHoleZeroer and
// nbd.Cacher, and counts
// flushes and the bytes written since the last one.
type Memory struct {
	blockSize int64
	maxExts   int

	mu struct {
		sync.RWMutex
		data  []byte
		alloc []bool // per block: holds data
	}
	dirty   atomic.Int64 // bytes written, zeroed or trimmed since the last Flush
	flushes atomic.Int64
	caches  atomic.Int64
}

var (
	_ nbd.Backend      = (*Memory)(nil)
	_ nbd.FastZeroer   = (*Memory)(nil)
	_ nbd.Cacher       = (*Memory)(nil)
	_ nbd.NoHoleZeroer = (*Memory)(nil)
)

// NewMemory returns a Memory of size bytes, all holes, tracked in blocks of
// blockSize bytes.
func NewMemory(size int64, blockSize int) *Memory {
	m := &Memory{blockSize: int64(blockSize), maxExts: 1024}
	m.mu.data = make([]byte, size)
	m.mu.alloc = make([]bool, (size+m.blockSize-1)/m.blockSize)
	return m
}

// SetMaxExtents sets how many extents one Extents call returns at most
// (1024 by default), to make clients loop.
func (m *Memory) SetMaxExtents(n int) { m.maxExts = n }

func (m *Memory) Size() int64 { return int64(len(m.mu.data)) }

func (m *Memory) check(off, n int64) error {
	if off < 0 || n < 0 || off > m.Size() || n > m.Size()-off {
		return fmt.Errorf("nbdtest: range %d+%d outside %d: %w", off, n, m.Size(), syscall.EINVAL)
	}
	return nil
}

func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.mu.data[off:]), nil
}

func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.mu.data[off:], p)
	for b := off / m.blockSize; b*m.blockSize < off+int64(len(p)); b++ {
		m.mu.alloc[b] = true
	}
	m.dirty.Add(int64(len(p)))
	return len(p), nil
}

// WriteZeroes zeroes the range and makes whole blocks in it holes.
func (m *Memory) WriteZeroes(off, n int64) error {
	if err := m.check(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.mu.data[off : off+n])
	m.punchLocked(off, n)
	m.dirty.Add(n)
	return nil
}

// WriteZeroesNoHole zeroes the range and leaves it allocated.
func (m *Memory) WriteZeroesNoHole(off, n int64) error {
	if err := m.check(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.mu.data[off : off+n])
	for b := off / m.blockSize; b*m.blockSize < off+n; b++ {
		m.mu.alloc[b] = true
	}
	m.dirty.Add(n)
	return nil
}

// Trim zeroes and deallocates the whole blocks in the range.
func (m *Memory) Trim(off, n int64) error {
	if err := m.check(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first, last := m.wholeBlocks(off, n)
	if first < last {
		clear(m.mu.data[first*m.blockSize : min(last*m.blockSize, m.Size())])
	}
	m.punchLocked(off, n)
	m.dirty.Add(n)
	return nil
}

// wholeBlocks returns the blocks [first, last) wholly inside [off, off+n);
// the export's last, partial block counts as whole.
func (m *Memory) wholeBlocks(off, n int64) (first, last int64) {
	first = (off + m.blockSize - 1) / m.blockSize
	last = (off + n) / m.blockSize
	if off+n == m.Size() {
		last = int64(len(m.mu.alloc))
	}
	return first, max(first, last)
}

func (m *Memory) punchLocked(off, n int64) {
	first, last := m.wholeBlocks(off, n)
	for b := first; b < last; b++ {
		m.mu.alloc[b] = false
	}
}

func (m *Memory) Flush() error {
	m.flushes.Add(1)
	m.dirty.Store(0)
	return nil
}

// Extents reports runs of data and holes from off, at most SetMaxExtents
// of them.
func (m *Memory) Extents(off, n int64) ([]nbd.Extent, error) {
	if err := m.check(off, n); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var exts []nbd.Extent
	end := off + n
	for cur := off; cur < end && len(exts) < m.maxExts; {
		b := cur / m.blockSize
		hole := !m.mu.alloc[b]
		next := cur
		for next < end && !m.mu.alloc[next/m.blockSize] == hole {
			next = min((next/m.blockSize+1)*m.blockSize, end)
		}
		exts = append(exts, nbd.Extent{Offset: cur, Length: next - cur, Hole: hole})
		cur = next
	}
	return exts, nil
}

// FastZero says zeroing is always cheap here.
func (m *Memory) FastZero(off, n int64) bool { return true }

// Cache counts prefetch requests.
func (m *Memory) Cache(off, n int64) error {
	m.caches.Add(1)
	return m.check(off, n)
}

// Fill writes p at off directly, as data (for setting up tests).
func (m *Memory) Fill(p []byte, off int64) {
	if _, err := m.WriteAt(p, off); err != nil {
		panic(err)
	}
}

// Bytes returns a copy of the contents.
func (m *Memory) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.mu.data...)
}

// Allocated reports whether the block holding off holds data.
func (m *Memory) Allocated(off int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.mu.alloc[off/m.blockSize]
}

// Dirty is the number of bytes changed since the last Flush.
func (m *Memory) Dirty() int64 { return m.dirty.Load() }

// Flushes is the number of Flush calls.
func (m *Memory) Flushes() int64 { return m.flushes.Load() }

// Caches is the number of Cache calls.
func (m *Memory) Caches() int64 { return m.caches.Load() }
