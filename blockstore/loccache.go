package blockstore

import "sync"

// locCache keeps the index entries of chunks read lately, so that a read
// of a chunk does not look its location up in Pebble every time: a Get
// cost 8-14 µs here, and a warm read of a disk through the daemon spent
// an eighth of its CPU on them.
//
// Entries are only ever added to the index, except that a chunk whose
// record was lost (see Has) is stored again under a new location; PutMany
// forgets the chunks it stores, and a read that fails on a remembered
// location forgets it and looks it up again (see readMany). A remembered
// location that went stale can therefore cost a failed read, never wrong
// bytes: every record is checked against its chunk's digest and CRC.
//
// Two generations of at most half the capacity each: a lookup that hits
// the old one moves the entry to the new one, and when the new one is
// full the old one is dropped. That keeps what is in use at the cost of
// one map operation, without a list to maintain.
type locCache struct {
	mu       sync.Mutex
	cur, old map[ID]location
	half     int
}

// locCacheEntries bounds the entries kept: 256 Ki of them cover 16 GiB of
// 64 KiB blocks in about 30 MB.
const locCacheEntries = 256 << 10

func newLocCache(entries int) *locCache {
	half := max(1, entries/2)
	return &locCache{cur: make(map[ID]location), old: make(map[ID]location), half: half}
}

func (c *locCache) get(id ID) (location, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if loc, ok := c.cur[id]; ok {
		return loc, true
	}
	loc, ok := c.old[id]
	if ok {
		delete(c.old, id)
		c.addLocked(id, loc)
	}
	return loc, ok
}

func (c *locCache) add(id ID, loc location) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(id, loc)
}

func (c *locCache) addLocked(id ID, loc location) {
	if len(c.cur) >= c.half {
		c.old, c.cur = c.cur, make(map[ID]location, c.half)
	}
	c.cur[id] = loc
}

// hint adds the known places of ids where the cache has no entry for
// them: never over an entry a read or a write put there, which is at
// least as fresh.
func (c *locCache) hint(ids []ID, places []Place) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		if !places[i].ok {
			continue
		}
		if _, ok := c.cur[id]; ok {
			continue
		}
		if _, ok := c.old[id]; ok {
			continue
		}
		c.addLocked(id, places[i].loc)
	}
}

func (c *locCache) forget(ids ...ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.cur, id)
		delete(c.old, id)
	}
}

// fill adds an entry loaded ahead of any read (see WarmLocations) unless
// the cache has one for id: never over an entry a read or a write put
// there, and never past the current generation, so that it evicts
// nothing. full reports that the generation has no room left.
func (c *locCache) fill(id ID, loc location) (added, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) >= c.half {
		return false, true
	}
	if _, ok := c.cur[id]; ok {
		return false, false
	}
	if _, ok := c.old[id]; ok {
		return false, false
	}
	c.cur[id] = loc
	return true, false
}
