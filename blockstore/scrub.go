package blockstore

import (
	"context"
	"fmt"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore/parity"
)

// ScrubOptions tune Scrub.
type ScrubOptions struct {
	// Repair rewrites what parity rebuilds, and writes the sidecars that
	// are missing or damaged; without it Scrub only reports.
	Repair bool
	// Progress, when set, is told the pack bytes checked so far.
	Progress func(done, total int64)
}

// ScrubResult says what Scrub found.
type ScrubResult struct {
	Packs      int   // pack files checked
	Bytes      int64 // their size
	WithParity int   // of them, with a sidecar that verifies
	// NoParity lists the packs checked record by record because they
	// have no parity: written before it (or with it turned off).
	NoParity []uint32
	// Unsealed is the pack being written (0: none), checked record by
	// record: its parity is written once it is sealed.
	Unsealed uint32
	// Damaged units that parity rebuilds: rewritten with Repair, else
	// only counted.
	Repairable int
	Repaired   int
	// Sidecars missing or damaged, and written anew (with Repair).
	ParityMissing   int
	ParityRewritten int
	// Lost are the chunks whose records are damaged beyond repair; Using
	// adds the slices records that read from them. Reads of either fail
	// until the same bytes are stored again.
	Lost  []ID
	Using []ID
	// Healed counts chunks known damaged before that have been stored
	// again since.
	Healed int
}

type scrubEntry struct {
	id  ID
	loc location
}

// Scrub checks every pack: the units of a pack with parity against
// their checksums, the records of one without it against theirs. Chunks
// it finds damaged beyond repair are remembered as damaged (see
// paritystore.go).
func (s *Store) Scrub(ctx context.Context, o ScrubOptions) (ScrubResult, error) {
	var res ScrubResult
	// Not beside a collection: it moves and removes what this reads.
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.waitParity()
	res.Healed = s.forgetHealed()
	byPack := map[uint32][]scrubEntry{}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return res, err
	}
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) != 1+len(ID{}) {
			continue
		}
		loc, err := unmarshalLocation(it.Value())
		if err != nil {
			it.Close()
			return res, err
		}
		byPack[loc.pack] = append(byPack[loc.pack], scrubEntry{ID(it.Key()[1:]), loc})
	}
	if err := it.Close(); err != nil {
		return res, err
	}
	packs, err := s.listPacks()
	if err != nil {
		return res, err
	}
	sizes := map[uint32]int64{}
	var total int64
	for _, n := range packs {
		if fi, err := s.fs.Stat(s.fs.PathJoin(s.dir, packName(n))); err == nil {
			sizes[n] = fi.Size()
			total += fi.Size()
		}
	}
	// Chunks whose pack is gone altogether.
	for n, es := range byPack {
		if _, ok := sizes[n]; !ok {
			for _, e := range es {
				res.Lost = append(res.Lost, e.id)
				s.markDamaged(e.id, e.loc)
			}
		}
	}
	s.mu.Lock()
	active := s.mu.active
	s.mu.Unlock()
	var done int64
	for _, n := range packs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		size, ok := sizes[n]
		if !ok {
			continue
		}
		es := byPack[n]
		sort.Slice(es, func(i, j int) bool { return es[i].loc.offset < es[j].loc.offset })
		res.Packs++
		res.Bytes += size
		var lost []scrubEntry
		p, side := s.openParity(n)
		switch {
		case p != nil && p.PackSize == size && n != active:
			res.WithParity++
			lost, err = s.scrubWithParity(n, p, es, o.Repair, &res)
			side.Close()
		case n != active && !s.noParity && s.hasParityFlag(n):
			if side != nil {
				side.Close()
			}
			res.ParityMissing++
			lost, err = s.scrubRecords(n, es)
			if err == nil && len(lost) == 0 && o.Repair {
				if err = s.writeParity(n); err == nil {
					res.ParityRewritten++
				}
			}
		default:
			if side != nil {
				side.Close()
			}
			if n == active {
				res.Unsealed = n
			} else {
				res.NoParity = append(res.NoParity, n)
			}
			lost, err = s.scrubRecords(n, es)
		}
		if err != nil {
			return res, err
		}
		for _, e := range lost {
			res.Lost = append(res.Lost, e.id)
			s.markDamaged(e.id, e.loc)
		}
		done += size
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	if len(res.Lost) > 0 {
		using, err := s.slicesUsing(res.Lost)
		if err != nil {
			return res, err
		}
		res.Using = using
	}
	return res, nil
}

