package catalog

import (
	"context"

	"github.com/rewind-dev/rewind/timeline"
)

// ActivityRequest asks how a volume was written over time.
type ActivityRequest struct {
	Volume string `json:"volume"`
	// Since and Until bound the range (WHEN forms); they default to the
	// volume's first and last versions.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// Buckets is how many intervals to cut the range into (0: 120; at
	// most MaxActivityBuckets).
	Buckets int `json:"buckets,omitempty"`
}

// DefaultActivityBuckets and MaxActivityBuckets bound ActivityRequest.Buckets.
const (
	DefaultActivityBuckets = 120
	MaxActivityBuckets     = 2000
)

// Activity is a volume's versions counted per interval: what a timeline
// chart draws.
type Activity struct {
	Volume   string           `json:"volume"`
	From     Time             `json:"from"`
	To       Time             `json:"to"`
	Step     int64            `json:"step_ns"`
	Versions int64            `json:"versions"`
	Buckets  []ActivityBucket `json:"buckets"`
}

// ActivityBucket is the versions recorded in [Start, Start+step).
type ActivityBucket struct {
	Start    Time  `json:"start"`
	Versions int64 `json:"versions"`
	Bytes    int64 `json:"bytes"`
}

// Activity counts a volume's versions and their bytes per interval, in
// one pass over the time index and without listing the versions.
func (s *Service) Activity(_ context.Context, r ActivityRequest) (*Activity, error) {
	v, err := s.volume(r.Volume)
	if err != nil {
		return nil, err
	}
	n := r.Buckets
	if n == 0 {
		n = DefaultActivityBuckets
	}
	if n < 1 || n > MaxActivityBuckets {
		return nil, errorf(ErrInvalid, "buckets %d is out of range: give 1 to %d", r.Buckets, MaxActivityBuckets)
	}
	from, to := v.First, v.Last
	if r.Since != "" {
		if from, err = s.bound(v, r.Since); err != nil {
			return nil, err
		}
	}
	if r.Until != "" {
		if to, err = s.bound(v, r.Until); err != nil {
			return nil, err
		}
	}
	if to < from {
		return nil, errorf(ErrInvalid, "the range ends (%s) before it starts (%s): swap since and until", Time(to), Time(from))
	}
	// n intervals of step ns cover [from, to]; the last one also takes a
	// version at to itself.
	width := uint64(to - from)
	step := max((width+uint64(n)-1)/uint64(n), 1)
	count := max((width+step-1)/step, 1)
	a := &Activity{Volume: v.Name, From: Time(from), To: Time(to), Step: int64(step),
		Buckets: make([]ActivityBucket, count)}
	for i := range a.Buckets {
		a.Buckets[i].Start = Time(from + int64(i)*int64(step))
	}
	err = s.tl.EachVersion(v.ID, from, to, func(x timeline.VersionInfo) {
		if x.Time < from {
			return
		}
		b := &a.Buckets[min(uint64(x.Time-from)/step, count-1)]
		b.Versions++
		b.Bytes += x.Bytes
		a.Versions++
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Resolved is a recovery point pinned to its instant.
type Resolved struct {
	Volume  string `json:"volume"`
	Instant Time   `json:"instant"`
	// Spec is VOLUME@<compact instant>; Export the NBD export name that
	// serves that instant read-only (the same string).
	Spec   string `json:"spec"`
	Export string `json:"export"`
}

// Instant resolves VOLUME[@WHEN] (default @latest) to its instant.
func (s *Service) Instant(_ context.Context, spec string) (*Resolved, error) {
	v, t, _, err := s.Resolve(spec)
	if err != nil {
		return nil, err
	}
	sp := v.Name + "@" + Time(t).Compact()
	return &Resolved{Volume: v.Name, Instant: Time(t), Spec: sp, Export: sp}, nil
}
