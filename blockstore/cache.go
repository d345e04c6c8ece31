package blockstore

import (
	"bytes"
	"container/list"
	"sync"
)

// Getter reads chunks.
type Getter interface {
	Get(id ID) ([]byte, error)
}

// Cache is an LRU of decoded chunks in front of a Getter. Chunks are
// immutable, so entries never need invalidating. Callers must not modify
// the slices it returns.
//
// A Cache from NewCache keeps the slices it is given or reads. One from
// NewSlabCache copies chunks into slabs of huge pages (see slabs) and
// reuses that memory as it evicts; its entries are pinned while ReadMany
// hands them to a callback, and Get returns copies.
type Cache struct {
	next     Getter
	capacity int64
	mu       struct {
		sync.Mutex
		size   int64
		order  *list.List // front = most recent; values are *cacheEntry
		byID   map[ID]*list.Element
		slabs  *slabs // nil: entries live on the heap
		pinned int    // entries held by callbacks
	}
}

type cacheEntry struct {
	id   ID
	data []byte
	// Slab caches only: the entry's memory, how many callbacks are using
	// it, and whether it was evicted meanwhile (its slot is freed when
	// the last callback returns).
	slot    slot
	pins    int
	evicted bool
}

var _ Getter = (*Cache)(nil)

// NewCache keeps up to capacity bytes of decoded chunks read from next.
func NewCache(next Getter, capacity int64) *Cache {
	c := &Cache{next: next, capacity: capacity}
	c.mu.order = list.New()
	c.mu.byID = map[ID]*list.Element{}
	return c
}

// NewSlabCache is NewCache with entries copied into huge-page slabs: for
// a cache of many megabytes that fills as a disk is first read.
func NewSlabCache(next Getter, capacity int64) *Cache {
	c := NewCache(next, capacity)
	c.mu.slabs = newSlabs(capacity)
	return c
}

// Close empties the cache. A slab cache gives its memory back to the
// process for the next one, unless a callback of ReadMany still holds an
// entry (then the memory stays where it is). The cache keeps working,
// empty, after Close.
func (c *Cache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.slabs != nil {
		if c.mu.pinned > 0 {
			return
		}
		c.mu.slabs.release()
	}
	c.mu.order.Init()
	clear(c.mu.byID)
	c.mu.size = 0
}

// Get returns the chunk from the cache or from the store below it.
func (c *Cache) Get(id ID) ([]byte, error) {
	if data, ok := c.cached(id); ok {
		return data, nil
	}
	data, err := c.next.Get(id)
	if err != nil {
		return nil, err
	}
	c.add(id, data)
	return data, nil
}

// ReadMany calls fn(i, data) for each chunk ids[i], from the cache or,
// for those it lacks, from the store below, read together (see
// Store.ReadMany, also for into); data is valid only during the call, and
// fn may run on several goroutines at once.
//
// Chunks read are kept as copies, except those read straight into the
// caller's buffer: raw chunks that fill a whole block of it, as a
// sequential read of a disk asks for them. Their records are in the
// kernel's page cache already, and a second read costs one preadv and a
// checksum, while keeping them would copy every block of a first read of
// a disk into new memory (which doubled the time of that read). Raw
// chunks read in part (small random reads) are kept: a hit then saves
// reading and checking a whole record for a few kilobytes of it. Nor are
// shifted duplicates kept that were rebuilt from raw chunks for a read of
// the whole block: rebuilding one costs about what reading its sources
// does, while keeping it costs new memory on a first read of a disk. Read
// in part, they are kept, as raw chunks are.
func (c *Cache) ReadMany(ids []ID, into [][]byte, fn func(i int, data []byte)) error {
	return c.readMany(ids, into, true, fn)
}

// ReadManyScan is ReadMany for one pass over a whole disk (an export, a
// copy): it serves what the cache holds but keeps nothing it reads, which
// would only evict the chunks that other readers come back to.
func (c *Cache) ReadManyScan(ids []ID, into [][]byte, fn func(i int, data []byte)) error {
	return c.readMany(ids, into, false, fn)
}

