package blockstore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Compaction, step 5 of a collection (see gc.go): packs that are mostly
// garbage are rewritten, and removed.

// errDamagedPack: a pack to rewrite holds a live record that neither
// verifies nor can be rebuilt.
var errDamagedPack = fmt.Errorf("%w: a live record cannot be read", ErrCorrupt)

// packRecord is a live record of a pack being rewritten.
type packRecord struct {
	off  int64
	size int64
	ids  []ID
	locs []location
}

// compact rewrites or removes the packs before w whose live records fill
// less than below of them.
func (s *Store) compact(ctx context.Context, w Position, below float64, res *GCResult) error {
	// Packs a live import may still cut back are left alone.
	s.mu.Lock()
	limit := w.Pack
	for t := range s.mu.live {
		if t.started && t.start.Pack < limit {
			limit = t.start.Pack
		}
	}
	sizes := map[uint32]int64{}
	for n, end := range s.mu.ends {
		if n < limit && end > packHeaderSize {
			sizes[n] = end
		}
	}
	retired := map[uint32]bool{}
	for _, r := range s.mu.retired {
		retired[r.n] = true
	}
	s.mu.Unlock()
	s.sealedSizes(limit, sizes)
	for n := range retired {
		delete(sizes, n) // removed already, its handle kept open
	}
	if len(sizes) == 0 {
		return nil
	}
	records := map[uint32]map[int64]*packRecord{}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+len(ID{}) {
			continue
		}
		loc, err := unmarshalLocation(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if _, ok := sizes[loc.pack]; !ok {
			continue
		}
		m := records[loc.pack]
		if m == nil {
			m = map[int64]*packRecord{}
			records[loc.pack] = m
		}
		r := m[loc.offset]
		if r == nil {
			r = &packRecord{off: loc.offset, size: loc.size()}
			m[loc.offset] = r
		}
		r.ids = append(r.ids, ID(k[1:]))
		r.locs = append(r.locs, loc)
	}
	if err := it.Close(); err != nil {
		return err
	}
	packs := make([]uint32, 0, len(sizes))
	for n := range sizes {
		packs = append(packs, n)
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i] < packs[j] })
	for _, n := range packs {
		if err := ctx.Err(); err != nil {
			return err
		}
		var liveBytes int64
		for _, r := range records[n] {
			liveBytes += r.size
		}
		size := sizes[n]
		if float64(liveBytes) >= below*float64(size-packHeaderSize) {
			continue
		}
		moved, err := s.rewritePack(n, records[n])
		if errors.Is(err, errDamagedPack) {
			s.log.Warn("gc leaves a pack with damaged records as it is; rewind verify names what they touch", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		if len(records[n]) > 0 {
			res.PacksRewritten++
		}
		res.PacksRemoved++
		res.MovedBytes += moved
		res.FreedBytes += size - moved
	}
	return nil
}

// sealedSizes adds to sizes the packs before limit that this process
// wrote and sealed, which have no recorded end.
func (s *Store) sealedSizes(limit uint32, sizes map[uint32]int64) {
	s.mu.Lock()
	var own []uint32
	for n := range s.mu.files {
		if _, ok := s.mu.ends[n]; !ok && n < limit && n != s.mu.active {
			own = append(own, n)
		}
	}
	s.mu.Unlock()
	for _, n := range own {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(n))); err == nil && fi.Size() > packHeaderSize {
			sizes[n] = fi.Size()
		}
	}
}

