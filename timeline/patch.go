package timeline

import (
	"fmt"
	"sync"

	"github.com/rewind-dev/rewind/blockstore"
)

// maxPatches bounds a block's run of patches in one volume: a write of
// part of a block whose run is this long reads the block and stores it
// whole, as a new base. A read of a patched block reads its base and up
// to this many small chunks; a write of part of a block reads nothing in
// the other cases.
const maxPatches = 16

// assembledID names a patched block put together in the chunk cache: a
// digest of its base and patches, which no chunk's digest can equal (a
// chunk is named by the digest of its bytes, never of this prefix and a
// description of them).
func assembledID(r *blockRef) blockstore.ID {
	b := make([]byte, 0, 64+len(r.patches)*41)
	b = append(b, "rewind assembled block\x00"...)
	b = append(b, byte(r.kind))
	b = append(b, r.id[:]...)
	for _, p := range r.patches {
		b = appendPatch(b, p)
	}
	return blockstore.Sum(b)
}

// assembled returns assembledID(r), which resolve computed.
func (r *blockRef) assembled() blockstore.ID {
	if r.asm == (blockstore.ID{}) {
		return assembledID(r)
	}
	return r.asm
}

// assemble puts together in blk (the block's length) what the patched
// block r holds: its base, then each patch over it in order. The block
// put together is kept in the chunk cache (with keep), so that the next
// small read of it copies it at once: fio's 4 KiB reads of a clone after
// 100,000 random writes (up to 16 patches a block) had run at a third of
// their speed before any.
func (s *Store) assemble(r *blockRef, blk []byte, keep bool) error {
	key := r.assembled()
	if s.cache.Peek(key, func(data []byte) { clear(blk[copy(blk, data):]) }) {
		return nil
	}
	if err := s.assembleFrom(r, blk, keep); err != nil {
		return err
	}
	if keep {
		s.cache.Add(key, blk)
	}
	return nil
}

func (s *Store) assembleFrom(r *blockRef, blk []byte, keep bool) error {
	var ids []blockstore.ID
	at := map[blockstore.ID]int{}
	r.chunks(func(id blockstore.ID) {
		if _, ok := at[id]; !ok {
			at[id] = len(ids)
			ids = append(ids, id)
		}
	})
	datas := make([][]byte, len(ids))
	read := s.cache.ReadMany
	if !keep {
		read = s.cache.ReadManyScan
	}
	if len(ids) > 0 {
		err := read(ids, nil, func(k int, data []byte) {
			datas[k] = append([]byte(nil), data...)
		})
		if err != nil {
			return err
		}
	}
	if r.kind == refChunk {
		clear(blk[copy(blk, datas[at[r.id]]):])
	} else {
		clear(blk)
	}
	return applyPatches(blk, r.patches, datas, at)
}

// applyPatches lays patches over blk, oldest first; the bytes of patch
// chunk id are datas[at[id]].
func applyPatches(blk []byte, patches []patch, datas [][]byte, at map[blockstore.ID]int) error {
	for _, p := range patches {
		lo, hi := int64(p.off), int64(p.off)+int64(p.n)
		if hi > int64(len(blk)) {
			return fmt.Errorf("%w: a patch of bytes %d-%d of a block of %d", blockstore.ErrCorrupt, lo, hi, len(blk))
		}
		dst := blk[lo:hi]
		if p.zero {
			clear(dst)
			continue
		}
		data := datas[at[p.id]]
		if len(data) != len(dst) {
			return fmt.Errorf("%w: a patch of %d bytes holds %d", blockstore.ErrCorrupt, len(dst), len(data))
		}
		copy(dst, data)
	}
	return nil
}

// patchInPlace lays the patches of blocks[i], for each i in patched,
// over the base that part(i) already holds (read in place, or zeroes),
// oldest first. The patches of all the blocks are read in one call;
// they are small, and kept in the cache with keep as any chunk read in
// part is.
func (s *Store) patchInPlace(blocks []blockRef, patched []int, part func(int) ([]byte, int64), keep bool) error {
	var ids []blockstore.ID
	at := map[blockstore.ID]int{}
	for _, i := range patched {
		for _, p := range blocks[i].patches {
			if _, ok := at[p.id]; !ok && !p.zero {
				at[p.id] = len(ids)
				ids = append(ids, p.id)
			}
		}
	}
	datas := make([][]byte, len(ids))
	if len(ids) > 0 {
		read := s.cache.ReadMany
		if !keep {
			read = s.cache.ReadManyScan
		}
		err := read(ids, nil, func(k int, data []byte) {
			datas[k] = append([]byte(nil), data...)
		})
		if err != nil {
			return err
		}
	}
	for _, i := range patched {
		blk, _ := part(i)
		if err := applyPatches(blk, blocks[i].patches, datas, at); err != nil {
			return err
		}
	}
	return nil
}

// patchRuns remembers, per block of a writable head, how many patches
// follow the block's newest base in the volume's own versions (at least:
// a write that failed after counting leaves the count high, which only
// brings the next whole-block write nearer). A block it does not know is
// looked up in the index. Imports write only bases, which shorten runs:
// a count they leave high is safe.
//
// For a volume made by this process (a clone), whose every version it
// wrote, it knows every block: one it does not hold has no patches, and
// the index is not asked (a Pebble lookup was a tenth of a 4 KiB write's
// time at queue depth 1). Past maxKnownRuns blocks it forgets them all
// and asks again.
type patchRuns struct {
	mu       sync.Mutex
	n        map[uint64]uint8
	complete bool
}

// maxKnownRuns bounds the blocks remembered (about 40 bytes each).
const maxKnownRuns = 1 << 20

func (p *patchRuns) get(block uint64) (uint8, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.n[block]
	return n, ok || p.complete
}

func (p *patchRuns) set(block uint64, n uint8) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[uint64]uint8{}
	}
	if _, ok := p.n[block]; !ok && len(p.n) >= maxKnownRuns {
		clear(p.n)
		p.complete = false
	}
	p.n[block] = n
}

// known says that the volume has no version yet: every block's run is
// known (empty) from now on.
func (p *patchRuns) known() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.complete = true
}

// patchRun returns the length of block's run of patches in m's own
// versions as of its newest version.
func (s *Store) patchRun(vs *volState, m *Volume, block uint64) (int, error) {
	if n, ok := vs.patches.get(block); ok {
		return int(n), nil
	}
	var own [1]blockRef
	if err := s.resolveOwn(m, m.Last, block, own[:]); err != nil {
		return 0, err
	}
	n := len(own[0].patches)
	vs.patches.set(block, uint8(min(n, maxPatches)))
	return n, nil
}
