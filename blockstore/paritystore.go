package blockstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	iofs "io/fs"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/parity"
)

// Parity. A pack written by this build carries packFlagParity in its
// header: once sealed (no longer the one written to: the next pack
// started, a collection sealed it, or the store closed), a background
// worker syncs it and writes its Reed-Solomon sidecar (NNNNNNNN.par, see
// package parity) through a temporary file and a rename. Open queues
// every flagged pack whose sidecar is missing or does not verify. Packs
// without the flag (written before parity) are read as ever; Scrub says
// they have no parity.
//
// A record that fails its checks on a read sends the reader to
// repairRecord: the stripes it lies in are checked unit by unit, up to
// Parity damaged units per stripe are rebuilt and written back (to the
// pack, or to the sidecar), and the read is tried again. A record that
// cannot be rebuilt is remembered as damaged (in memory and in the index,
// under 'd' | id): Has reports it absent from then on, so the next import
// or write of the same bytes stores them again, and every version that
// names the chunk reads the new copy.

// DamagedPrefix is the first byte of the keys of damaged chunks:
// 'd' | digest -> the location that was found damaged. Part of the
// on-disk format.
const DamagedPrefix = 'd'

func damagedKey(id ID) []byte { return append([]byte{DamagedPrefix}, id[:]...) }

func parityName(n uint32) string { return fmt.Sprintf("%08d.par", n) }

// ParityStats counts what parity did since the store opened.
type ParityStats struct {
	Pending  int   // sealed packs waiting for their parity
	Written  int64 // sidecars written
	Repaired int64 // units rebuilt and rewritten
	Damaged  int   // chunks known damaged beyond repair
}

// parityState is the store's share of parity work.
type parityState struct {
	mu       sync.Mutex
	queue    []uint32
	running  bool
	idle     *sync.Cond
	closed   bool
	written  int64
	repaired int64
	damaged  map[ID]location
	count    atomic.Int64 // len(damaged), read without the lock
	repairMu sync.Mutex   // one repair at a time
}

func (s *Store) initParity() error {
	p := &s.par
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{DamagedPrefix}, UpperBound: []byte{DamagedPrefix + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if loc, err := unmarshalLocation(it.Value()); err == nil && len(it.Key()) == 1+len(ID{}) {
			p.damaged[ID(it.Key()[1:])] = loc
		}
	}
	p.mu.Lock()
	p.count.Store(int64(len(p.damaged)))
	p.mu.Unlock()
	return it.Close()
}

// queueParity asks for pack n's sidecar.
func (s *Store) queueParity(n uint32) {
	p := &s.par
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.queue = append(p.queue, n)
	if !p.running {
		p.running = true
		go s.parityWorker()
	}
}

func (s *Store) parityWorker() {
	p := &s.par
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.running = false
			p.idle.Broadcast()
			p.mu.Unlock()
			return
		}
		n := p.queue[0]
		p.queue = p.queue[1:]
		p.mu.Unlock()
		if err := s.writeParity(n); errors.Is(err, syscall.ENOSPC) {
			// A full disk is reported by the write that found it; the
			// parity is written at the next open.
			s.log.Debug("no room for a pack's parity yet", "pack", n)
		} else if err != nil {
			s.log.Warn("writing a pack's parity", "pack", n, "err", err)
		}
	}
}

// waitParity waits until the queued sidecars are written.
func (s *Store) waitParity() {
	p := &s.par
	p.mu.Lock()
	for p.running {
		p.idle.Wait()
	}
	p.mu.Unlock()
}

// WaitParity waits until every sealed pack has its parity (tests, and
// verify, use it).
func (s *Store) WaitParity() { s.waitParity() }

// closeParity writes the parity of the packs still waiting, and of the
// pack being written (which the next open would not write to again),
// then stops the worker.
func (s *Store) closeParity() {
	s.mu.Lock()
	active := s.mu.active
	s.mu.active = 0
	s.mu.Unlock()
	if sl, ok := s.fs.(packSealer); ok {
		if active != 0 {
			s.waitWrites(active)
			if err := sl.SealPack(s.fs.PathJoin(s.dir, packName(active))); err != nil {
				s.log.Warn("the last pack could not be uploaded; it stays local and is uploaded at the next open", "pack", active, "err", err)
			}
		}
		s.seals.Wait()
	} else if active != 0 && !s.noParity && s.hasParityFlag(active) {
		s.queueParity(active)
	}
	s.par.mu.Lock()
	s.par.closed = true // what is queued is written; nothing more
	s.par.mu.Unlock()
	s.waitParity()
}

