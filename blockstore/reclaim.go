package blockstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// Giving space back. A write that fails (a full disk) gives back its
// reservation when nothing was reserved after it. A Txn that may be
// discarded (an import: NewDiscardableTxn) remembers where in the packs
// its first byte went; Discard cuts the packs back to there when every
// byte written since is its own, and Reclaim does the same at the next
// open for a txn that a crash or kill ended. While such a Txn is live, no
// other Txn deduplicates against a chunk stored after its start, so
// cutting its bytes never takes a chunk another writer relies on.

// Position is a place in the packs: pack number and offset.
type Position struct {
	Pack   uint32
	Offset int64
}

// Marshal encodes p in 12 bytes.
func (p Position) Marshal() []byte {
	b := binary.BigEndian.AppendUint32(nil, p.Pack)
	return binary.BigEndian.AppendUint64(b, uint64(p.Offset))
}

// UnmarshalPosition decodes what Marshal made.
func UnmarshalPosition(b []byte) (Position, bool) {
	if len(b) != 12 {
		return Position{}, false
	}
	return Position{binary.BigEndian.Uint32(b), int64(binary.BigEndian.Uint64(b[4:]))}, true
}

func (p Position) before(q Position) bool {
	return p.Pack < q.Pack || p.Pack == q.Pack && p.Offset < q.Offset
}

// Tail is where the next write will go, at the latest: the end of the
// active pack, or the start of the next one.
func (s *Store) Tail() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.active == 0 {
		return Position{s.mu.next, packHeaderSize}
	}
	return Position{s.mu.active, s.mu.size}
}

// NewDiscardableTxn is NewTxn for a writer that may fail after storing
// much (an import): see Discard.
func (s *Store) NewDiscardableTxn() *Txn {
	t := s.NewTxn()
	s.mu.Lock()
	s.mu.live[t] = true
	s.mu.Unlock()
	return t
}

// Done ends a Txn whose entries were committed: its chunks are anybody's
// to deduplicate against.
func (t *Txn) Done() {
	t.s.mu.Lock()
	t.s.endTxnLocked(t)
	t.s.mu.Unlock()
}

// Committed tells t that the references it handed out so far are
// committed: it forgets the chunks it relied on, which a long writer (an
// import committing part after part) would otherwise keep for its whole
// life (see gc.go).
func (t *Txn) Committed() {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.refsMu.Lock()
	defer t.refsMu.Unlock()
	if g := t.s.mu.gc; g != nil {
		for id := range t.refs {
			g.touched[id] = true
		}
	}
	clear(t.refs)
}

// endTxnLocked forgets t, handing what it stored and relied on to a
// running collection (see gc.go).
func (s *Store) endTxnLocked(t *Txn) {
	delete(s.mu.live, t)
	if s.mu.txns[t] {
		delete(s.mu.txns, t)
		if g := s.mu.gc; g != nil {
			t.handOverLocked(g)
		}
	}
}

// Discard gives back the pack bytes of a Txn whose entries will never be
// referenced (its writer failed and undid what it committed), when every
// byte written to the store since its first one is its own; it reports
// whether it did (true for a Txn that wrote nothing: nothing is kept).
// The packs it cut are not written again.
func (t *Txn) Discard() (bool, error) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTxnLocked(t)
	if !t.started {
		return true, nil
	}
	if s.mu.writes-t.writesAtStart != t.writes {
		return false, nil
	}
	var first error
	for n := t.start.Pack; n <= s.mu.active && s.mu.active != 0; n++ {
		f, ok := s.mu.files[n]
		if !ok {
			continue
		}
		if n != t.start.Pack && n != s.mu.active {
			// A pack of its own, not the newest (whose number must not
			// be used again): it goes.
			f.Close()
			delete(s.mu.files, n)
			delete(s.mu.dirty, n)
			s.mu.ends[n] = 0
			if err := s.fs.Remove(s.fs.PathJoin(s.dir, packName(n))); err != nil && first == nil {
				first = fmt.Errorf("blockstore: remove pack: %w", err)
			}
			continue
		}
		end := int64(packHeaderSize)
		if n == t.start.Pack {
			end = t.start.Offset
		}
		if err := s.truncatePackLocked(n, end); err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		first = syncDir(s.fs, s.dir)
	}
	s.sealLocked(s.mu.active)
	s.mu.active = 0 // the next write starts a new pack
	return first == nil, first
}

