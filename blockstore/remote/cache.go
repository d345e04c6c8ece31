package remote

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// blockSize is the unit of the pack cache and of a range GET.
const blockSize = 1 << 20

// cache keeps blocks of packs on local disk, least recently used out
// first, within a byte budget. It is emptied at open: it only ever
// holds copies.
type cache struct {
	dir string
	max int64

	mu      sync.Mutex
	size    int64
	entries map[blockKey]*list.Element
	lru     *list.List // of *cacheEntry, most recent first
	loading map[blockKey]*load
	// hot keeps the blocks fetched last in memory as well (a read that
	// follows a fetch, or its read-ahead, finds them there), hotMax of
	// them, oldest out first.
	hot      map[blockKey][]byte
	hotOrder []blockKey
}

// hotMax is how many fetched blocks stay in memory.
const hotMax = 32

type blockKey struct {
	pack string
	blk  int64
}

type cacheEntry struct {
	key  blockKey
	size int64
}

// load is a fetch in progress; waiters share its result.
type load struct {
	done chan struct{}
	data []byte
	err  error
}

func newCache(dir string, max int64) (*cache, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("empty the pack cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create the pack cache %s: %w", dir, err)
	}
	return &cache{dir: dir, max: max, entries: map[blockKey]*list.Element{}, lru: list.New(), loading: map[blockKey]*load{}, hot: map[blockKey][]byte{}}, nil
}

func (c *cache) path(k blockKey) string {
	return filepath.Join(c.dir, fmt.Sprintf("%s.%d", k.pack, k.blk))
}

// readAt copies the cached block k from off into b; ok is false when
// the block is not cached.
func (c *cache) readAt(k blockKey, b []byte, off int64) (n int, ok bool) {
	c.mu.Lock()
	if data, hot := c.hot[k]; hot {
		c.mu.Unlock()
		if off >= int64(len(data)) {
			return 0, false
		}
		return copy(b, data[off:]), true
	}
	e, ok := c.entries[k]
	if ok {
		c.lru.MoveToFront(e)
	}
	c.mu.Unlock()
	if !ok {
		return 0, false
	}
	f, err := os.Open(c.path(k))
	if err != nil {
		return 0, false // evicted meanwhile
	}
	defer f.Close()
	n, err = f.ReadAt(b, off)
	if err != nil && n < len(b) && int64(n)+off < e.Value.(*cacheEntry).size {
		return 0, false
	}
	return n, true
}

// get returns block k, fetching it with fetch when it is not cached
// (once, however many ask at the same time).
func (c *cache) get(k blockKey, fetch func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if l, ok := c.loading[k]; ok {
		c.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	if data, ok := c.hot[k]; ok {
		c.mu.Unlock()
		return data, nil
	}
	if _, ok := c.entries[k]; ok {
		c.mu.Unlock()
		b, err := os.ReadFile(c.path(k))
		if err == nil {
			return b, nil
		}
		c.mu.Lock()
	}
	l := &load{done: make(chan struct{})}
	c.loading[k] = l
	c.mu.Unlock()

	l.data, l.err = fetch()
	c.settle(k.pack, k.blk, []*load{l})
	return l.data, l.err
}

// settle ends the loads of blocks first, first+1, ... of a pack (nil:
// not this caller's), whose data or err is set: the blocks fetched go
// in memory, the waiters go, and then the blocks go to disk.
func (c *cache) settle(pack string, first int64, loads []*load) {
	for i, l := range loads {
		if l != nil && l.err == nil {
			c.addHot(blockKey{pack, first + int64(i)}, l.data)
		}
	}
	c.mu.Lock()
	for i, l := range loads {
		if l != nil {
			delete(c.loading, blockKey{pack, first + int64(i)})
		}
	}
	c.mu.Unlock()
	for _, l := range loads {
		if l != nil {
			close(l.done)
		}
	}
	for i, l := range loads {
		if l != nil && l.err == nil {
			c.store(blockKey{pack, first + int64(i)}, l.data) // after the waiters go: they read it in memory
		}
	}
}

// getRun fetches blocks first to last of a pack with one call of fetch,
// which returns their bytes one after another, and caches each. Blocks
// cached or being fetched at either end are left out of the run; one
// in the middle is fetched again but not cached again.
func (c *cache) getRun(pack string, first, last int64, fetch func(first, last int64) ([]byte, error)) {
	c.mu.Lock()
	for first <= last && c.presentLocked(blockKey{pack, first}) {
		first++
	}
	for last >= first && c.presentLocked(blockKey{pack, last}) {
		last--
	}
	if first > last {
		c.mu.Unlock()
		return
	}
	loads := make([]*load, last-first+1)
	for i := range loads {
		k := blockKey{pack, first + int64(i)}
		if !c.presentLocked(k) {
			loads[i] = &load{done: make(chan struct{})}
			c.loading[k] = loads[i]
		}
	}
	c.mu.Unlock()

	data, err := fetch(first, last)
	for i, l := range loads {
		if l == nil {
			continue
		}
		lo := int64(i) * blockSize
		hi := min(lo+blockSize, int64(len(data)))
		switch {
		case err != nil:
			l.err = err
		case lo >= hi:
			l.err = fmt.Errorf("pack %s: %d bytes fetched for blocks %d-%d", pack, len(data), first, last)
		default:
			l.data = data[lo:hi:hi]
		}
	}
	c.settle(pack, first, loads)
}

// presentLocked reports whether block k is cached or being fetched;
// c.mu is held.
func (c *cache) presentLocked(k blockKey) bool {
	_, ok := c.entries[k]
	_, loading := c.loading[k]
	_, hot := c.hot[k]
	return ok || loading || hot
}

// cached reports whether block k is cached or being fetched.
func (c *cache) cached(k blockKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.presentLocked(k)
}

func (c *cache) add(k blockKey, data []byte) {
	c.addHot(k, data)
	c.store(k, data)
}

// addHot keeps a fetched block in memory.
func (c *cache) addHot(k blockKey, data []byte) {
	c.mu.Lock()
	if _, ok := c.hot[k]; !ok {
		c.hot[k] = data
		c.hotOrder = append(c.hotOrder, k)
		if len(c.hotOrder) > hotMax {
			delete(c.hot, c.hotOrder[0])
			c.hotOrder = c.hotOrder[1:]
		}
	}
	c.mu.Unlock()
}

// store writes a fetched block to the cache on disk.
func (c *cache) store(k blockKey, data []byte) {
	if c.max <= 0 {
		return
	}
	if err := os.WriteFile(c.path(k), data, 0o640); err != nil {
		os.Remove(c.path(k))
		return // a cache that cannot write serves from the object store
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.size -= e.Value.(*cacheEntry).size
		c.lru.Remove(e)
	}
	c.entries[k] = c.lru.PushFront(&cacheEntry{k, int64(len(data))})
	c.size += int64(len(data))
	for c.size > c.max && c.lru.Len() > 1 {
		e := c.lru.Back()
		ce := e.Value.(*cacheEntry)
		c.lru.Remove(e)
		delete(c.entries, ce.key)
		c.size -= ce.size
		os.Remove(c.path(ce.key))
	}
}

// drop forgets every block of pack.
func (c *cache) drop(pack string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.hot {
		if k.pack == pack {
			delete(c.hot, k) // its place in hotOrder goes in turn
		}
	}
	for k, e := range c.entries {
		if k.pack == pack {
			c.size -= e.Value.(*cacheEntry).size
			c.lru.Remove(e)
			delete(c.entries, k)
			os.Remove(c.path(k))
		}
	}
}

// bytes returns the bytes cached.
func (c *cache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
