package blockstore

import "github.com/rewind-dev/rewind/blockstore/hugemem"

// slabs hands out the memory of a Cache's entries from 2 MiB slabs that
// the kernel backs with transparent huge pages where it can.
//
// Why: a cache that fills with a fresh 64 KiB allocation per chunk faults
// its memory in 4 KiB at a time, and on a virtual machine each fault is
// dear: filling 1 GiB that way took 2.8-2.9 s of CPU where the same
// memory in huge pages took 0.07-1.2 s, which made the first read of a
// disk through the daemon run at half the speed of the second. A slab's memory is also
// reused as entries are evicted, instead of becoming garbage.
//
// A slab is carved into slots of one power-of-two size class, from 4 KiB
// to the slab size; a slab with no slot in use goes back to a free list
// and may take any class next. The memory comes from hugemem: advised for
// huge pages before its first touch (memory from the Go heap is zeroed,
// and so faulted in small pages, before it can be advised), and never
// unmapped, so that it lives as long as any slice of it, whatever a
// reader does. slabs is not safe for concurrent use: Cache calls it
// under its lock.
type slabs struct {
	limit   int                 // slabs that may be made at most
	all     []*slab             // slabs made so far
	empty   []*slab             // slabs with no slot in use
	partial [numClasses][]*slab // slabs of a class with a free slot
}

const (
	slabSize     = 2 << 20
	minSlotShift = 12 // 4 KiB, the smallest block size
	numClasses   = 10 // 4 KiB ... 2 MiB
)

type slab struct {
	mem       []byte
	class     int
	free      []int32 // free slot numbers, a stack
	used      int
	partialAt int // index in slabs.partial[class], or -1
}

// slot is one entry's memory: slot number idx of s.
type slot struct {
	s   *slab
	idx int32
}

func newSlabs(capacity int64) *slabs {
	return &slabs{limit: max(1, int(capacity/slabSize))}
}

// slotClass returns the class whose slots hold n bytes, and false when n
// is larger than a slab.
func slotClass(n int) (int, bool) {
	for c := 0; c < numClasses; c++ {
		if n <= 1<<(minSlotShift+c) {
			return c, true
		}
	}
	return 0, false
}

func classSize(c int) int { return 1 << (minSlotShift + c) }

// alloc returns a slot for n bytes, and false when n is too large for a
// slab or every slab it may make is in use by other classes or full.
func (a *slabs) alloc(n int) (slot, bool) {
	c, ok := slotClass(n)
	if !ok {
		return slot{}, false
	}
	if len(a.partial[c]) == 0 {
		s := a.emptySlab()
		if s == nil {
			return slot{}, false
		}
		s.class = c
		count := slabSize / classSize(c)
		s.free = s.free[:0]
		for i := count - 1; i >= 0; i-- {
			s.free = append(s.free, int32(i))
		}
		a.addPartial(s)
	}
	s := a.partial[c][len(a.partial[c])-1]
	idx := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	s.used++
	if len(s.free) == 0 {
		a.removePartial(s)
	}
	return slot{s, idx}, true
}

// bytes returns the first n bytes of the slot's memory, capped at n.
func (sl slot) bytes(n int) []byte {
	size := classSize(sl.s.class)
	off := int(sl.idx) * size
	return sl.s.mem[off : off+n : off+n]
}

// size is the memory the slot takes.
func (sl slot) size() int { return classSize(sl.s.class) }

func (a *slabs) free(sl slot) {
	s := sl.s
	wasFull := len(s.free) == 0
	s.free = append(s.free, sl.idx)
	s.used--
	switch {
	case s.used == 0:
		if !wasFull {
			a.removePartial(s)
		}
		a.empty = append(a.empty, s)
	case wasFull:
		a.addPartial(s)
	}
}

func (a *slabs) addPartial(s *slab) {
	s.partialAt = len(a.partial[s.class])
	a.partial[s.class] = append(a.partial[s.class], s)
}

func (a *slabs) removePartial(s *slab) {
	list := a.partial[s.class]
	last := list[len(list)-1]
	list[s.partialAt] = last
	last.partialAt = s.partialAt
	a.partial[s.class] = list[:len(list)-1]
	s.partialAt = -1
}

// emptySlab returns a slab with no slot in use, taking one from the
// process's slab memory if the limit allows, or nil.
func (a *slabs) emptySlab() *slab {
	if n := len(a.empty); n > 0 {
		s := a.empty[n-1]
		a.empty = a.empty[:n-1]
		return s
	}
	if len(a.all) >= a.limit {
		return nil
	}
	s := &slab{mem: *slabMemory.Get(), partialAt: -1}
	a.all = append(a.all, s)
	return s
}

// release gives the memory of every slab back to the process, for the
// next cache: none of it may be in use.
func (a *slabs) release() {
	for _, s := range a.all {
		mem := s.mem
		slabMemory.Put(&mem)
	}
	*a = slabs{limit: a.limit}
}

// slabMemory recycles slab memory between the caches of a process (a
// test opens many stores); it is never unmapped, so a slice of it stays
// valid whatever its holder does.
var slabMemory = hugemem.NewPool(slabSize, -1)
