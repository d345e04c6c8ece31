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
type Cache struct {
	next     Getter
	capacity int64
	mu       struct {
		sync.Mutex
		size  int64
		order *list.List // front = most recent; values are *cacheEntry
		byID  map[ID]*list.Element
	}
}

type cacheEntry struct {
	id   ID
	data []byte
}

var _ Getter = (*Cache)(nil)

// NewCache keeps up to capacity bytes of decoded chunks read from next.
func NewCache(next Getter, capacity int64) *Cache {
	c := &Cache{next: next, capacity: capacity}
	c.mu.order = list.New()
	c.mu.byID = map[ID]*list.Element{}
	return c
}

// Get returns the chunk from the cache or from the store below it.
func (c *Cache) Get(id ID) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.mu.byID[id]; ok {
		c.mu.order.MoveToFront(e)
		data := e.Value.(*cacheEntry).data
		c.mu.Unlock()
		return data, nil
	}
	c.mu.Unlock()
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
// fn may run on several goroutines at once. Chunks read are kept: raw ones
// as a copy, since a cache hit (one memmove) serves a repeated read at
// about twice the speed of a pread from the page cache with its checksum.
func (c *Cache) ReadMany(ids []ID, into [][]byte, fn func(i int, data []byte)) error {
	var missIDs []ID
	var missAt []int
	var missInto [][]byte
	c.mu.Lock()
	for i, id := range ids {
		if e, ok := c.mu.byID[id]; ok {
			c.mu.order.MoveToFront(e)
			data := e.Value.(*cacheEntry).data
			c.mu.Unlock()
			fn(i, data)
			c.mu.Lock()
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
	if m, ok := c.next.(ManyReader); ok {
		return m.ReadMany(missIDs, missInto, func(k int, data []byte, keep bool) {
			fn(missAt[k], data)
			if !keep {
				data = bytes.Clone(data)
			}
			c.add(missIDs[k], data)
		})
	}
	for k, id := range missIDs {
		data, err := c.next.Get(id)
		if err != nil {
			return err
		}
		fn(missAt[k], data)
		c.add(id, data)
	}
	return nil
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

// cached returns the chunk if the cache holds it.
func (c *Cache) cached(id ID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.mu.byID[id]
	if !ok {
		return nil, false
	}
	c.mu.order.MoveToFront(e)
	return e.Value.(*cacheEntry).data, true
}

func (c *Cache) add(id ID, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mu.byID[id]; ok || int64(len(data)) > c.capacity {
		return
	}
	c.mu.byID[id] = c.mu.order.PushFront(&cacheEntry{id: id, data: data})
	c.mu.size += int64(len(data))
	for c.mu.size > c.capacity {
		e := c.mu.order.Back()
		ent := e.Value.(*cacheEntry)
		c.mu.order.Remove(e)
		delete(c.mu.byID, ent.id)
		c.mu.size -= int64(len(ent.data))
	}
}
