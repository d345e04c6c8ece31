// Package hugemem hands out the buffers of the daemon's read paths from
// memory that the kernel backs with transparent huge pages, and recycles
// them.
//
// Why: fresh memory is dear on a virtual machine. Every first touch of a
// 4 KiB page is a fault, and a fault of guest memory the host has not
// backed yet (freed memory the guest gave back, as after a page cache
// drop) costs tens of microseconds: filling 1 GiB of fresh heap that way
// took 12.8 s here, where memory advised for huge pages before its first
// touch took 0.06-2.6 s (one fault per 2 MiB). The first read of a disk
// through the daemon fills its chunk cache and its decode and request
// buffers, and those faults were most of what made it slower than the
// second read.
//
// Memory from the Go heap cannot be advised in time: make zeroes a reused
// span before returning it, faulting it in small pages. This package maps
// its own regions, advises them, and never unmaps them, so a slice of a
// buffer stays valid for the life of the process whatever its holder
// does; a buffer given back to a Pool is handed out again, so memory in
// use is bounded by the peak of what was held at once. Without
// transparent huge pages (or mmap) it works the same, in small pages (or
// on the Go heap).
//
// The race detector sees only the Go heap, so it cannot see a buffer used
// after it was given back, which would serve another request's bytes.
// Built with the hugemempoison tag (make test does), a buffer given back
// is made inaccessible (PROT_NONE) until it is handed out again, and
// pools hand out the one given back first: any use after release faults
// and kills the test (see Poisoned). The ordinary build compiles the
// poisoning away.
package hugemem

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HugePage is the size of a transparent huge page on x86-64 and arm64
// with 4 KiB base pages.
const HugePage = 2 << 20

const (
	smallPage  = 4 << 10
	regionSize = 64 << 20 // mapped at a time, for small buffers
)

// noAdvice turns the huge page advice off (see SetHugePages).
var noAdvice atomic.Bool

// SetHugePages says whether regions mapped from now on are advised for
// transparent huge pages (the default). Off is for hosts where a huge
// page's first touch costs more than its 512 small pages' faults: on a
// virtual machine whose host takes back the guest's free memory in 2 MiB
// blocks, huge pages come from exactly that memory, and 256 MiB of them
// took 0.9-1.2 s to touch the first time where small pages took 0.15 s.
// Where the host backs all guest memory (or on bare metal) huge pages
// cost less. Memory already mapped keeps its advice.
func SetHugePages(on bool) { noAdvice.Store(!on) }

var arena struct {
	sync.Mutex
	rest []byte // the part of the last region not handed out yet
}

// Alloc returns n bytes of fresh memory, untouched (zero): rounded up to
// 4 KiB, and starting on a huge page boundary when n is a huge page or
// more. It is never freed; callers recycle it (see Pool).
func Alloc(n int) []byte {
	size := roundUp(n, smallPage)
	arena.Lock()
	defer arena.Unlock()
	skip := 0
	if size >= HugePage {
		skip = misalign(arena.rest)
	}
	if skip+size > len(arena.rest) {
		if size >= regionSize {
			return mapRegion(roundUp(size, HugePage))[:n:n]
		}
		arena.rest = mapRegion(regionSize)
		skip = 0
	}
	b := arena.rest[skip : skip+n : skip+n]
	arena.rest = arena.rest[skip+size:]
	return b
}

// misalign returns how many bytes b has before its first huge page
// boundary.
func misalign(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	if rem := int(uintptr(unsafe.Pointer(&b[0])) % HugePage); rem != 0 {
		return min(HugePage-rem, len(b))
	}
	return 0
}

// mapRegion maps n bytes (a multiple of HugePage) aligned to a huge page
// and asks for huge pages before anything touches them.
func mapRegion(n int) []byte {
	mem, err := unix.Mmap(-1, 0, n+HugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return make([]byte, n) // no mapping to be had: the heap, in small pages
	}
	skip := misalign(mem)
	b := mem[skip : skip+n : skip+n]
	// Advice only: without transparent huge pages the memory works the
	// same, in small pages.
	if !noAdvice.Load() {
		_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	}
	noteRegion(b)
	return b
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// Pool recycles buffers of one size. Unlike sync.Pool it keeps the
// buffers given back whatever the garbage collector does: the point is
// not to fault memory in again. Beyond its limit it keeps them without
// their memory (MADV_DONTNEED: still mapped, read as zeros, faulted in
// again when reused), so that a burst of large requests does not hold
// memory for good.
type Pool struct {
	size  int
	limit int // buffers kept with their memory
	mu    sync.Mutex
	hot   []*[]byte // with their memory; the last given back on top
	cold  []*[]byte // memory given back to the kernel
}

// NewPool returns a pool of buffers of size bytes that keeps up to limit
// bytes of them in memory (at least one buffer; limit < 0: all).
func NewPool(size int, limit int64) *Pool {
	p := &Pool{size: size, limit: int(min(limit/int64(size), 1<<30))}
	if limit < 0 {
		p.limit = 1 << 30
	}
	p.limit = max(p.limit, 1)
	return p
}

// Size is the length of the pool's buffers.
func (p *Pool) Size() int { return p.size }

// Get returns a buffer of Size bytes, holding any bytes.
func (p *Pool) Get() *[]byte {
	p.mu.Lock()
	var bp *[]byte
	switch {
	case Poisoned && len(p.hot) > 0: // the one given back first: poisoned longest
		bp, p.hot = p.hot[0], p.hot[1:]
	case Poisoned && len(p.cold) > 0:
		bp, p.cold = p.cold[0], p.cold[1:]
	case len(p.hot) > 0:
		k := len(p.hot)
		bp = p.hot[k-1] // the one given back last: likely in the CPU's cache
		p.hot = p.hot[:k-1]
	case len(p.cold) > 0:
		k := len(p.cold)
		bp = p.cold[k-1]
		p.cold = p.cold[:k-1]
	}
	p.mu.Unlock()
	if bp == nil {
		b := Alloc(p.size)
		return &b
	}
	unpoison(*bp)
	*bp = (*bp)[:p.size]
	return bp
}

// Put gives back a buffer from Get. Its holder must not use it again.
// Buffers of another capacity are ignored.
func (p *Pool) Put(bp *[]byte) {
	if bp == nil || cap(*bp) != p.size {
		return
	}
	poison(*bp) // before another Get can have it
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.hot) < p.limit {
		p.hot = append(p.hot, bp)
		return
	}
	// Whole pages only: the buffer may share its first and last page
	// with neighbours in use.
	b := (*bp)[:p.size]
	lo := roundUp(int(uintptr(unsafe.Pointer(&b[0]))), smallPage) - int(uintptr(unsafe.Pointer(&b[0])))
	hi := (int(uintptr(unsafe.Pointer(&b[0])))+len(b))/smallPage*smallPage - int(uintptr(unsafe.Pointer(&b[0])))
	if hi > lo {
		_ = unix.Madvise(b[lo:hi], unix.MADV_DONTNEED)
	}
	p.cold = append(p.cold, bp)
}

var shared struct {
	sync.Mutex
	pools map[int]*Pool
}

// Shared returns the process's pool of buffers of size bytes, made on
// first use, which keeps up to 64 MiB of them in memory: for buffers whose
// size is only known at run time (a volume's block size).
func Shared(size int) *Pool {
	shared.Lock()
	defer shared.Unlock()
	if shared.pools == nil {
		shared.pools = map[int]*Pool{}
	}
	p := shared.pools[size]
	if p == nil {
		p = NewPool(size, 64<<20)
		shared.pools[size] = p
	}
	return p
}
