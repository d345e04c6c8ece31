package timeline

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/rewind-dev/rewind/blockstore"
)

// Extent is a run of a view: data, or a hole that reads as zeroes.
type Extent struct {
	Offset, Length int64
	Hole           bool
}

// View is a volume as of an instant (read-only, never changes), or the
// head of a clone or a protected volume (reads the newest data; writes
// add versions). Every
// reader and writer of disk contents goes through a View. Its methods are
// safe for concurrent use.
type View struct {
	s      *Store
	vol    uint64
	at     int64     // the instant, for fixed views
	head   bool      // a writable head (clone or protected volume)
	refs   *refCache // for fixed views
	closed atomic.Bool
	ra     readAhead
}

// ViewAt opens vol as of t. t must not be before the volume's first
// version; a t past the newest version is the newest version (the view is
// fixed when it opens).
//
// Until it is closed, the view holds its instant: Prune keeps what it
// reads. An instant whose version was pruned reads as the newest version
// kept before it.
func (s *Store) ViewAt(vol uint64, t int64) (*View, error) {
	at, err := s.instant(vol, t)
	if err != nil {
		return nil, err
	}
	return &View{s: s, vol: vol, at: at, refs: newRefCache()}, nil
}

// instant picks the instant that a reader of vol as of t reads, and holds
// it (see Store.hold); the caller unholds it when done.
func (s *Store) instant(vol uint64, t int64) (int64, error) {
	vs, err := s.state(vol)
	if err != nil {
		return 0, err
	}
	vs.pruneMu.RLock()
	defer vs.pruneMu.RUnlock()
	v, err := s.VolumeByID(vol)
	if err != nil {
		return 0, err
	}
	if t < v.First {
		return 0, fmt.Errorf("%w: %s has no data before %s", ErrBeforeFirst, v.Name, FormatTime(v.First))
	}
	at := min(t, v.Last)
	if at <= v.Pruned {
		if at, err = s.retained(vol, at); err != nil {
			return 0, err
		}
	}
	s.hold(vol, at)
	return at, nil
}

// Head opens the writable head of a clone or of a protected volume (the
// protection, which writes the primary too, is its only writer). Every
// other volume is history only.
func (s *Store) Head(vol uint64) (*View, error) {
	v, err := s.VolumeByID(vol)
	if err != nil {
		return nil, err
	}
	if !v.IsClone() && v.Kind != KindProtected {
		return nil, fmt.Errorf("%w: %s is not a clone", ErrReadOnly, v.Name)
	}
	return &View{s: s, vol: vol, head: true}, nil
}

// Volume returns the view's volume metadata, as it is now.
func (v *View) Volume() (*Volume, error) { return v.s.VolumeByID(v.vol) }

// Writable reports whether the view accepts writes.
func (v *View) Writable() bool { return v.head }

// Time returns the instant of a fixed view, or the newest version of a head.
func (v *View) Time() int64 {
	if v.head {
		if m, err := v.Volume(); err == nil {
			return m.Last
		}
	}
	return v.at
}

// state returns the metadata and the instant to read as of.
func (v *View) state() (*Volume, int64, error) {
	if v.closed.Load() {
		return nil, 0, ErrClosed
	}
	m, err := v.s.VolumeByID(v.vol)
	if err != nil {
		return nil, 0, err
	}
	if v.head {
		return m, m.Last, nil
	}
	return m, v.at, nil
}

// Size returns the size in bytes.
func (v *View) Size() int64 {
	m, t, err := v.state()
	if err != nil {
		return 0
	}
	return m.SizeAt(t)
}

// BlockSize returns the volume's block size.
func (v *View) BlockSize() int64 {
	m, _, err := v.state()
	if err != nil {
		return 0
	}
	return m.BlockSize
}

// ReadAt reads len(p) bytes at off. Reading past the end returns the bytes
// before it and io.EOF.
func (v *View) ReadAt(p []byte, off int64) (int, error) { return v.read(p, off, true) }

