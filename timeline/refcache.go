package timeline

import "sync"

// refCacheMax bounds a view's remembered blocks (about 40 bytes each);
// a full cache starts again empty.
const refCacheMax = 1 << 18

// refCache remembers what blocks hold as of a fixed view's instant. That
// never changes, so entries need no invalidation; it spares the index a
// second lookup when a client asks for block status and then reads the
// same range, as NBD clients do for every read.
type refCache struct {
	mu struct {
		sync.Mutex
		m map[uint64]blockRef
	}
}

func newRefCache() *refCache {
	c := &refCache{}
	c.mu.m = make(map[uint64]blockRef)
	return c
}

// lookup fills out from the cache; it reports false unless every block
// was there.
func (c *refCache) lookup(b0 uint64, out []blockRef) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range out {
		r, ok := c.mu.m[b0+uint64(i)]
		if !ok {
			return false
		}
		out[i] = r
	}
	return true
}

func (c *refCache) store(b0 uint64, refs []blockRef) {
	if len(refs) > refCacheMax/4 {
		return // a huge scan (export, diff) would only evict the hot set
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.mu.m)+len(refs) > refCacheMax {
		clear(c.mu.m)
	}
	for i, r := range refs {
		c.mu.m[b0+uint64(i)] = r
	}
}

// resolveCached is resolve through c, when c is not nil.
func (s *Store) resolveCached(c *refCache, v *Volume, t int64, b0 uint64, out []blockRef) error {
	if c != nil && c.lookup(b0, out) {
		return nil
	}
	if err := s.resolve(v, t, b0, out); err != nil {
		return err
	}
	if c != nil {
		c.store(b0, out)
	}
	return nil
}