// sealLocked is called, with the store's lock held, when pack n stops
// being the one written to.
func (s *Store) sealLocked(n uint32) {
	if n == 0 {
		return
	}
	if sl, ok := s.fs.(packSealer); ok {
		// Packs kept elsewhere (an object store) go there once whole.
		s.seals.Add(1)
		go func() {
			defer s.seals.Done()
			s.waitWrites(n)
			if err := sl.SealPack(s.fs.PathJoin(s.dir, packName(n))); err != nil {
				s.log.Warn("a sealed pack could not be uploaded; it stays local and is uploaded at the next open", "pack", n, "err", err)
			}
		}()
		return
	}
	if s.noParity {
		return
	}
	go func() {
		s.waitWrites(n)
		s.queueParity(n)
	}()
}

// packSealer is a file system that keeps sealed packs elsewhere
// (remote.Packs): SealPack is told when nothing more is written to one.
type packSealer interface {
	SealPack(path string) error
	IsRemote(path string) bool
}

// waitWrites waits until the writes reserved in pack n have landed.
func (s *Store) waitWrites(n uint32) {
	s.mu.Lock()
	for s.mu.inflight[n] > 0 {
		s.mu.landed.Wait()
	}
	s.mu.Unlock()
}

func (s *Store) hasParityFlag(n uint32) bool {
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
	if err != nil {
		return false
	}
	defer f.Close()
	h := make([]byte, packHeaderSize)
	if m, _ := f.ReadAt(h, 0); m != packHeaderSize || checkPackHeader(h) != nil {
		return false
	}
	return binary.BigEndian.Uint32(h[12:])&packFlagParity != 0
}

// writeParity syncs pack n and writes its sidecar.
func (s *Store) writeParity(n uint32) error {
	path := s.fs.PathJoin(s.dir, packName(n))
	f, err := s.fs.Open(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil // removed meanwhile (gc)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() <= packHeaderSize {
		return nil // nothing to protect
	}
	if err := f.Sync(); err != nil {
		return err
	}
	tmp := s.fs.PathJoin(s.dir, parityName(n)+".tmp")
	w, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	err = parity.Write(f, fi.Size(), parity.Default, w)
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.fs.Rename(tmp, s.fs.PathJoin(s.dir, parityName(n)))
	}
	if err != nil {
		s.fs.Remove(tmp)
		return err
	}
	if now, err := s.fs.Stat(path); err != nil || now.Size() != fi.Size() {
		// Cut back (or removed) while the parity was computed.
		s.fs.Remove(s.fs.PathJoin(s.dir, parityName(n)))
		if err == nil {
			s.queueParity(n)
		}
		return nil
	}
	s.par.mu.Lock()
	s.par.written++
	s.par.mu.Unlock()
	return syncDir(s.fs, s.dir)
}

// openParity returns pack n's sidecar, or nil when it has none that
// verifies.
func (s *Store) openParity(n uint32) (*parity.File, vfs.File) {
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, parityName(n)))
	if err != nil {
		return nil, nil
	}
	p, err := parity.Open(f)
	if err != nil {
		f.Close()
		return nil, nil
	}
	return p, f
}

// dropParityLocked removes pack n's sidecar: its bytes changed (cut
// back) and the parity no longer matches. It is written again once the
// pack is sealed.
func (s *Store) dropParityLocked(n uint32) {
	s.fs.Remove(s.fs.PathJoin(s.dir, parityName(n)))
}

