package catalog

import (
	"errors"

	"github.com/rewind-dev/rewind/timeline"
)

// volume returns the named volume or a not-found error that says what to do.
// The writes acknowledged on a protected volume's disk so far are in its
// history first (SetSettle).
func (s *Service) volume(name string) (*timeline.Volume, error) {
	if s.settle != nil {
		if err := s.settle(name); err != nil {
			class := ErrConflict
			if isNoSpace(err) {
				class = ErrNoSpace
			}
			return nil, errorf(class, "the history of %s is not complete: %v (see rewind protect status %s)", name, err, name)
		}
	}
	v, err := s.tl.Volume(name)
	if errors.Is(err, timeline.ErrNotFound) {
		return nil, errorf(ErrNotFound, "no volume %q (see rewind volume list)", name)
	}
	return v, err
}

// instant resolves a WHEN against volume v.
func (s *Service) instant(v *timeline.Volume, w When) (int64, error) {
	switch w.Kind {
	case WhenLatest:
		return v.Last, nil
	case WhenLabel:
		p, err := s.point(v, w.Label)
		if err != nil {
			return 0, err
		}
		return int64(p.Time), nil
	}
	if w.Time < v.First {
		return 0, errorf(ErrConflict, "%s has no data before %s", v.Name, Time(v.First))
	}
	return min(w.Time, v.Last), nil
}

// Resolve parses VOLUME[@WHEN] and finds its volume and instant.
func (s *Service) Resolve(spec string) (*timeline.Volume, int64, Spec, error) {
	sp, err := ParseSpec(spec, s.now())
	if err != nil {
		return nil, 0, sp, err
	}
	v, err := s.volume(sp.Volume)
	if err != nil {
		return nil, 0, sp, err
	}
	t, err := s.instant(v, sp.When)
	return v, t, sp, err
}

// OpenView opens what an export name or a mount names: VOLUME@WHEN,
// always read-only; VOLUME alone, the writable head of a clone, or the
// newest version of any other volume (or of a clone that is a replica of
// another site).
func (s *Service) OpenView(spec string) (*timeline.View, error) {
	v, t, sp, err := s.Resolve(spec)
	if err != nil {
		return nil, err
	}
	if sp.Bare && v.IsClone() && s.replicaOf(v) == nil {
		return s.tl.Head(v.ID)
	}
	return s.tl.ViewAt(v.ID, t)
}

// info describes a volume for listings.
func (s *Service) info(v *timeline.Volume) VolumeInfo {
	vi := VolumeInfo{Name: v.Name, Size: v.Size, BlockSize: v.BlockSize, Kind: string(v.Kind),
		First: Time(v.First), Last: Time(v.Last), Versions: v.Versions,
		LogicalBytes: v.LogicalBytes, StoredBytes: v.StoredBytes, Unwritable: s.unwritableNote(),
		LastPrune: s.lastPrune(v.ID), LastGC: s.LastGC(), LastVerify: s.LastVerify()}
	if ri := new(ReplicaInfo); s.getJSON(replicaKey(v.ID), ri) {
		vi.Replica = ri
	}
	if v.IsClone() {
		if p, err := s.tl.VolumeByID(v.Parent); err == nil {
			vi.Parent = p.Name
		}
		ft := Time(v.ForkTime)
		vi.ForkTime = &ft
	}
	return vi
}
