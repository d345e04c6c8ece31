package catalog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/timeline"
)

// tagRetention is the first byte of retention policy keys. Part of the
// on-disk format.
const tagRetention = 'r'

func retentionKey(vol uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{tagRetention}, vol)
}

// Retention is how much of a volume's history prune keeps: every version
// newer than KeepAll, then the newest version of each minute, hour and
// day over the spans given (UTC). A zero span keeps nothing by its rule.
// Prune also keeps the newest version, labelled instants, clones' fork
// instants and instants in use.
type Retention struct {
	Volume       string `json:"volume"`
	KeepAll      Span   `json:"keep_all"`
	KeepMinutely Span   `json:"keep_minutely"`
	KeepHourly   Span   `json:"keep_hourly"`
	KeepDaily    Span   `json:"keep_daily"`
}

// Span is a length of time, written like 36h, 90m, 7d, 2w or 1y (365
// days).
type Span time.Duration

var spanRE = regexp.MustCompile(`^([0-9]{1,6})([dwy])$`)

// ParseSpan parses a Span: a Go duration (36h, 90m, 1h30m), or whole
// days, weeks or years (7d, 2w, 1y).
func ParseSpan(s string) (Span, error) {
	if m := spanRE.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		unit := map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[m[2]]
		return Span(time.Duration(n) * unit), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errorf(ErrInvalid, "bad span %q: use 0, a duration (36h, 90m) or days, weeks or years (7d, 2w, 1y)", s)
	}
	return Span(d), nil
}

func (d Span) String() string {
	day := 24 * time.Hour
	switch t := time.Duration(d); {
	case t == 0:
		return "0"
	case t%(365*day) == 0:
		return fmt.Sprintf("%dy", t/(365*day))
	case t%day == 0:
		return fmt.Sprintf("%dd", t/day)
	default:
		return t.String()
	}
}

func (d Span) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Span) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseSpan(s)
	*d = v
	return err
}

// SetRetention gives r.Volume the policy r.
func (s *Service) SetRetention(_ context.Context, r Retention) (*Retention, error) {
	v, err := s.volume(r.Volume)
	if err != nil {
		return nil, err
	}
	for _, d := range []Span{r.KeepAll, r.KeepMinutely, r.KeepHourly, r.KeepDaily} {
		if d < 0 {
			return nil, errorf(ErrInvalid, "a retention span cannot be negative")
		}
	}
	if err := s.replicaOf(v); err != nil {
		return nil, err
	}
	r.Volume = v.Name
	b, _ := json.Marshal(r)
	if err := s.tl.Writable(); err != nil {
		return nil, err
	}
	if err := s.db.Set(retentionKey(v.ID), b, pebble.Sync); err != nil {
		return nil, err
	}
	return &r, s.tl.Writable() // see timeline.Guard
}

// Retention returns a volume's policy.
func (s *Service) Retention(_ context.Context, volume string) (*Retention, error) {
	v, err := s.volume(volume)
	if err != nil {
		return nil, err
	}
	return s.retention(v)
}

func (s *Service) retention(v *timeline.Volume) (*Retention, error) {
	val, closer, err := s.db.Get(retentionKey(v.ID))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, errorf(ErrNotFound, "%s has no retention policy; set one with rewind retention set %s", v.Name, v.Name)
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	r := new(Retention)
	if err := json.Unmarshal(val, r); err != nil {
		return nil, fmt.Errorf("retention policy of %s: %w", v.Name, err)
	}
	r.Volume = v.Name
	return r, nil
}

// PruneRequest is `rewind prune`: one volume, or (Volume empty) every
// volume with a retention policy.
type PruneRequest struct {
	Volume string `json:"volume,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// PruneResult says what prune removed from one volume (or would have,
// in a dry run).
type PruneResult struct {
	Volume   string `json:"volume"`
	DryRun   bool   `json:"dry_run,omitempty"`
	Versions int    `json:"versions"` // before
	Kept     int    `json:"kept"`
	Removed  int    `json:"removed"`
	// Blocks counts block versions deleted: those no kept version reads;
	// Ranges the range records (a TRIM or WRITE_ZEROES) likewise.
	Blocks int64 `json:"blocks"`
	Ranges int   `json:"ranges"`
	Oldest Time  `json:"oldest_kept"`
}

// Prune thins volumes by their retention policies.
func (s *Service) Prune(_ context.Context, r PruneRequest) ([]PruneResult, error) {
	var vols []*timeline.Volume
	if r.Volume != "" {
		v, err := s.volume(r.Volume)
		if err != nil {
			return nil, err
		}
		if _, err := s.retention(v); err != nil {
			return nil, err
		}
		if err := s.replicaOf(v); err != nil {
			return nil, err
		}
		vols = append(vols, v)
	} else {
		for _, v := range s.tl.Volumes() {
			if s.replicaOf(v) != nil {
				continue // its source prunes it
			}
			if _, err := s.retention(v); err == nil {
				vols = append(vols, v)
			} else if !errors.Is(err, ErrNotFound) {
				return nil, err
			}
		}
	}
	out := []PruneResult{}
	for _, v := range vols {
		res, err := s.prune(v, r.DryRun)
		if err != nil {
			return out, fmt.Errorf("prune %s: %w", v.Name, err)
		}
		out = append(out, *res)
	}
	return out, nil
}

func (s *Service) prune(v *timeline.Volume, dry bool) (*PruneResult, error) {
	pol, err := s.retention(v)
	if err != nil {
		return nil, err
	}
	versions, err := s.tl.Log(v.ID, 0, v.Last)
	if err != nil {
		return nil, err
	}
	times := make([]int64, len(versions))
	for i, ver := range versions {
		times[i] = ver.Time
	}
	keep := pol.keep(times, s.now())
	points, err := s.points(v)
	if err != nil {
		return nil, err
	}
	for _, p := range points {
		keep = append(keep, int64(p.Time))
	}
	res, err := s.tl.Prune(v.ID, keep, dry)
	if err != nil {
		return nil, err
	}
	out := &PruneResult{Volume: v.Name, DryRun: dry, Versions: res.Versions, Kept: len(res.Kept),
		Removed: len(res.Removed), Blocks: res.Blocks, Ranges: res.Ranges}
	if !dry && len(res.Removed) > 0 {
		last := LastPrune{Time: Time(s.now().UnixNano()), Removed: len(res.Removed), Blocks: res.Blocks}
		if err := s.setJSON(lastPruneKey(v.ID), last); err != nil {
			return out, err
		}
	}
	if len(res.Kept) > 0 {
		out.Oldest = Time(res.Kept[0])
	}
	return out, nil
}

// keep returns the versions (of times, oldest first) that the policy
// keeps as of now.
func (r *Retention) keep(times []int64, now time.Time) []int64 {
	var keep []int64
	since := func(d Span) int64 { return now.Add(-time.Duration(d)).UnixNano() }
	all := since(r.KeepAll)
	for _, t := range times {
		if r.KeepAll > 0 && t > all {
			keep = append(keep, t)
		}
	}
	for _, rule := range []struct {
		span Span
		unit int64
	}{
		{r.KeepMinutely, int64(time.Minute)},
		{r.KeepHourly, int64(time.Hour)},
		{r.KeepDaily, int64(24 * time.Hour)},
	} {
		if rule.span <= 0 {
			continue
		}
		from := since(rule.span)
		// The newest version of each unit: the last of its run.
		for i, t := range times {
			if t <= from {
				continue
			}
			if i+1 == len(times) || floorDiv(times[i+1], rule.unit) != floorDiv(t, rule.unit) {
				keep = append(keep, t)
			}
		}
	}
	return keep
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
