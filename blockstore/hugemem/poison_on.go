//go:build hugemempoison

package hugemem

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poisoned reports whether this build poisons released buffers (the
// hugemempoison build tag, which make test sets).
//
// A buffer given back to a Pool is made inaccessible (mprotect PROT_NONE)
// until Get hands it out again, so any use after release, read or write,
// faults at once and kills the process instead of reading or changing
// another request's bytes; and pools hand out the buffer released longest
// ago, so that a released buffer stays poisoned as long as possible.
// Memory that is not from a mapped region (the heap fallback) cannot be
// protected without hurting its neighbours: it is filled with poisonByte.
const Poisoned = true

const poisonByte = 0xdb

// mapped lists the regions mapRegion made: only their buffers own whole
// pages that may be protected.
var mapped struct {
	sync.Mutex
	regions [][2]uintptr
}

func noteRegion(b []byte) {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	mapped.Lock()
	mapped.regions = append(mapped.regions, [2]uintptr{lo, lo + uintptr(len(b))})
	mapped.Unlock()
}

// pages returns the whole pages b (a buffer from Alloc) occupies, or nil
// when b is not from a mapped region.
func pages(b []byte) []byte {
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if lo%smallPage != 0 {
		return nil
	}
	n := roundUp(cap(b), smallPage)
	mapped.Lock()
	defer mapped.Unlock()
	for _, r := range mapped.regions {
		if lo >= r[0] && lo+uintptr(n) <= r[1] {
			return unsafe.Slice(unsafe.SliceData(b), n)
		}
	}
	return nil
}

// poison makes a released buffer inaccessible.
func poison(b []byte) {
	b = b[:cap(b)]
	if p := pages(b); p != nil {
		if err := unix.Mprotect(p, unix.PROT_NONE); err != nil {
			panic(fmt.Errorf("hugemem: poison a released buffer: %w", err))
		}
		return
	}
	for i := range b {
		b[i] = poisonByte
	}
}

// unpoison makes a buffer accessible again before Get hands it out.
func unpoison(b []byte) {
	if p := pages(b[:cap(b)]); p != nil {
		if err := unix.Mprotect(p, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			panic(fmt.Errorf("hugemem: unpoison a buffer: %w", err))
		}
	}
}