// inLiveRegionLocked reports whether loc lies after the start of a live
// discardable Txn other than t.
func (s *Store) inLiveRegionLocked(t *Txn, loc location) bool {
	for o := range s.mu.live {
		if o != t && o.started && !(Position{loc.pack, loc.offset}).before(o.start) {
			return true
		}
	}
	return false
}

// unreserveLocked gives back [off, off+n) of pack, reserved by a write
// that failed, when nothing was reserved after it.
func (s *Store) unreserveLocked(pack uint32, off, n int64) {
	if s.mu.active == pack && s.mu.size == off+n {
		if s.truncatePackLocked(pack, off) == nil {
			s.mu.size = off
			delete(s.mu.ends, pack)
		}
	}
}

// truncatePackLocked cuts pack n to size; reads see that end from now on.
func (s *Store) truncatePackLocked(n uint32, size int64) error {
	f, ok := s.mu.files[n]
	if !ok {
		var err error
		if f, err = s.fs.OpenReadWrite(s.fs.PathJoin(s.dir, packName(n)), vfs.WriteCategoryUnspecified); err != nil {
			return fmt.Errorf("blockstore: open pack %d: %w", n, err)
		}
		s.mu.files[n] = f
	}
	if fd := f.Fd(); fd != vfs.InvalidFd {
		if err := unix.Ftruncate(int(fd), size); err != nil {
			return fmt.Errorf("blockstore: truncate pack %d: %w", n, err)
		}
	} else {
		if err := s.rewritePackLocked(n, f, size); err != nil {
			return err
		}
		f = s.mu.files[n]
		if err := syncDir(s.fs, s.dir); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blockstore: sync pack %d: %w", n, err)
	}
	s.mu.ends[n] = size
	// The parity no longer matches; a sealed pack gets it anew.
	s.dropParityLocked(n)
	if n != s.mu.active {
		s.sealLocked(n)
	}
	return nil
}

// rewritePackLocked truncates a pack on a filesystem without file
// descriptors (an in-memory one, in tests) by writing its head anew.
func (s *Store) rewritePackLocked(n uint32, f vfs.File, size int64) error {
	head := make([]byte, size)
	if m, err := f.ReadAt(head, 0); int64(m) < size {
		return fmt.Errorf("blockstore: read pack %d: %v", n, err)
	}
	nf, err := s.fs.Create(s.fs.PathJoin(s.dir, packName(n)), vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("blockstore: truncate pack %d: %w", n, err)
	}
	if _, err := nf.WriteAt(head, 0); err != nil {
		nf.Close()
		return fmt.Errorf("blockstore: truncate pack %d: %w", n, err)
	}
	f.Close()
	s.mu.files[n] = nf
	return nil
}

// Reclaim gives back the pack bytes written from start on by a Txn that
// a crash or kill ended, whose chunks were ids (the ones its committed
// parts referenced; their versions are gone). A record written there by
// anybody else and still indexed is kept, with everything before it.
// Call it at open, before anything is written.
func (s *Store) Reclaim(start Position, ids map[ID]bool) (int64, error) {
	packs, err := s.listPacks()
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var freed int64
	for _, n := range packs {
		if n < start.Pack {
			continue
		}
		size, ok := s.mu.ends[n]
		if !ok || size <= packHeaderSize {
			continue
		}
		from := int64(packHeaderSize)
		if n == start.Pack {
			from = max(from, start.Offset)
		}
		keep := from
		err := s.walkLocked(n, from, size, false, func(off, end int64, id ID) {
			if ids[id] {
				return
			}
			if v, closer, err := s.db.Get(indexKey(id)); err == nil {
				loc, lerr := unmarshalLocation(v)
				closer.Close()
				if lerr == nil && loc.pack == n && loc.offset == off {
					keep = end // somebody else's, indexed
				}
			}
		})
		if err != nil {
			return freed, err
		}
		if keep < size {
			if err := s.truncatePackLocked(n, keep); err != nil {
				return freed, err
			}
			freed += size - keep
		}
		// An empty pack goes, but for the newest: its number must not
		// be used again (see Open).
		if keep == packHeaderSize && n != packs[len(packs)-1] {
			if f, ok := s.mu.files[n]; ok {
				f.Close()
				delete(s.mu.files, n)
			}
			if err := s.fs.Remove(s.fs.PathJoin(s.dir, packName(n))); err != nil {
				return freed, fmt.Errorf("blockstore: remove empty pack: %w", err)
			}
			s.mu.ends[n] = 0
		}
	}
	return freed, syncDir(s.fs, s.dir)
}

