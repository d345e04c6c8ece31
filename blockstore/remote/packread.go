package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// readRemote reads a pack from the object store, block by block through
// the cache.
func (p *Packs) readRemote(name string, b []byte, off int64) (int, error) {
	r, ok := p.remoteOf(name)
	if !ok {
		return 0, fmt.Errorf("pack %s: %w", name, os.ErrNotExist)
	}
	size := r.size()
	if off >= size {
		return 0, io.EOF
	}
	want := b
	if off+int64(len(b)) > size {
		want = b[:size-off]
	}
	done := 0
	for done < len(want) {
		pos := off + int64(done)
		k := blockKey{name, pos / blockSize}
		boff := pos - k.blk*blockSize
		p.readingAhead(name, k.blk, size)
		n, ok := p.cache.readAt(k, want[done:min(len(want), done+int(blockSize-boff))], boff)
		if !ok {
			if k.blk > 0 && p.cache.cached(blockKey{name, k.blk - 1}) {
				// Read in order: the rest of the run comes with it.
				p.fetchRun(name, k.blk, min(runEnd(k.blk), (size-1)/blockSize), size)
			}
			data, err := p.cache.get(k, func() ([]byte, error) { return p.fetch(name, k.blk, size) })
			if err != nil {
				return done, err
			}
			if boff >= int64(len(data)) {
				return done, io.ErrUnexpectedEOF
			}
			n = copy(want[done:], data[boff:])
		}
		done += n
	}
	if len(want) < len(b) {
		return done, io.EOF
	}
	return done, nil
}

// readingAhead starts fetching the blocks after blk when the pack is
// being read in order, aheadRun blocks to a request.
func (p *Packs) readingAhead(name string, blk, size int64) {
	p.mu.Lock()
	last, ok := p.seq[name]
	p.seq[name] = blk
	p.mu.Unlock()
	if ok && last == blk {
		return // still in the block the last read was in
	}
	// In order when the block before is here: each of several streams
	// reading one pack in order (NBD clients with a few connections)
	// keeps its read-ahead going.
	if blk > 0 && !p.cache.cached(blockKey{name, blk - 1}) {
		return
	}
	// The last block to fetch: readAhead past blk, on to the end of
	// its run, so that the window moving on asks for whole runs.
	end := min(runEnd(blk+readAhead), (size-1)/blockSize)
	for next := blk + 1; next <= end; {
		// Runs end at multiples of aheadRun blocks, so that streams
		// ask for the same runs.
		first, last := next, min(end, runEnd(next))
		next = last + 1
		select {
		case p.sem <- struct{}{}:
		default:
			return // enough in flight
		}
		go func() {
			defer func() { <-p.sem }()
			p.fetchRun(name, first, last, size)
		}()
	}
}

// runEnd returns the last block of the run of aheadRun blocks that
// holds blk.
func runEnd(blk int64) int64 { return (blk/aheadRun+1)*aheadRun - 1 }

// fetchRun fetches blocks first to last of a pack, those not cached or
// on their way, in one GET, and caches them.
func (p *Packs) fetchRun(name string, first, last, size int64) {
	p.cache.getRun(name, first, last, func(first, last int64) ([]byte, error) {
		off := first * blockSize
		return p.fetchRange(name, off, min((last+1)*blockSize, size)-off)
	})
}

// fetch reads block blk of a pack from the object store.
func (p *Packs) fetch(name string, blk, size int64) ([]byte, error) {
	off := blk * blockSize
	return p.fetchRange(name, off, min(blockSize, size-off))
}

// fetchRange reads n bytes of a pack at off from the object store.
func (p *Packs) fetchRange(name string, off, n int64) ([]byte, error) {
	r, ok := p.remoteOf(name)
	if !ok {
		return nil, fmt.Errorf("pack %s: %w", name, os.ErrNotExist)
	}
	if r.whole >= 0 {
		return p.c.get(packsPrefix+"/"+name, off, n)
	}
	for _, sg := range r.segs {
		if sg.off <= off && off+n <= sg.end() {
			// Within one segment (the usual case): its bytes as they come.
			data, err := p.c.get(segName(segPrefix, name, sg.off), off-sg.off, n)
			if errors.Is(err, objstore.ErrNotExist) && p.refresh(name) {
				return p.c.get(packsPrefix+"/"+name, off, n)
			}
			return data, err
		}
	}
	b := make([]byte, n)
	err := p.readSegs(name, r.segs, b, off)
	if errors.Is(err, objstore.ErrNotExist) && p.refresh(name) {
		// Another writer sealed it meanwhile (this is a reader).
		return p.c.get(packsPrefix+"/"+name, off, n)
	}
	return b, err
}

// refresh looks for a whole object of a pack known in segments; it
// reports whether there is one.
func (p *Packs) refresh(name string) bool {
	var size int64
	err := p.c.retry("stat "+name, func(ctx context.Context) error {
		var err error
		size, err = p.c.b.Stat(ctx, packsPrefix+"/"+name)
		return err
	})
	if err != nil {
		return false
	}
	p.mu.Lock()
	r := p.rp(name)
	r.whole, r.segs = size, nil
	p.mu.Unlock()
	return true
}

// readSegs fills b from off with the pack's segments (what none covers
// stays zero: bytes no index entry names).
func (p *Packs) readSegs(name string, segs []seg, b []byte, off int64) error {
	end := off + int64(len(b))
	for _, s := range segs {
		lo, hi := max(s.off, off), min(s.end(), end)
		if lo >= hi {
			continue
		}
		data, err := p.c.get(segName(segPrefix, name, s.off), lo-s.off, hi-lo)
		if err != nil {
			return err
		}
		copy(b[lo-off:], data)
	}
	return nil
}
