package blockstore

import (
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

// GetMany returns each chunk of ids from the cache, reading those it
// lacks from the store below together (see Store.GetMany).
func (c *Cache) GetMany(ids []ID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	var missIDs []ID
	var missAt []int
	c.mu.Lock()
	for i, id := range ids {
		if e, ok := c.mu.byID[id]; ok {
			c.mu.order.MoveToFront(e)
			out[i] = e.Value.(*cacheEntry).data
			continue
		}
		missIDs = append(missIDs, id)
		missAt = append(missAt, i)
	}
	c.mu.Unlock()
	if len(missIDs) == 0 {
		return out, nil
	}
	var got [][]byte
	var err error
	if m, ok := c.next.(ManyGetter); ok && len(missIDs) > 1 {
		got, err = m.GetMany(missIDs)
	} else {
		got = make([][]byte, len(missIDs))
		for i, id := range missIDs {
			if got[i], err = c.next.Get(id); err != nil {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	for k, i := range missAt {
		out[i] = got[k]
		c.add(missIDs[k], got[k])
	}
	return out, nil
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
