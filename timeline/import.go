package timeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"

	"github.com/rewind-dev/rewind/blockstore"
	"github.com/rewind-dev/rewind/blockstore/hugemem"
	"golang.org/x/sync/errgroup"
)

// ImportOptions describe one import.
type ImportOptions struct {
	Name   string
	Source io.ReaderAt
	Size   int64
	// At stamps the new version (ns); 0 means now. It must be later than
	// the volume's newest version.
	At        int64
	BlockSize int64 // for a new volume; default DefaultBlockSize
	// Kind, when set, makes the import create a volume of that kind: it
	// fails with ErrExists if the name is taken. Empty: KindImported,
	// and an existing volume takes a new version.
	Kind Kind
	// Data, if not nil, lists the ranges of Source that may hold data,
	// sorted (from SEEK_DATA on a sparse file): the rest reads as zeroes
	// and is not read at all.
	Data []Range
	// Changed, if not nil, lists the sorted ranges that may have changed
	// since the volume's newest version (a dirty bitmap): only blocks
	// meeting them are read, and every other block keeps its version. It
	// needs an existing volume of the same size.
	Changed []Range
	// SkipUnchanged records no version when the volume exists, keeps its
	// size and no block differs: the result has no Time. A comparison
	// after an unclean stop of a protection (catalog/protect) that finds
	// the two agree leaves the history as it was.
	SkipUnchanged bool
	// Progress, if set, is called with the bytes read so far.
	Progress func(done, total int64)
	Workers  int // default GOMAXPROCS
}

// ImportResult says what an import recorded.
type ImportResult struct {
	Volume  *Volume
	Time    int64
	Created bool
	Blocks  int64 // blocks that got a new version
	Bytes   int64 // logical bytes of those versions
	Stored  int64 // bytes added to the chunk store
}

// partBlocks is how many block versions go in one batch of a large import.
const defaultPartBlocks = 8192

// segment is a run of blocks read and hashed by one worker.
type segment struct {
	first uint64
	hole  bool       // the source holds no data in this segment
	keep  bool       // nothing in this segment changed (ImportOptions.Changed)
	prev  []blockRef // what the blocks held at the volume's newest version
	out   chan segmentResult
}

type segmentResult struct {
	first uint64
	sets  []blockSet
	err   error
}

type blockSet struct {
	block           uint64
	ref             blockRef
	logical, stored int64
}

// Import records Source as a new version of the named volume, creating
// the volume if needed. Only blocks that differ from the volume's newest
// version are recorded; all-zero blocks become holes. An import that fails
// or is interrupted leaves no version behind.
func (s *Store) Import(ctx context.Context, o ImportOptions) (*ImportResult, error) {
	if o.Size <= 0 {
		return nil, fmt.Errorf("timeline: %s: the source is empty", o.Name)
	}
	if o.Workers <= 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0) // half of them wait on reads at any time
	}
	if err := s.guard.Err(); err != nil {
		return nil, err
	}
	meta, created, unlock, err := s.beginImport(o)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if o.Changed != nil && (created || meta.Size != o.Size) {
		return nil, fmt.Errorf("%w: an import of changed blocks only needs %s to exist, at the size of the source (%d bytes)", ErrNotFound, o.Name, o.Size)
	}
	s.mu.Lock()
	var t int64
	if o.At != 0 {
		if o.At <= meta.Last {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %s already has a version at %s; --at must be later", ErrTooOld, o.Name, FormatTime(meta.Last))
		}
		t = o.At
		s.mu.last = max(s.mu.last, t)
	} else {
		t = s.nextTimeLocked(meta.Last + 1)
	}
	s.mu.Unlock()
	base := meta.clone() // what the previous version holds
	meta.Size = o.Size
	w := s.newVersionWriter(meta, t, VersionImport)
	if err := w.begin(); err != nil {
		w.abort()
		return nil, err
	}
	undo := func() {
		// Its bytes go first: the version they belong to was never
		// visible, and a full disk needs the space for the undo.
		w.discard()
		w.abort()
		if uerr := s.undoPending(meta.ID, t); uerr != nil {
			s.log.Error("undo an import; it is undone at the next open", "volume", o.Name, "err", uerr)
		}
	}
	if err := s.runImport(ctx, o, base, created, w); err != nil {
		undo()
		return nil, err
	}
	if o.SkipUnchanged && !created && o.Size == base.Size && w.sum.Blocks == 0 {
		undo()
		return &ImportResult{Volume: base}, nil
	}
	if err := w.commit(true); err != nil {
		// Not discarded: the commit may have reached the disk all the
		// same (see Guard); if it did not, the next open undoes it.
		w.txn.Done()
		return nil, err
	}
	return &ImportResult{Volume: w.meta, Time: t, Created: created,
		Blocks: int64(w.sum.Blocks), Bytes: int64(w.sum.Bytes), Stored: int64(w.sum.Stored)}, nil
}

