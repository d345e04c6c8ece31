package timeline

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Kind says how a volume came to be.
type Kind string

// Volume kinds.
const (
	KindImported  Kind = "imported"
	KindCreated   Kind = "created"
	KindProtected Kind = "protected"
	KindClone     Kind = "clone"
)

// Volume is a volume's metadata. Stored as JSON under 'm'|id; the "format"
// field versions it.
type Volume struct {
	Format    int    `json:"format"`
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	Kind      Kind   `json:"kind"`
	Size      int64  `json:"size"` // as of Last
	BlockSize int64  `json:"block_size"`
	// Sizes records every size the volume had, oldest first.
	Sizes []SizeChange `json:"sizes"`
	// Parent and ForkTime are set for clones: a block with no version of
	// its own reads from the parent as of ForkTime.
	Parent   uint64 `json:"parent,omitempty"`
	ForkTime int64  `json:"fork_time,omitempty"`
	First    int64  `json:"first"` // time of the first version, ns
	Last     int64  `json:"last"`  // time of the newest visible version, ns
	Versions int64  `json:"versions"`
	// LogicalBytes is the sum of bytes each version recorded.
	LogicalBytes int64 `json:"logical_bytes"`
	// StoredBytes is what this volume's versions added to the chunk store.
	StoredBytes int64 `json:"stored_bytes"`
	// Pruned is the newest version Prune removed (0: none). An instant up
	// to it reads the newest version kept at or before it.
	Pruned int64 `json:"pruned,omitempty"`

	// ranges are the volume's range records, oldest first (ranges.go):
	// kept in memory, not in this record. Never mutated; a new version
	// replaces the slice.
	ranges []zeroRange
	// cover maps blocks to the newest range record over them (ranges.go).
	cover []coverSeg
}

// SizeChange is the volume's size from time T on.
type SizeChange struct {
	T    int64 `json:"t"`
	Size int64 `json:"size"`
}

const volumeFormat = 1

// SizeAt returns the volume's size as of t.
func (v *Volume) SizeAt(t int64) int64 {
	size := v.Size
	for i := len(v.Sizes) - 1; i >= 0; i-- {
		if v.Sizes[i].T <= t {
			return v.Sizes[i].Size
		}
		size = v.Sizes[i].Size
	}
	return size
}

// IsClone reports whether v has a parent.
func (v *Volume) IsClone() bool { return v.Parent != 0 }

// FirstTime and LastTime return First and Last as times.
func (v *Volume) FirstTime() time.Time { return time.Unix(0, v.First).UTC() }
func (v *Volume) LastTime() time.Time  { return time.Unix(0, v.Last).UTC() }

func (v *Volume) marshal() []byte {
	v.Format = volumeFormat
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a struct of plain fields always marshals
	}
	return b
}

func unmarshalVolume(b []byte) (*Volume, error) {
	v := new(Volume)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("timeline: volume record: %w", err)
	}
	if v.Format != volumeFormat {
		return nil, fmt.Errorf("timeline: volume record format %d, this build reads %d", v.Format, volumeFormat)
	}
	return v, nil
}

func (v *Volume) clone() *Volume {
	c := *v
	c.Sizes = append([]SizeChange(nil), v.Sizes...)
	c.ranges, c.cover = slices.Clip(v.ranges), slices.Clip(v.cover)
	return &c
}