// scrubWithParity checks pack n stripe by stripe and returns the
// records in stripes beyond repair that fail their own checks.
func (s *Store) scrubWithParity(n uint32, p *parity.File, es []scrubEntry, repair bool, res *ScrubResult) ([]scrubEntry, error) {
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	side, err := s.fs.Open(s.fs.PathJoin(s.dir, parityName(n)))
	if err != nil {
		return nil, err
	}
	defer side.Close()
	var broken []int // stripes beyond repair
	for st := range p.Stripes {
		bad, err := p.Check(f, side, st)
		if err != nil {
			return nil, err
		}
		switch {
		case len(bad) == 0:
		case len(bad) > p.L.Parity:
			broken = append(broken, st)
		case repair:
			// One at a time with the reads that repair (repairRecord).
			off, _ := p.Range(parity.Unit{Stripe: st})
			if _, err := s.repairRecord(n, off, 1); err != nil {
				broken = append(broken, st)
				continue
			}
			res.Repaired += len(bad)
		default:
			res.Repairable += len(bad)
		}
	}
	if len(broken) == 0 {
		return nil, nil
	}
	var suspects []scrubEntry
	for _, e := range es {
		first, last := p.StripesOf(e.loc.offset, e.loc.size())
		for _, st := range broken {
			if st >= first && st <= last {
				suspects = append(suspects, e)
				break
			}
		}
	}
	return s.checkEntries(f, suspects), nil
}

// scrubRecords checks the records of pack n one by one.
func (s *Store) scrubRecords(n uint32, es []scrubEntry) ([]scrubEntry, error) {
	f, err := s.fs.Open(s.fs.PathJoin(s.dir, packName(n)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return s.checkEntries(f, es), nil
}

// checkEntries returns the entries whose records do not verify. A
// bundle's record is read once for all of its members.
func (s *Store) checkEntries(f interface {
	ReadAt([]byte, int64) (int, error)
}, es []scrubEntry) []scrubEntry {
	var bad []scrubEntry
	var buf []byte
	lastOff, lastOK := int64(-1), false
	for _, e := range es {
		if e.loc.offset == lastOff { // another member of the same bundle
			if !lastOK {
				bad = append(bad, e)
			}
			continue
		}
		buf = append(buf[:0], make([]byte, e.loc.size())...)
		ok := false
		if m, _ := f.ReadAt(buf, e.loc.offset); m == len(buf) {
			ok = checkRecord(e.id, e.loc, buf[:recordHeaderSize], buf[recordHeaderSize:]) == nil
		}
		lastOff, lastOK = e.loc.offset, ok
		if !ok {
			bad = append(bad, e)
		}
	}
	return bad
}

// slicesUsing returns the indexed slices records that reference any of
// lost.
func (s *Store) slicesUsing(lost []ID) ([]ID, error) {
	gone := make(map[ID]bool, len(lost))
	for _, id := range lost {
		gone[id] = true
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{IndexPrefix}, UpperBound: []byte{IndexPrefix + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []ID
	for it.First(); it.Valid(); it.Next() {
		loc, err := unmarshalLocation(it.Value())
		if err != nil || loc.codec != CodecSlices || len(it.Key()) != 1+len(ID{}) {
			continue
		}
		id := ID(it.Key()[1:])
		if gone[id] {
			continue
		}
		srcs, err := s.slicesSourcesAt(id, loc)
		if err != nil {
			continue // damaged itself: in lost already, or found by a read
		}
		for _, src := range srcs {
			if gone[src] {
				out = append(out, id)
				break
			}
		}
	}
	return out, it.Error()
}

func (s *Store) slicesSourcesAt(id ID, loc location) ([]ID, error) {
	f, err := s.file(loc.pack)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, loc.size())
	if n, err := f.ReadAt(buf, loc.offset); n != len(buf) {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := checkRecord(id, loc, buf[:recordHeaderSize], buf[recordHeaderSize:]); err != nil {
		return nil, err
	}
	return parseSliceSources(buf[recordHeaderSize:])
}

// forgetHealed drops the damaged chunks that were stored again since
// (their index entry names another record), and returns how many.
func (s *Store) forgetHealed() int {
	s.par.mu.Lock()
	ids := make([]ID, 0, len(s.par.damaged))
	for id := range s.par.damaged {
		ids = append(ids, id)
	}
	s.par.mu.Unlock()
	healed := 0
	for _, id := range ids {
		now, err := s.locateIndex(id)
		s.par.mu.Lock()
		d := s.par.damaged[id]
		if err == nil && (now.pack != d.pack || now.offset != d.offset) {
			delete(s.par.damaged, id)
			s.par.count.Store(int64(len(s.par.damaged)))
			healed++
			s.par.mu.Unlock()
			s.db.Delete(damagedKey(id), pebble.Sync)
			continue
		}
		s.par.mu.Unlock()
	}
	return healed
}
