package timeline

import (
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// PruneResult says what Prune removed, or would remove.
type PruneResult struct {
	Versions int     // versions before
	Kept     []int64 // the versions kept, oldest first
	Removed  []int64 // the versions removed, oldest first
	// Blocks counts block versions deleted: those that no kept version
	// reads.
	Blocks int64
	// Ranges counts range records deleted (ranges.go), likewise.
	Ranges int
}

// pruneBatchKeys bounds the deletions committed at once.
const pruneBatchKeys = 1 << 16

// Prune thins vol's history to the versions that the instants in keep
// read (each instant keeps the newest version at or before it), and
// always to the newest version, the instants that open views read, and
// the fork instants of vol's clones. A removed version's instant is no
// longer in the history: a view opened at it reads the kept version
// before it (ViewAt), never a mix of what remains. With dry, nothing
// changes.
//
// Prune runs beside the volume's writers and readers. It first removes
// the versions from the history, in one commit, then deletes the block
// versions that only they read, in batches: a crash between the two
// leaves block versions that nothing reads, which the next Prune
// deletes. The chunks they referenced stay in the chunk store until a
// collector finds them unreferenced.
func (s *Store) Prune(vol uint64, keep []int64, dry bool) (*PruneResult, error) {
	vs, err := s.state(vol)
	if err != nil {
		return nil, err
	}
	// Imports and removal are excluded; writes go on (they add versions
	// after m.Last and patch blocks as the newest version, which is
	// kept, reads them).
	vs.writeMu.RLock()
	defer vs.writeMu.RUnlock()
	vs.pruneMu.Lock()
	defer vs.pruneMu.Unlock()
	m, err := s.VolumeByID(vol)
	if err != nil {
		return nil, err
	}
	versions, err := s.Log(vol, 0, m.Last)
	if err != nil {
		return nil, err
	}
	times := make([]int64, len(versions))
	for i, v := range versions {
		times[i] = v.Time
	}
	res := &PruneResult{Versions: len(times)}
	kept := map[int64]bool{}
	hold := func(t int64) {
		// The version an instant reads: the newest at or before it.
		if i, found := slices.BinarySearch(times, t); found {
			kept[times[i]] = true
		} else if i > 0 {
			kept[times[i-1]] = true
		}
	}
	for _, t := range keep {
		hold(t)
	}
	hold(m.Last)
	s.mu.Lock()
	for t := range s.mu.held[vol] {
		hold(t)
	}
	for _, c := range s.mu.vols {
		if c.meta.Parent == vol && c.meta.IsClone() {
			hold(c.meta.ForkTime)
		}
	}
	s.mu.Unlock()
	var gone []VersionInfo
	for _, v := range versions {
		if kept[v.Time] {
			res.Kept = append(res.Kept, v.Time)
		} else {
			res.Removed = append(res.Removed, v.Time)
			gone = append(gone, v)
		}
	}
	if len(gone) == 0 {
		return res, nil
	}
	dead, deadRanges, err := s.unread(m, res.Kept)
	if err != nil {
		return nil, err
	}
	res.Blocks = int64(len(dead))
	res.Ranges = len(deadRanges)
	if dry {
		return res, nil
	}
	if err := s.Writable(); err != nil {
		return nil, err
	}
	if err := s.dropVersions(vs, vol, gone, res.Kept[0], deadRanges); err != nil {
		return nil, err
	}
	for len(dead) > 0 {
		n := min(len(dead), pruneBatchKeys)
		b := s.db.NewBatch()
		for _, k := range dead[:n] {
			b.Delete(k, nil)
		}
		err := s.commit(b, pebble.NoSync)
		b.Close()
		if err != nil {
			return nil, err
		}
		dead = dead[n:]
	}
	return res, s.Flush()
}

// unread returns the keys of m's block versions stamped at or before
// m.Last that none of the instants in kept (oldest first) reads, and the
// times of the range records that none reads. A kept instant reads each
// block's newest base at or before it (an own hole or chunk version, or a
// range record over the block, ranges.go) and the patches stamped after
// that base. A range record that no kept instant reads can go: every
// block it covers has a newer base for each of them, so no older version
// shows through once it is gone.
func (s *Store) unread(m *Volume, kept []int64) ([][]byte, []int64, error) {
	vol, last := m.ID, m.Last
	var rs []zeroRange
	for _, r := range m.ranges {
		if r.t <= last {
			rs = append(rs, r)
		}
	}
	needs := newRangeNeeds(rs, kept)
	lo, hi := volumeBounds(tagVersion, vol)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, nil, err
	}
	defer it.Close()
	type ver struct {
		key   []byte
		t     int64
		patch bool
	}
	var dead [][]byte
	var run []ver // one block's versions, newest first
	var cover, times []int64
	var base []bool
	flush := func(block uint64) {
		if len(run) == 0 {
			return
		}
		if len(rs) > 0 {
			times, base = times[:0], base[:0]
			for _, v := range run {
				times, base = append(times, v.t), append(base, !v.patch)
			}
			needs.block(block, times, base)
		}
		cover = needs.covering(cover[:0], block) // oldest first
		c := len(cover) - 1
		need := make([]bool, len(run))
		i := 0
		for k := len(kept) - 1; k >= 0; k-- {
			for i < len(run) && run[i].t > kept[k] {
				i++
			}
			for c >= 0 && cover[c] > kept[k] {
				c--
			}
			var floor int64 // the range record kept[k] reads for the block
			if c >= 0 {
				floor = cover[c]
			}
			for j := i; j < len(run) && !need[j] && run[j].t >= floor; j++ {
				need[j] = true
				if !run[j].patch {
					break
				}
			}
		}
		for j, v := range run {
			if !need[j] && v.t <= last {
				dead = append(dead, v.key)
			}
		}
		run = run[:0]
	}
	block := ^uint64(0)
	for it.First(); it.Valid(); it.Next() {
		_, b, t, ok := parseVersionKey(it.Key())
		if !ok {
			return nil, nil, fmt.Errorf("timeline: bad version key %x", it.Key())
		}
		if b != block {
			flush(block)
			block = b
		}
		e, err := decodeValue(it.Value())
		if err != nil {
			return nil, nil, err
		}
		run = append(run, ver{key: slices.Clone(it.Key()), t: t, patch: e.isPatch})
	}
	flush(block)
	return dead, needs.dead(), it.Error()
}

