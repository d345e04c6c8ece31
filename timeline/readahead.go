package timeline

import (
	"sync"

	"github.com/rewind-dev/rewind/blockstore"
)

// Read-ahead. A client that reads a disk in small pieces one or a few at
// a time (a booting guest, qemu-img, dd with a small block size) waits
// for each piece before it asks for the next, so each block it comes to
// that is not in the chunk cache stalls it for a read, a check and maybe
// a decode. The kernel hides that for a server of a plain file with its
// own read-ahead; this is that for a view: once small reads (less than a
// block each) come in order, the blocks that follow are read into the
// chunk cache in the background, readAheadBlocks at a time, before the
// client gets to them.
//
// Only small reads start it. Whole blocks read in order (nbdcopy, an
// export) are read in place, and their raw chunks stay out of the cache on
// purpose (see blockstore.Cache.ReadMany); small reads keep every chunk
// they touch anyway, so reading those chunks a little early costs no
// memory they would not have cost. The cache is keyed by digest, so what
// is read ahead is right whatever the view is.
const readAheadBlocks = 16

// readAhead is a view's read-ahead state.
type readAhead struct {
	mu      sync.Mutex
	next    int64 // where an in-order reader reads next
	until   int64 // blocks before it are read ahead, or being read
	running bool
}

// readAhead notes a read of n bytes at off, n less than a block, and
// reads the next blocks into the cache in the background if it continues
// an in-order run that is getting close to the end of what was read ahead.
func (v *View) readAhead(m *Volume, t int64, off, n int64) {
	bs := m.BlockSize
	after := (off+n-1)/bs + 1 // the first block past this read
	ra := &v.ra
	ra.mu.Lock()
	inOrder := off == ra.next
	ra.next = off + n
	if !inOrder {
		ra.until = after
	}
	if !inOrder || ra.running || ra.until-after >= readAheadBlocks/2 {
		ra.mu.Unlock()
		return
	}
	from := max(ra.until, after)
	to := min(after+readAheadBlocks, (m.SizeAt(t)+bs-1)/bs)
	if from >= to {
		ra.mu.Unlock()
		return
	}
	bg := &v.s.background
	bg.Lock()
	defer bg.Unlock()
	if bg.closing {
		ra.mu.Unlock()
		return
	}
	ra.until, ra.running = to, true
	ra.mu.Unlock()
	bg.wg.Add(1)
	go func() {
		defer bg.wg.Done()
		v.s.prefetch(m, t, from, to, v.refs)
		ra.mu.Lock()
		ra.running = false
		ra.mu.Unlock()
	}()
}

// prefetch reads the chunks of blocks [from, to) of m as of t that the
// cache lacks into it. Errors are left to the reads that need the blocks.
func (s *Store) prefetch(m *Volume, t int64, from, to int64, refs *refCache) {
	blocks := make([]blockRef, to-from)
	if err := s.resolveCached(refs, m, t, uint64(from), blocks); err != nil {
		return
	}
	var ids []blockstore.ID
	seen := map[blockstore.ID]bool{}
	for _, r := range blocks {
		if r.kind == refChunk && !seen[r.id] && !s.cache.Has(r.id) {
			seen[r.id] = true
			ids = append(ids, r.id)
		}
	}
	if len(ids) > 0 {
		_ = s.cache.ReadMany(ids, nil, func(int, []byte) {})
	}
}