// ReadAtScan is ReadAt for a reader that will not come back to the same
// chunks through this store: one pass over a whole disk (an export), or a
// reader with a cache of its own (the kernel's page cache behind a FUSE
// image). It uses what the chunk cache holds but adds nothing to it, so
// it neither evicts what other readers come back to nor spends a copy
// into new memory on chunks nobody reads again.
func (v *View) ReadAtScan(p []byte, off int64) (int, error) { return v.read(p, off, false) }

func (v *View) read(p []byte, off int64, keep bool) (int, error) {
	m, t, err := v.state()
	if err != nil {
		return 0, err
	}
	size := m.SizeAt(t)
	if off < 0 || off > size {
		return 0, ErrOutOfRange
	}
	n := len(p)
	var tail error
	if int64(n) > size-off {
		n, tail = int(size-off), io.EOF
	}
	if n == 0 {
		return 0, tail
	}
	if keep && int64(n) < m.BlockSize {
		v.readAhead(m, t, off, int64(n))
	}
	if err := v.s.readAt(m, t, p[:n], off, v.refs, keep); err != nil {
		return 0, err
	}
	return n, tail
}

// readAt fills p from volume m as of t, resolving blocks through refs
// when it is not nil; with keep, chunks read are kept in the cache. The
// range is within the volume.
func (s *Store) readAt(m *Volume, t int64, p []byte, off int64, refs *refCache, keep bool) error {
	bs := m.BlockSize
	b0 := off / bs
	b1 := (off+int64(len(p))-1)/bs + 1
	blocks := make([]blockRef, b1-b0)
	if err := s.resolveCached(refs, m, t, uint64(b0), blocks); err != nil {
		return err
	}
	// part returns the slice of p that block b0+i covers and where in the
	// block it starts.
	part := func(i int) ([]byte, int64) {
		start := (b0 + int64(i)) * bs
		lo, hi := max(start, off), min(start+bs, off+int64(len(p)))
		return p[lo-off : hi-off], lo - start
	}
	var chunks []int
	var patched []int // patched blocks read whole: put together in place
	var blk []byte
	for i, r := range blocks {
		if !r.plain() {
			dst, within := part(i)
			hit := s.cache.Peek(blocks[i].assembled(), func(data []byte) {
				clear(dst[copy(dst, data[min(within, int64(len(data))):]):])
			})
			if hit {
				continue
			}
			if within == 0 && int64(len(dst)) == bs {
				// Read whole (a copy of the disk): the base is read in
				// place with the plain blocks and the patches laid over
				// it, as for a raw chunk read whole, nothing of the
				// block is kept put together.
				patched = append(patched, i)
				if r.kind == refChunk {
					chunks = append(chunks, i)
				} else {
					clear(dst)
				}
				continue
			}
			// Read in part: put together whole, then copied; the cache
			// keeps it put together.
			if blk == nil {
				blk = make([]byte, bs)
			}
			start := (b0 + int64(i)) * bs
			whole := blk[:min(bs, m.Size-start)]
			if err := s.assemble(&blocks[i], whole, keep); err != nil {
				return fmt.Errorf("read %s block %d: %w", m.Name, b0+int64(i), err)
			}
			clear(dst[copy(dst, whole[min(within, int64(len(whole))):]):])
			continue
		}
		if r.kind == refChunk {
			chunks = append(chunks, i)
			continue
		}
		dst, _ := part(i)
		clear(dst)
	}
	if len(chunks) > 0 {
		if err := s.readChunks(m, b0, b1, blocks, chunks, part, keep); err != nil {
			return err
		}
	}
	if len(patched) > 0 {
		if err := s.patchInPlace(blocks, patched, part, keep); err != nil {
			return fmt.Errorf("read %s blocks %d-%d: %w", m.Name, b0, b1-1, err)
		}
	}
	return nil
}

