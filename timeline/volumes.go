package timeline

import (
	"fmt"
	"time"
)

// CreateVolume makes an empty volume: all zeroes from now on.
func (s *Store) CreateVolume(name string, size, blockSize int64, kind Kind) (*Volume, error) {
	if err := checkGeometry(size, blockSize); err != nil {
		return nil, err
	}
	m := &Volume{Name: name, Kind: kind, Size: size, BlockSize: blockSize}
	s.mu.Lock()
	vs, err := s.reserveLocked(m)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	t := s.nextTimeLocked(0)
	s.mu.Unlock()
	defer s.release(vs)
	w := s.newVersionWriter(m, t, VersionCreate)
	if err := w.commit(true); err != nil {
		return nil, err
	}
	return m, nil
}

// Clone makes a writable volume that starts as parent as of t. Nothing
// written to it touches the parent.
func (s *Store) Clone(parent string, t int64, name string) (*Volume, error) {
	// The fork instant is held while the clone is reserved: from then on
	// Prune sees the clone and keeps what it reads.
	p0, err := s.Volume(parent)
	if err != nil {
		return nil, err
	}
	fork, err := s.instant(p0.ID, t)
	if err != nil {
		return nil, err
	}
	defer s.unhold(p0.ID, fork)
	s.mu.Lock()
	p, err := s.volumeLocked(parent)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if s.mu.vols[p.ID].removing {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s is being removed", ErrNotFound, p.Name)
	}
	if p.ID != p0.ID {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s was replaced", ErrNotFound, p.Name)
	}
	m := &Volume{Name: name, Kind: KindClone, Size: p.SizeAt(fork), BlockSize: p.BlockSize,
		Parent: p.ID, ForkTime: fork}
	vs, err := s.reserveLocked(m)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	vs.patches.known()
	now := s.nextTimeLocked(0)
	s.mu.Unlock()
	defer s.release(vs)
	w := s.newVersionWriter(m, now, VersionClone)
	if err := w.commit(true); err != nil {
		return nil, err
	}
	return m, nil
}

func checkGeometry(size, blockSize int64) error {
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize&(blockSize-1) != 0 {
		return fmt.Errorf("timeline: block size %d is not a power of two from 4 KiB to 1 MiB", blockSize)
	}
	if size <= 0 || size%512 != 0 {
		return fmt.Errorf("timeline: size %d is not a positive multiple of 512 bytes", size)
	}
	return nil
}

// FormatTime prints a version time as RFC 3339 UTC with the precision it
// needs.
func FormatTime(t int64) string {
	return time.Unix(0, t).UTC().Format(time.RFC3339Nano)
}