// rewritePack copies the live records of pack n to the active pack,
// points their entries at the copies, and removes the pack. It returns
// the bytes copied.
func (s *Store) rewritePack(n uint32, recs map[int64]*packRecord) (int64, error) {
	f, err := s.file(n)
	if err != nil {
		return 0, err
	}
	offs := make([]int64, 0, len(recs))
	for off := range recs {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	b := s.db.NewBatch()
	defer b.Close()
	c := s.newRecordCopier(b)
	defer c.release()
	buf := make([]byte, 0, 1<<20)
	var h recordHeader
	whole := func(off int64) bool {
		if m, _ := f.ReadAt(buf, off); m != len(buf) || h.unmarshal(buf) != nil {
			return false
		}
		payload := buf[recordHeaderSize:]
		return int64(len(payload)) == int64(h.payloadLen) && crc32.Update(recordCRC(buf[:recordHeaderSize]), castagnoli, payload) == h.crc
	}
	for _, off := range offs {
		rec := recs[off]
		buf = append(buf[:0], make([]byte, rec.size)...)
		if !whole(off) {
			// Rebuilt from parity if it can be; damage is never copied as
			// if it were good: the pack stays as it is, for verify.
			if ok, _ := s.repairRecord(n, off, rec.size); !ok || !whole(off) {
				return 0, fmt.Errorf("%w: pack %d at %d", errDamagedPack, n, off)
			}
		}
		if err := c.add(&h, buf[recordHeaderSize:], rec.ids, rec.locs); err != nil {
			return 0, err
		}
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	if len(c.moved) > 0 {
		if err := s.SyncPacks(); err != nil {
			return 0, err
		}
		if err := s.db.Apply(b, pebble.Sync); err != nil {
			return 0, fmt.Errorf("blockstore: gc: move index entries: %w", err)
		}
		s.locs.forget(c.moved...)
	}
	return c.copied, s.retirePack(n)
}

// recordCopier copies whole records into runs, writes each run to the
// active pack, and sets the index entries of the chunks they hold to
// the copies in a batch: a collection's compaction and Relocate move
// records with it.
type recordCopier struct {
	s      *Store
	b      *pebble.Batch
	r      *run
	inRun  []copiedRecord
	moved  []ID  // the chunks whose entries b sets
	copied int64 // bytes written
	// onMove, when set, is told each chunk's new location.
	onMove func(id ID, loc location)
}

// copiedRecord is a record in the run: the chunks it holds, their
// locations before (which name it), and where it starts in the run.
type copiedRecord struct {
	ids  []ID
	locs []location
	at   int64
}

func (s *Store) newRecordCopier(b *pebble.Batch) *recordCopier {
	return &recordCopier{s: s, b: b, r: newRun()}
}

func (c *recordCopier) release() { c.r.release() }

// add copies the record whose header is h and payload payload (checked
// by the caller), which holds chunks ids at locs.
func (c *recordCopier) add(h *recordHeader, payload []byte, ids []ID, locs []location) error {
	size := int64(recordHeaderSize + len(payload))
	if c.r.size+size > runBufferBytes && len(c.inRun) > 0 {
		if err := c.flush(); err != nil {
			return err
		}
	}
	at, _ := c.r.add(h.id, int(h.decodedLen), payload, h.codec, false)
	c.inRun = append(c.inRun, copiedRecord{ids, locs, at})
	return nil
}

// flush writes the run and sets the entries of the chunks in it.
func (c *recordCopier) flush() error {
	if len(c.inRun) == 0 {
		return nil
	}
	pack, off, err := c.s.write(c.r, nil)
	if err != nil {
		return err
	}
	for _, p := range c.inRun {
		for k, id := range p.ids {
			loc := p.locs[k]
			loc.pack, loc.offset = pack, off+p.at
			if err := c.b.Set(indexKey(id), loc.marshal(), nil); err != nil {
				return err
			}
			c.moved = append(c.moved, id)
			if c.onMove != nil {
				c.onMove(id, loc)
			}
		}
	}
	c.copied += c.r.size
	c.r.release()
	c.r = newRun()
	c.inRun = c.inRun[:0]
	return nil
}

// retirePack removes pack n's file; its handle stays open for the reads
// under way until the next collection (closeRetired).
func (s *Store) retirePack(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.files[n]; !ok {
		f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
		if err == nil {
			s.mu.files[n] = f
		}
	}
	if err := s.fs.Remove(s.fs.PathJoin(s.dir, packName(n))); err != nil {
		return fmt.Errorf("blockstore: gc: remove pack %d: %w", n, err)
	}
	delete(s.mu.dirty, n)
	s.dropParityLocked(n)
	s.mu.retired = append(s.mu.retired, retiredPack{n, time.Now()})
	return syncDir(s.fs, s.dir)
}

// retiredPack is a removed pack whose handle stays open for the reads
// that found its records before they moved.
type retiredPack struct {
	n     uint32
	since time.Time
}

// retiredGrace is how long a removed pack's handle stays open.
const retiredGrace = time.Minute

// closeRetired closes the handles of the packs removed more than
// retiredGrace ago.
func (s *Store) closeRetired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.mu.retired[:0]
	for _, r := range s.mu.retired {
		if time.Since(r.since) < retiredGrace {
			keep = append(keep, r)
			continue
		}
		if f, ok := s.mu.files[r.n]; ok {
			f.Close()
			delete(s.mu.files, r.n)
		}
		s.mu.ends[r.n] = 0
	}
	s.mu.retired = keep
}

// packBytes is the size of the pack files on disk.
func (s *Store) packBytes() int64 {
	packs, err := s.listPacks()
	if err != nil {
		return 0
	}
	var n int64
	for _, p := range packs {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(p))); err == nil {
			n += fi.Size()
		}
	}
	return n
}