// readChunks reads the chunks of blocks[i] for each i in chunks into
// their parts of p (see readAt).
func (s *Store) readChunks(m *Volume, b0, b1 int64, blocks []blockRef, chunks []int, part func(int) ([]byte, int64), keep bool) error {
	bs := m.BlockSize
	ids := make([]blockstore.ID, len(chunks))
	into := make([][]byte, len(chunks)) // whole blocks can be read in place
	for k, i := range chunks {
		ids[k] = blocks[i].id
		if dst, within := part(i); within == 0 && int64(len(dst)) == bs {
			into[k] = dst
		}
	}
	read := s.cache.ReadMany
	if !keep {
		read = s.cache.ReadManyScan
	}
	err := read(ids, into, func(k int, data []byte) {
		dst, within := part(chunks[k])
		if len(data) > 0 && len(dst) > 0 && &data[0] == &dst[0] && len(data) == len(dst) {
			return // read in place
		}
		n := 0
		if within < int64(len(data)) {
			n = copy(dst, data[within:])
		}
		clear(dst[n:])
	})
	if err != nil {
		return fmt.Errorf("read %s blocks %d-%d: %w", m.Name, b0, b1-1, err)
	}
	return nil
}

// Resident reports whether reading [off, off+n) would need nothing from
// storage: what each block holds is known (remembered by a fixed view,
// else looked up in the index, whose recent part Pebble keeps in memory)
// and every chunk among them is in the chunk cache. Servers use it to
// serve such reads at once (see nbd.Resident).
func (v *View) Resident(off, n int64) bool {
	m, t, err := v.state()
	if err != nil {
		return false
	}
	if size := m.SizeAt(t); off < 0 || n <= 0 || off > size || n > size-off {
		return false
	}
	bs := m.BlockSize
	b0 := off / bs
	var small [4]blockRef
	refs := small[:0]
	if k := (off+n-1)/bs + 1 - b0; k <= int64(len(small)) {
		refs = small[:k]
	} else {
		refs = make([]blockRef, k)
	}
	if v.refs != nil {
		if !v.refs.lookup(uint64(b0), refs) {
			return false
		}
	} else if err := v.s.resolve(m, t, uint64(b0), refs); err != nil {
		return false
	}
	for i := range refs {
		if !refs[i].plain() && v.s.cache.Has(refs[i].assembled()) {
			continue
		}
		resident := true
		refs[i].chunks(func(id blockstore.ID) { resident = resident && v.s.cache.Has(id) })
		if !resident {
			return false
		}
	}
	return true
}

// maxExtentBlocks bounds the work of one Extents call; callers loop.
const maxExtentBlocks = 1 << 16

// Extents reports data and holes in [off, off+n). It may cover less than
// asked (at least one block), never more than the volume.
func (v *View) Extents(off, n int64) ([]Extent, error) {
	m, t, err := v.state()
	if err != nil {
		return nil, err
	}
	size := m.SizeAt(t)
	if off < 0 || n < 0 || off > size || n > size-off {
		return nil, ErrOutOfRange
	}
	if n == 0 {
		return nil, nil
	}
	bs := m.BlockSize
	b0 := off / bs
	b1 := min((off+n-1)/bs+1, b0+maxExtentBlocks)
	refs := make([]blockRef, b1-b0)
	if err := v.s.resolveCached(v.refs, m, t, uint64(b0), refs); err != nil {
		return nil, err
	}
	end := min(off+n, b1*bs)
	var out []Extent
	for i := range refs {
		r := &refs[i]
		lo := max((b0+int64(i))*bs, off)
		hi := min((b0+int64(i)+1)*bs, end)
		hole := r.hole()
		if k := len(out); k > 0 && out[k-1].Hole == hole {
			out[k-1].Length += hi - lo
			continue
		}
		out = append(out, Extent{Offset: lo, Length: hi - lo, Hole: hole})
	}
	return out, nil
}

// Close releases the view. Later calls fail with ErrClosed.
func (v *View) Close() error {
	if !v.closed.Swap(true) && !v.head {
		v.s.unhold(v.vol, v.at)
	}
	return nil
}
