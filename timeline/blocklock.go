package timeline

import "sync"

// blockStripes is how many locks a volume's blocks share: blocks b and
// b+blockStripes share one. Random writes at a queue depth of 32 rarely
// meet on a stripe.
const blockStripes = 256

// blockLocks lets clone writes of different blocks of a volume proceed
// side by side while writes of the same block take turns: a partial-block
// write reads the block, and must read what the previous write of it
// committed.
type blockLocks struct {
	stripes [blockStripes]sync.Mutex
}

// lock takes the locks of blocks [b0, b1) in stripe order (so two writes
// can never wait for each other) and returns what releases them.
func (l *blockLocks) lock(b0, b1 uint64) func() {
	if b1-b0 >= blockStripes {
		for i := range l.stripes {
			l.stripes[i].Lock()
		}
		return func() {
			for i := range l.stripes {
				l.stripes[i].Unlock()
			}
		}
	}
	// The stripes of a run of fewer than blockStripes blocks are distinct:
	// from b0's stripe up to the last, then from 0 if the run wraps.
	lo, hi := b0%blockStripes, b1%blockStripes
	var ranges [2][2]uint64
	if lo < hi || hi == 0 {
		end := hi
		if hi == 0 {
			end = blockStripes
		}
		ranges[0] = [2]uint64{lo, end}
	} else {
		ranges[0] = [2]uint64{0, hi}
		ranges[1] = [2]uint64{lo, blockStripes}
	}
	for _, r := range ranges {
		for i := r[0]; i < r[1]; i++ {
			l.stripes[i].Lock()
		}
	}
	return func() {
		for _, r := range ranges {
			for i := r[0]; i < r[1]; i++ {
				l.stripes[i].Unlock()
			}
		}
	}
}

// lockSpans takes the locks of the blocks of several writes at once
// (spans of blocks [b0, b1)), each stripe once, in stripe order, and
// returns what releases them.
func (l *blockLocks) lockSpans(spans [][2]int64) func() {
	var held [blockStripes]bool
	for _, s := range spans {
		if s[1]-s[0] >= blockStripes {
			return l.lock(0, blockStripes)
		}
		for b := s[0]; b < s[1]; b++ {
			held[b%blockStripes] = true
		}
	}
	for i, h := range held {
		if h {
			l.stripes[i].Lock()
		}
	}
	return func() {
		for i, h := range held {
			if h {
				l.stripes[i].Unlock()
			}
		}
	}
}
