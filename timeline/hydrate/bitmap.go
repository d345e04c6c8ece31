package hydrate

import "math/bits"

// bitmap is a fixed-size set of granule indexes with a running count.
// It is not safe for concurrent use; the Copier guards its bitmaps with
// its mutex.
type bitmap struct {
	w     []uint64
	n     int // number of bits
	count int // bits set
}

func newBitmap(n int) bitmap { return bitmap{w: make([]uint64, (n+63)/64), n: n} }

func (b *bitmap) get(i int) bool { return b.w[i/64]&(1<<(uint(i)%64)) != 0 }

// setRange sets bits [lo, hi).
func (b *bitmap) setRange(lo, hi int) {
	for i := lo; i < hi; i++ {
		m := uint64(1) << (uint(i) % 64)
		if b.w[i/64]&m == 0 {
			b.w[i/64] |= m
			b.count++
		}
	}
}

// clearRange clears bits [lo, hi).
func (b *bitmap) clearRange(lo, hi int) {
	for i := lo; i < hi; i++ {
		m := uint64(1) << (uint(i) % 64)
		if b.w[i/64]&m != 0 {
			b.w[i/64] &^= m
			b.count--
		}
	}
}

// allSet reports whether every bit of [lo, hi) is set.
func (b *bitmap) allSet(lo, hi int) bool {
	for i := lo; i < hi; i++ {
		if !b.get(i) {
			return false
		}
	}
	return true
}

// anySet reports whether a bit of [lo, hi) is set.
func (b *bitmap) anySet(lo, hi int) bool {
	for i := lo; i < hi; i++ {
		if b.get(i) {
			return true
		}
	}
	return false
}

// nextAndNot returns the first i in [lo, hi) set in b and clear in not,
// or -1.
func (b *bitmap) nextAndNot(not *bitmap, lo, hi int) int {
	for i := lo; i < hi; {
		k := i / 64
		word := (b.w[k] &^ not.w[k]) >> (uint(i) % 64)
		if word != 0 {
			if j := i + bits.TrailingZeros64(word); j < hi {
				return j
			}
			return -1
		}
		i = (k + 1) * 64
	}
	return -1
}

// or returns a copy of b with the bits of o set too.
func (b *bitmap) or(o *bitmap) bitmap {
	c := newBitmap(b.n)
	for k := range c.w {
		c.w[k] = b.w[k] | o.w[k]
		c.count += bits.OnesCount64(c.w[k])
	}
	return c
}

// andNot clears in b every bit set in o.
func (b *bitmap) andNot(o *bitmap) {
	for i := range b.w {
		b.w[i] &^= o.w[i]
	}
	b.recount()
}

func (b *bitmap) clone() bitmap {
	c := bitmap{w: append([]uint64(nil), b.w...), n: b.n, count: b.count}
	return c
}

// recount recomputes count after w was filled from outside.
func (b *bitmap) recount() {
	b.count = 0
	for k := range b.w {
		b.count += bits.OnesCount64(b.w[k])
	}
}
