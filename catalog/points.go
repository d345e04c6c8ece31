package catalog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/timeline"
)

// tagPoint is the first byte of recovery point keys. Part of the on-disk
// format.
const tagPoint = 'p'

func pointKey(vol uint64, label string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tagPoint}, vol)
	return append(k, label...)
}

func (s *Service) point(v *timeline.Volume, label string) (*Point, error) {
	val, closer, err := s.db.Get(pointKey(v.ID, label))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errorf(ErrNotFound, "%s has no recovery point %q (see rewind point list %s)", v.Name, label, v.Name)
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	p := new(Point)
	if err := json.Unmarshal(val, p); err != nil {
		return nil, fmt.Errorf("recovery point %s@%s: %w", v.Name, label, err)
	}
	p.Volume = v.Name
	return p, nil
}

// AddPoint labels the instant spec names.
func (s *Service) AddPoint(_ context.Context, spec, label string) (*Point, error) {
	if err := CheckLabel(label); err != nil {
		return nil, err
	}
	v, t, _, err := s.Resolve(spec)
	if err != nil {
		return nil, err
	}
	if err := s.replicaOf(v); err != nil {
		return nil, err
	}
	if _, err := s.point(v, label); err == nil {
		return nil, errorf(ErrExists, "%s already has a recovery point %q (remove it first with rewind point rm)", v.Name, label)
	}
	p := &Point{Volume: v.Name, Label: label, Time: Time(t), Created: Time(s.now().UnixNano())}
	b, _ := json.Marshal(p)
	if err := s.tl.Writable(); err != nil {
		return nil, err
	}
	if err := s.db.Set(pointKey(v.ID, label), b, pebble.Sync); err != nil {
		return nil, err
	}
	if err := s.tl.Writable(); err != nil { // see timeline.Guard
		return nil, err
	}
	return p, nil
}

// Points lists a volume's recovery points, oldest first.
func (s *Service) Points(_ context.Context, volume string) ([]Point, error) {
	v, err := s.volume(volume)
	if err != nil {
		return nil, err
	}
	return s.points(v)
}

func (s *Service) points(v *timeline.Volume) ([]Point, error) {
	lo := pointKey(v.ID, "")
	hi := pointKey(v.ID+1, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := []Point{}
	for it.First(); it.Valid(); it.Next() {
		var p Point
		if err := json.Unmarshal(it.Value(), &p); err != nil {
			return nil, err
		}
		p.Volume = v.Name
		out = append(out, p)
	}
	sortPoints(out)
	return out, it.Error()
}

// RemovePoint deletes a label; the data it named stays.
func (s *Service) RemovePoint(_ context.Context, volume, label string) error {
	v, err := s.volume(volume)
	if err != nil {
		return err
	}
	if _, err := s.point(v, label); err != nil {
		return err
	}
	if err := s.replicaOf(v); err != nil {
		return err
	}
	if err := s.tl.Writable(); err != nil {
		return err
	}
	if err := s.db.Delete(pointKey(v.ID, label), pebble.Sync); err != nil {
		return err
	}
	return s.tl.Writable() // see timeline.Guard
}
