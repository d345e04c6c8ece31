package catalog

import (
	"context"
	"errors"
	"math"
	"sort"

	"github.com/rewind-dev/rewind/timeline"
)

func sortPoints(ps []Point) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Time < ps[j].Time })
}

// Volumes lists every volume by name.
func (s *Service) Volumes(context.Context) ([]VolumeInfo, error) {
	out := []VolumeInfo{}
	for _, v := range s.tl.Volumes() {
		out = append(out, s.info(v))
	}
	return out, nil
}

// CreateVolume makes an empty volume.
func (s *Service) CreateVolume(_ context.Context, r CreateRequest) (*VolumeInfo, error) {
	if err := CheckVolumeName(r.Volume); err != nil {
		return nil, err
	}
	if r.BlockSize == 0 {
		r.BlockSize = timeline.DefaultBlockSize
	}
	v, err := s.tl.CreateVolume(r.Volume, r.Size, r.BlockSize, timeline.KindCreated)
	if errors.Is(err, timeline.ErrExists) {
		return nil, errorf(ErrExists, "volume %q exists (rewind volume list)", r.Volume)
	}
	if err != nil {
		return nil, errorf(ErrInvalid, "%v", err)
	}
	vi := s.info(v)
	return &vi, nil
}

// InUse, when set by the daemon, reports whether a volume is being served.
type InUse func(volume string) bool

// SetInUse installs the daemon's check of served volumes.
func (s *Service) SetInUse(f InUse) { s.inUse = f }

// SetRemoveCheck installs a check that RemoveVolume runs even with force,
// for the volume and for each clone force would remove: an error says why
// the volume cannot go (a recovery copying from it).
func (s *Service) SetRemoveCheck(f func(volume string) error) { s.removeCheck = f }

// SetSettle sets what makes the writes acknowledged on a volume so far
// part of its history before anything reads it by name (see
// protect.Manager.Settle). Set it before serving.
func (s *Service) SetSettle(f func(volume string) error) { s.settle = f }

// RemoveVolume deletes a volume, its history and its recovery points. It
// refuses while clones depend on it or it is served, unless force; with
// force, clones are removed first.
func (s *Service) RemoveVolume(ctx context.Context, name string, force bool) error {
	v, err := s.volume(name)
	if err != nil {
		return err
	}
	if s.removeCheck != nil {
		if err := s.removeCheck(name); err != nil {
			return err
		}
	}
	if s.inUse != nil && s.inUse(name) && !force {
		return errorf(ErrConflict, "%s is being served; stop serving it or use --force", name)
	}
	for _, o := range s.tl.Volumes() {
		if o.Parent != v.ID {
			continue
		}
		if !force {
			return errorf(ErrConflict, "clone %s depends on %s; remove it first or use --force", o.Name, name)
		}
		if err := s.RemoveVolume(ctx, o.Name, true); err != nil {
			return err
		}
	}
	points, err := s.points(v)
	if err != nil {
		return err
	}
	if err := s.tl.RemoveVolume(name); err != nil {
		return err
	}
	for _, p := range points {
		if err := s.db.Delete(pointKey(v.ID, p.Label), nil); err != nil {
			return err
		}
	}
	if err := s.db.Delete(lastPruneKey(v.ID), nil); err != nil {
		return err
	}
	return s.db.Delete(retentionKey(v.ID), nil)
}