// dropVersions removes the versions gone from vol's history, with their
// time-index records, and records in its metadata that instants up to the
// newest of them now read the kept version before them. first is the
// oldest version kept.
// The range records that no kept instant reads (deadRanges, their times)
// go in the same commit.
func (s *Store) dropVersions(vs *volState, vol uint64, gone []VersionInfo, first int64, deadRanges []int64) error {
	// Writers stamp and commit their versions, metadata included, under
	// commitMu: the metadata written here is the newest.
	vs.commitMu.Lock()
	defer vs.commitMu.Unlock()
	m, err := s.VolumeByID(vol)
	if err != nil {
		return err
	}
	m = m.clone()
	b := s.db.NewBatch()
	defer b.Close()
	for _, v := range gone {
		if err := unrecord(b, m, v); err != nil {
			return err
		}
		m.Pruned = max(m.Pruned, v.Time)
	}
	m.First = first
	if len(deadRanges) > 0 {
		var rs []zeroRange
		for _, r := range m.ranges {
			if _, found := slices.BinarySearch(deadRanges, r.t); found {
				if err := b.Delete(rangeKey(vol, r.t), nil); err != nil {
					return err
				}
				continue
			}
			rs = append(rs, r)
		}
		m.setRanges(rs)
	}
	if err := b.Set(metaKey(vol), m.marshal(), nil); err != nil {
		return err
	}
	if err := s.commit(b, pebble.Sync); err != nil {
		return err
	}
	s.publish(m)
	return nil
}

// unrecord takes version v out of m's history in b: its time-index
// records (runs and summary), and its count and bytes in m. Prune and the
// check after a crash (forgetVersions) both do it.
func unrecord(b *pebble.Batch, m *Volume, v VersionInfo) error {
	if err := b.DeleteRange(timeKey(m.ID, v.Time, 0), timeKey(m.ID, v.Time+1, 0), nil); err != nil {
		return err
	}
	m.Versions--
	m.LogicalBytes -= v.Bytes
	m.StoredBytes -= v.Stored
	return nil
}

// retained returns the newest version of vol stamped at or before t, the
// instant that a view at t reads once versions were pruned.
func (s *Store) retained(vol uint64, t int64) (int64, error) {
	lo, hi := volumeBounds(tagTime, vol)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	for ok := it.SeekLT(timeKey(vol, t+1, 0)); ok; ok = it.Prev() {
		if _, vt, part, ok := parseTimeKey(it.Key()); ok && part == summaryPart {
			return vt, nil
		}
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w: no version at or before %s", ErrBeforeFirst, FormatTime(t))
}

// hold records that a view reads vol as of t, so that Prune keeps it;
// unhold undoes it.
func (s *Store) hold(vol uint64, t int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.held == nil {
		s.mu.held = map[uint64]map[int64]int{}
	}
	if s.mu.held[vol] == nil {
		s.mu.held[vol] = map[int64]int{}
	}
	s.mu.held[vol][t]++
}

func (s *Store) unhold(vol uint64, t int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.mu.held[vol]
	if h[t]--; h[t] <= 0 {
		delete(h, t)
	}
	if len(h) == 0 {
		delete(s.mu.held, vol)
	}
}