// beginImport finds or reserves the volume and locks it for writing.
func (s *Store) beginImport(o ImportOptions) (*Volume, bool, func(), error) {
	if m, err := s.Volume(o.Name); err == nil {
		if o.Kind != "" {
			return nil, false, nil, fmt.Errorf("%w: %s", ErrExists, o.Name)
		}
		vs, err := s.state(m.ID)
		if err != nil {
			return nil, false, nil, err
		}
		vs.writeMu.Lock()
		m, err = s.VolumeByID(m.ID) // the newest, now that we hold the lock
		if err != nil {             // removed while we waited
			vs.writeMu.Unlock()
			return nil, false, nil, fmt.Errorf("%w: %s was removed", ErrNotFound, o.Name)
		}
		return m.clone(), false, vs.writeMu.Unlock, nil
	}
	bs := o.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if err := checkGeometry(512, bs); err != nil {
		return nil, false, nil, err
	}
	kind := o.Kind
	if kind == "" {
		kind = KindImported
	}
	m := &Volume{Name: o.Name, Kind: kind, BlockSize: bs}
	s.mu.Lock()
	vs, err := s.reserveLocked(m)
	s.mu.Unlock()
	if err != nil {
		return nil, false, nil, err
	}
	// Readers see no version until the import commits.
	vs.writeMu.Lock()
	unlock := func() {
		vs.writeMu.Unlock()
		s.release(vs)
	}
	return m, true, unlock, nil
}