func (c *Cache) readMany(ids []ID, into [][]byte, keep bool, fn func(i int, data []byte)) error {
	var missIDs []ID
	var missAt []int
	var missInto [][]byte
	c.mu.Lock()
	for i, id := range ids {
		if e, ok := c.mu.byID[id]; ok {
			c.mu.order.MoveToFront(e)
			ent := e.Value.(*cacheEntry)
			ent.pins++
			c.mu.pinned++
			c.mu.Unlock()
			fn(i, ent.data)
			c.mu.Lock()
			c.unpin(ent)
			continue
		}
		missIDs = append(missIDs, id)
		missAt = append(missAt, i)
		if into != nil {
			missInto = append(missInto, into[i])
		}
	}
	c.mu.Unlock()
	if len(missIDs) == 0 {
		return nil
	}
	if st, ok := c.next.(*Store); ok && keep {
		// The other members of a bundle come with it: decoding it again
		// for each would cost sixteen times a chunk's decoding, and
		// reads near a block soon want its neighbours.
		sib := func(id ID, data []byte) { c.addRead(id, data, false) }
		return st.readManySiblings(missIDs, missInto, sib, func(k int, data []byte, cheap bool) {
			fn(missAt[k], data)
			whole := missInto != nil && missInto[k] != nil
			if !(cheap && whole) && !inPlace(data, missInto, k) {
				c.addRead(missIDs[k], data, false)
			}
		})
	}
	if m, ok := c.next.(ManyReader); ok {
		return m.ReadMany(missIDs, missInto, func(k int, data []byte) {
			fn(missAt[k], data)
			if !keep || inPlace(data, missInto, k) {
				return
			}
			c.addRead(missIDs[k], data, false)
		})
	}
	for k, id := range missIDs {
		data, err := c.next.Get(id)
		if err != nil {
			return err
		}
		fn(missAt[k], data)
		if keep {
			c.add(id, data)
		}
	}
	return nil
}

// Has reports whether the cache holds chunk id, without counting it as a
// use.
func (c *Cache) Has(id ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.mu.byID[id]
	return ok
}

// inPlace reports whether data is the buffer into[k] itself.
func inPlace(data []byte, into [][]byte, k int) bool {
	return into != nil && len(data) > 0 && len(into[k]) == len(data) && &into[k][0] == &data[0]
}

// GetMany returns the decoded bytes of each chunk of ids (see ReadMany).
func (c *Cache) GetMany(ids []ID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	err := c.ReadMany(ids, nil, func(i int, data []byte) { out[i] = bytes.Clone(data) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// cached returns the chunk if the cache holds it: a copy from a slab
// cache.
func (c *Cache) cached(id ID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.mu.byID[id]
	if !ok {
		return nil, false
	}
	c.mu.order.MoveToFront(e)
	data := e.Value.(*cacheEntry).data
	if c.mu.slabs != nil {
		data = bytes.Clone(data)
	}
	return data, true
}

// Peek calls fn with the bytes the cache holds under id, valid only
// during the call, and reports whether it held any; it never asks the
// store. Callers may keep bytes of their own making under an ID of their
// own (see Add), such as a block put together from several chunks.
func (c *Cache) Peek(id ID, fn func(data []byte)) bool {
	c.mu.Lock()
	e, ok := c.mu.byID[id]
	if !ok {
		c.mu.Unlock()
		return false
	}
	c.mu.order.MoveToFront(e)
	ent := e.Value.(*cacheEntry)
	ent.pins++
	c.mu.pinned++
	c.mu.Unlock()
	fn(ent.data)
	c.mu.Lock()
	c.unpin(ent)
	c.mu.Unlock()
	return true
}

// Add keeps a copy of data, the bytes of chunk id: a writer adds the
// chunk it just stored, which the next write or read of its block comes
// back to (a clone's hot blocks), so that it need not be read and
// decoded, or rebuilt from its sources, again.
func (c *Cache) Add(id ID, data []byte) { c.addRead(id, data, false) }

// add keeps data, which the caller gives up.
func (c *Cache) add(id ID, data []byte) { c.addRead(id, data, true) }

// addRead keeps a chunk just read: data itself when the caller gives it
// up (owned) and entries live on the heap, else a copy.
func (c *Cache) addRead(id ID, data []byte, owned bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mu.byID[id]; ok || int64(len(data)) > c.capacity {
		return
	}
	ent := &cacheEntry{id: id}
	size := int64(len(data))
	if a := c.mu.slabs; a != nil {
		sl, ok := a.alloc(len(data))
		for !ok && c.mu.order.Len() > 0 {
			c.evictOldest()
			sl, ok = a.alloc(len(data))
		}
		if !ok {
			return // too large for a slab, or every slab pinned
		}
		ent.slot, ent.data = sl, sl.bytes(len(data))
		copy(ent.data, data)
		size = int64(sl.size())
	} else {
		if !owned {
			data = bytes.Clone(data)
		}
		ent.data = data
	}
	c.mu.byID[id] = c.mu.order.PushFront(ent)
	c.mu.size += size
	for c.mu.size > c.capacity {
		c.evictOldest()
	}
}

// evictOldest drops the least recently used entry. c.mu is held.
func (c *Cache) evictOldest() {
	e := c.mu.order.Back()
	ent := e.Value.(*cacheEntry)
	c.mu.order.Remove(e)
	delete(c.mu.byID, ent.id)
	if c.mu.slabs == nil {
		c.mu.size -= int64(len(ent.data))
		return
	}
	c.mu.size -= int64(ent.slot.size())
	ent.evicted = true
	if ent.pins == 0 {
		c.mu.slabs.free(ent.slot)
	}
}

// unpin ends a callback's use of ent. c.mu is held.
func (c *Cache) unpin(ent *cacheEntry) {
	ent.pins--
	c.mu.pinned--
	if ent.evicted && ent.pins == 0 && c.mu.slabs != nil {
		c.mu.slabs.free(ent.slot)
	}
}