// walkLocked calls fn for each whole record of pack n in [from, end), in
// order, and returns where the records stop being whole (or, with
// verify, stop matching their checksum).
func (s *Store) walkLocked(n uint32, from, end int64, verify bool, fn func(off, end int64, id ID)) error {
	f, ok := s.mu.files[n]
	if !ok {
		var err error
		if f, err = s.fs.Open(s.fs.PathJoin(s.dir, packName(n))); err != nil {
			return fmt.Errorf("blockstore: open pack %d: %w", n, err)
		}
		defer f.Close()
	}
	_, err := walkRecords(f, from, end, verify, fn)
	return err
}

// walkRecords reads the records of a pack in [from, end) and returns the
// offset where they stop being whole.
func walkRecords(f io.ReaderAt, from, end int64, verify bool, fn func(off, end int64, id ID)) (int64, error) {
	var hb [recordHeaderSize]byte
	var payload []byte
	off := from
	for off+recordHeaderSize <= end {
		if _, err := f.ReadAt(hb[:], off); err != nil {
			if errors.Is(err, io.EOF) {
				return off, nil
			}
			return off, fmt.Errorf("blockstore: read pack: %w", err)
		}
		var h recordHeader
		if h.unmarshal(hb[:]) != nil {
			return off, nil
		}
		next := off + recordHeaderSize + int64(h.payloadLen)
		if next > end {
			return off, nil
		}
		if verify {
			payload = append(payload[:0], make([]byte, h.payloadLen)...)
			if m, _ := f.ReadAt(payload, off+recordHeaderSize); m != len(payload) {
				return off, nil
			}
			if crc32.Update(recordCRC(hb[:]), castagnoli, payload) != h.crc {
				return off, nil
			}
		}
		if fn != nil {
			fn(off, next, h.id)
		}
		off = next
	}
	return off, nil
}

// checkTail cuts the newest pack after its last whole record: a power
// loss may leave a torn tail there, which no durable index entry names
// (pack bytes are synced before the entries that point at them). The
// records of its last tailCheckBytes are verified against their
// checksums; before that, only their framing.
func (s *Store) checkTail(n uint32) error {
	size := s.mu.ends[n]
	if size <= packHeaderSize {
		return nil
	}
	if sl, ok := s.fs.(packSealer); ok && sl.IsRemote(s.fs.PathJoin(s.dir, packName(n))) {
		return nil // sealed whole: only a local pack can have a torn tail
	}
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
	if err != nil {
		return fmt.Errorf("blockstore: open pack %d: %w", n, err)
	}
	verifyFrom := max(packHeaderSize, size-tailCheckBytes)
	// Framing up to the verified window, then checksums.
	var lastStart int64 = packHeaderSize
	whole, err := walkRecords(f, packHeaderSize, size, false, func(off, _ int64, _ ID) {
		if off <= verifyFrom {
			lastStart = off
		}
	})
	if err == nil && whole > lastStart {
		whole, err = walkRecords(f, lastStart, whole, true, nil)
	}
	f.Close()
	if err != nil || whole == size {
		return err
	}
	s.log.Warn("cutting a torn tail off the newest pack", "pack", n, "size", size, "whole", whole)
	return s.truncatePackLocked(n, whole)
}

const tailCheckBytes = 8 << 20