// repairRecord checks the stripes of pack n that bytes [off, off+size)
// lie in and rebuilds their damaged units. It reports whether it
// rewrote anything; an error wrapping ErrCorrupt when the bytes cannot
// be rebuilt (no parity, or too much damage).
func (s *Store) repairRecord(n uint32, off, size int64) (bool, error) {
	s.par.repairMu.Lock()
	defer s.par.repairMu.Unlock()
	p, side := s.openParity(n)
	if p == nil {
		return false, fmt.Errorf("%w: pack %d has no parity to rebuild it from", ErrCorrupt, n)
	}
	defer side.Close()
	if off+size > p.PackSize {
		return false, fmt.Errorf("%w: pack %d: record past the bytes its parity covers", ErrCorrupt, n)
	}
	path := s.fs.PathJoin(s.dir, packName(n))
	pf, err := s.fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return false, fmt.Errorf("%w: pack %d: %v", ErrCorrupt, n, err)
	}
	defer pf.Close()
	var sw vfs.File
	first, last := p.StripesOf(off, size)
	fixed := 0
	for st := first; st <= last; st++ {
		bad, err := p.Check(pf, side, st)
		if err != nil {
			return fixed > 0, err
		}
		if len(bad) == 0 {
			continue
		}
		if sw == nil {
			if sw, err = s.fs.OpenReadWrite(s.fs.PathJoin(s.dir, parityName(n)), vfs.WriteCategoryUnspecified); err != nil {
				return fixed > 0, err
			}
			defer sw.Close()
		}
		units, err := p.Repair(pf, pf, side, sw, st)
		if err != nil {
			return fixed > 0, fmt.Errorf("%w: pack %d: %v", ErrCorrupt, n, err)
		}
		fixed += len(units)
	}
	if fixed > 0 {
		if err := pf.Sync(); err != nil {
			return true, err
		}
		if sw != nil {
			sw.Sync()
		}
		s.par.mu.Lock()
		s.par.repaired += int64(fixed)
		s.par.mu.Unlock()
		s.log.Warn("rebuilt damaged bytes of a pack from its parity", "pack", n, "units", fixed)
	}
	return fixed > 0, nil
}

// markDamaged remembers that chunk id cannot be read at loc.
func (s *Store) markDamaged(id ID, loc location) {
	s.par.mu.Lock()
	_, known := s.par.damaged[id]
	s.par.damaged[id] = loc
	s.par.count.Store(int64(len(s.par.damaged)))
	s.par.mu.Unlock()
	if !known {
		s.log.Error("a chunk is damaged beyond repair: reads of it fail until the same data is imported or written again", "chunk", id.String(), "pack", loc.pack, "offset", loc.offset)
		s.db.Set(damagedKey(id), loc.marshal(), pebble.Sync)
	}
}

// isDamaged reports whether the chunk at loc is known damaged.
func (s *Store) isDamaged(id ID, loc location) bool {
	if s.par.count.Load() == 0 {
		return false
	}
	s.par.mu.Lock()
	defer s.par.mu.Unlock()
	d, ok := s.par.damaged[id]
	return ok && d.pack == loc.pack && d.offset == loc.offset
}

// Damaged reports whether chunk id is known damaged beyond repair at
// the place the index names: storing its bytes again heals it.
func (s *Store) Damaged(id ID) bool {
	if s.par.count.Load() == 0 {
		return false
	}
	loc, err := s.locateIndex(id)
	return err == nil && s.isDamaged(id, loc)
}

// ParityStats returns what parity did since the store opened.
func (s *Store) ParityStats() ParityStats {
	s.par.mu.Lock()
	defer s.par.mu.Unlock()
	return ParityStats{Pending: len(s.par.queue), Written: s.par.written, Repaired: s.par.repaired, Damaged: len(s.par.damaged)}
}

// healRead is called when reading chunk id at loc failed as damage: it
// rebuilds the record from parity when it can (true: read again), and
// otherwise remembers the chunk as damaged.
func (s *Store) healRead(id ID, loc location) bool {
	if ok, _ := s.repairRecord(loc.pack, loc.offset, loc.size()); ok {
		return true
	}
	s.markDamaged(id, loc)
	return false
}

// queueMissingParity queues the packs (all sealed at open) that carry
// the parity flag and lack a sidecar that verifies and matches them.
func (s *Store) queueMissingParity(packs []uint32) {
	for _, n := range packs {
		if !s.hasParityFlag(n) {
			continue
		}
		p, f := s.openParity(n)
		if p != nil {
			f.Close()
			if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(n))); err == nil && fi.Size() == p.PackSize {
				continue
			}
		}
		s.queueParity(n)
	}
}