// Log lists a volume's versions in [since, until].
func (s *Service) Log(_ context.Context, r LogRequest) ([]LogEntry, error) {
	v, err := s.volume(r.Volume)
	if err != nil {
		return nil, err
	}
	since, until := int64(0), int64(math.MaxInt64)
	if r.Since != "" {
		if since, err = s.bound(v, r.Since); err != nil {
			return nil, err
		}
	}
	if r.Until != "" {
		if until, err = s.bound(v, r.Until); err != nil {
			return nil, err
		}
	}
	if r.Limit < 0 {
		return nil, errorf(ErrInvalid, "limit %d is negative: give a number of versions, or 0 for all", r.Limit)
	}
	entry := func(x timeline.VersionInfo) LogEntry {
		return LogEntry{Time: Time(x.Time), Kind: x.Kind.String(), Blocks: x.Blocks,
			Bytes: x.Bytes, Stored: x.Stored, Size: x.Size}
	}
	if r.Limit == 0 {
		vs, err := s.tl.Log(v.ID, since, until)
		if err != nil {
			return nil, err
		}
		out := make([]LogEntry, 0, len(vs))
		for _, x := range vs {
			out = append(out, entry(x))
		}
		return out, nil
	}
	// The newest Limit of the range, in a ring, oldest first at the end.
	ring := make([]LogEntry, 0, min(r.Limit, 4096))
	n := 0
	err = s.tl.EachVersion(v.ID, since, until, func(x timeline.VersionInfo) {
		if len(ring) < r.Limit {
			ring = append(ring, entry(x))
		} else {
			ring[n%r.Limit] = entry(x)
		}
		n++
	})
	if err != nil {
		return nil, err
	}
	if n <= r.Limit {
		return ring, nil
	}
	k := n % r.Limit
	return append(ring[k:len(ring):len(ring)], ring[:k]...), nil
}

// bound resolves a --since/--until WHEN; unlike a view, it may lie
// outside the volume's history.
func (s *Service) bound(v *timeline.Volume, when string) (int64, error) {
	w, err := ParseWhen(when, s.now())
	if err != nil {
		return 0, err
	}
	switch w.Kind {
	case WhenTime:
		return w.Time, nil
	case WhenLatest:
		return v.Last, nil
	}
	p, err := s.point(v, w.Label)
	if err != nil {
		return 0, err
	}
	return int64(p.Time), nil
}

// Diff lists the byte ranges that differ between two instants of one
// volume.
func (s *Service) Diff(_ context.Context, a, b string) (*DiffResult, error) {
	va, ta, _, err := s.Resolve(a)
	if err != nil {
		return nil, err
	}
	vb, tb, _, err := s.Resolve(b)
	if err != nil {
		return nil, err
	}
	if va.ID != vb.ID {
		return nil, errorf(ErrInvalid, "diff compares two instants of one volume, not %s and %s", va.Name, vb.Name)
	}
	rs, err := s.tl.Diff(va.ID, ta, tb)
	if err != nil {
		return nil, err
	}
	out := &DiffResult{From: Time(ta), To: Time(tb), Ranges: make([]Range, 0, len(rs))}
	for _, r := range rs {
		out.Ranges = append(out.Ranges, Range{Offset: r.Offset, Length: r.Length})
		out.Bytes += r.Length
	}
	return out, nil
}

// Clone makes a writable volume that starts as spec.
func (s *Service) Clone(_ context.Context, spec, name string) (*VolumeInfo, error) {
	if err := CheckVolumeName(name); err != nil {
		return nil, err
	}
	v, t, _, err := s.Resolve(spec)
	if err != nil {
		return nil, err
	}
	c, err := s.tl.Clone(v.Name, t, name)
	if errors.Is(err, timeline.ErrExists) {
		return nil, errorf(ErrExists, "volume %q exists; choose another name", name)
	}
	if err != nil {
		return nil, err
	}
	vi := s.info(c)
	return &vi, nil
}

// Stats sums up the store.
func (s *Service) Stats(context.Context) (*Stats, error) {
	cs, err := s.chunks.Stats()
	if err != nil {
		return nil, err
	}
	st := &Stats{UniqueBytes: cs.DecodedBytes, StoredBytes: cs.PackBytes, Chunks: cs.Chunks,
		SlicedChunks: cs.SlicedChunks, SlicedBytes: cs.SlicedBytes}
	for _, v := range s.tl.Volumes() {
		st.Volumes++
		st.Versions += v.Versions
		st.LogicalBytes += v.LogicalBytes
	}
	m := s.db.Metrics()
	st.IndexBytes = int64(m.DiskSpaceUsage())
	si := s.Store()
	st.Store, st.CacheBytes = si.URL, si.CacheBytes
	st.FreeBytes = -1
	if du, err := s.fs.GetDiskUsage(s.dir); err == nil {
		st.FreeBytes = int64(du.AvailBytes)
	}
	if cs.DecodedBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(cs.DecodedBytes)
	}
	if cs.StoredBytes > 0 {
		st.CompressionRatio = float64(cs.DecodedBytes) / float64(cs.StoredBytes)
	}
	return st, nil
}
