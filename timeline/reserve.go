package timeline

import "fmt"

// Names are claimed before a volume's first version is written, under
// Store.mu, by reserveLocked: every creator (CreateVolume, Clone, Import of
// a new volume) goes through it, so two creators of one name cannot both
// pass a check and both commit. A reserved volume is in the maps with no
// version: Volume and Volumes do not show it, and a second creator of its
// name gets ErrExists. The creator calls release when it is done, whether
// its first version committed or not.

// reserveLocked claims m.Name for a new volume, gives m an id and installs
// a copy of m as the volume's state. The caller holds s.mu.
func (s *Store) reserveLocked(m *Volume) (*volState, error) {
	if id, taken := s.mu.byName[m.Name]; taken {
		if s.mu.vols[id].meta.Versions == 0 {
			return nil, fmt.Errorf("%w: %s is being created", ErrExists, m.Name)
		}
		return nil, fmt.Errorf("%w: %s", ErrExists, m.Name)
	}
	m.ID = s.allocIDLocked()
	vs := &volState{meta: m.clone()}
	s.mu.vols[m.ID] = vs
	s.mu.byName[m.Name] = m.ID
	return vs, nil
}

// release drops the claim of a reservation whose first version never
// committed; once one has, the volume stays.
func (s *Store) release(vs *volState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := vs.meta
	if m.Versions != 0 || s.mu.vols[m.ID] != vs {
		return
	}
	delete(s.mu.vols, m.ID)
	if s.mu.byName[m.Name] == m.ID {
		delete(s.mu.byName, m.Name)
	}
}