func (s *Store) runImport(ctx context.Context, o ImportOptions, base *Volume, created bool, w *versionWriter) error {
	bs := w.meta.BlockSize
	segBlocks := uint64(max(1, (4<<20)/bs))
	nblocks := uint64((o.Size + bs - 1) / bs)
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan *segment, o.Workers)
	queue := make(chan *segment, o.Workers*2)
	g.Go(func() error { // producer: what each segment held before
		defer close(jobs)
		defer close(queue)
		for first := uint64(0); first < nblocks; first += segBlocks {
			seg := &segment{first: first, prev: make([]blockRef, min(segBlocks, nblocks-first)), out: make(chan segmentResult, 1)}
			seg.hole = o.Data != nil && !overlaps(o.Data, int64(first)*bs, int64(len(seg.prev))*bs)
			seg.keep = o.Changed != nil && !overlaps(o.Changed, int64(first)*bs, int64(len(seg.prev))*bs)
			if !created {
				if err := s.resolve(base, base.Last, first, seg.prev); err != nil {
					return err
				}
			}
			select {
			case queue <- seg:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case jobs <- seg:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	// Segment buffers are recycled by the process, in memory advised for
	// huge pages: fresh memory is dear (see hugemem).
	pool := hugemem.Shared(int(segBlocks * uint64(bs)))
	for range o.Workers {
		g.Go(func() error {
			for seg := range jobs {
				seg.out <- s.importSegment(o, w, seg, bs, pool)
			}
			return nil
		})
	}
	g.Go(func() error { // collector: in order, into batches
		var done int64
		for seg := range queue {
			var r segmentResult
			select {
			case r = <-seg.out:
			case <-ctx.Done():
				return ctx.Err()
			}
			if r.err != nil {
				return r.err
			}
			for _, set := range r.sets {
				if err := w.set(set.block, set.ref, set.logical, set.stored); err != nil {
					return err
				}
			}
			if int(w.batch.Count()) >= s.partBlocks {
				if err := w.commitPart(); err != nil {
					return err
				}
			}
			done = min(o.Size, int64(seg.first+uint64(len(seg.prev)))*bs)
			if o.Progress != nil {
				o.Progress(done, o.Size)
			}
		}
		return nil
	})
	return g.Wait()
}

// importSegment reads, hashes and stores the blocks of one segment that
// differ from what they held.
func (s *Store) importSegment(o ImportOptions, w *versionWriter, seg *segment, bs int64, pool *hugemem.Pool) segmentResult {
	r := segmentResult{first: seg.first}
	bp := pool.Get()
	defer pool.Put(bp)
	off := int64(seg.first) * bs
	n := min(int64(len(seg.prev))*bs, o.Size-off)
	buf := (*bp)[:n]
	var changed []bool // with o.Changed: which blocks may have changed
	switch {
	case seg.keep:
		return r
	case seg.hole && o.Changed == nil:
		clear(buf)
	case o.Changed != nil || o.Data != nil:
		// Only blocks that changed and may hold data are read (an NBD
		// source's base:allocation can be fine-grained); unchanged
		// blocks keep their version.
		if changed, r.err = readSelected(o, buf, off, bs); r.err != nil {
			return r
		}
	default:
		if r.err = readFull(o.Source, buf, off); r.err != nil {
			return r
		}
	}
	var ids []blockstore.ID
	var datas [][]byte
	var blocks []uint64
	var scratch []byte // a patched block put together, to compare
	for i, prev := range seg.prev {
		if changed != nil && !changed[i] {
			continue // keeps its version
		}
		data := buf[int64(i)*bs : min(int64(i+1)*bs, n)]
		block := seg.first + uint64(i)
		if isZero(data) {
			if prev.hole() {
				continue // still a hole
			}
			r.sets = append(r.sets, blockSet{block: block, ref: blockRef{kind: refZero}, logical: int64(len(data))})
			continue
		}
		id := blockstore.Sum(data)
		if prev.kind == refChunk && prev.plain() && prev.id == id && !w.s.chunks.Damaged(id) {
			continue // unchanged (a damaged chunk is stored again: that heals it)
		}
		if !prev.plain() {
			// A block written in parts (a protected or clone volume's
			// patches): its bytes are compared, not its chunk's name. The
			// comparison after a protection's unclean stop would
			// otherwise store again every block written since its last
			// fold, as a version of blocks that did not change.
			if scratch == nil {
				scratch = make([]byte, bs)
			}
			if w.s.assemble(&seg.prev[i], scratch[:len(data)], false) == nil && bytes.Equal(scratch[:len(data)], data) {
				continue
			}
		}
		ids, datas, blocks = append(ids, id), append(datas, data), append(blocks, block)
	}
	// The segment's new chunks go to the pack as one run, in block order,
	// so a later sequential read finds them together.
	res, err := w.txn.PutMany(ids, datas)
	if err != nil {
		r.err = err
		return r
	}
	for k, pr := range res {
		r.sets = append(r.sets, blockSet{block: blocks[k], ref: blockRef{kind: refChunk, id: pr.ID, place: pr.Place},
			logical: int64(len(datas[k])), stored: pr.Stored})
	}
	sort.Slice(r.sets, func(a, b int) bool { return r.sets[a].block < r.sets[b].block })
	return r
}

// readFull reads len(buf) bytes at off.
func readFull(src io.ReaderAt, buf []byte, off int64) error {
	if m, err := src.ReadAt(buf, off); m < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read source at %d: %w", off+int64(m), err)
	}
	return nil
}

// readSelected fills the blocks of buf (at off) that meet o.Changed (all,
// when it is nil), reading only those that may hold data (o.Data), in
// runs of adjacent blocks. With o.Changed, it reports which blocks it
// filled; without, it returns nil: all of them.
func readSelected(o ImportOptions, buf []byte, off, bs int64) ([]bool, error) {
	n := (int64(len(buf)) + bs - 1) / bs
	changed := make([]bool, n)
	read := make([]bool, n)
	for i := range n {
		lo, hi := i*bs, min((i+1)*bs, int64(len(buf)))
		changed[i] = o.Changed == nil || overlaps(o.Changed, off+lo, hi-lo)
		read[i] = changed[i] && (o.Data == nil || overlaps(o.Data, off+lo, hi-lo))
		if changed[i] && !read[i] {
			clear(buf[lo:hi])
		}
	}
	for i := int64(0); i < n; {
		if !read[i] {
			i++
			continue
		}
		j := i
		for j < n && read[j] {
			j++
		}
		lo, hi := i*bs, min(j*bs, int64(len(buf)))
		if err := readFull(o.Source, buf[lo:hi], off+lo); err != nil {
			return nil, err
		}
		i = j
	}
	if o.Changed == nil {
		return nil, nil
	}
	return changed, nil
}

// overlaps reports whether [off, off+n) meets any of the sorted ranges.
func overlaps(rs []Range, off, n int64) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Offset+rs[i].Length > off })
	return i < len(rs) && rs[i].Offset < off+n
}
