package catalog

import (
	"context"
	"fmt"

	"github.com/rewind-dev/rewind/blockstore"
)

// VerifyRequest is the scrub of `rewind verify [VOLUME[@WHEN]] [--repair]`.
type VerifyRequest struct {
	// Spec, when set, limits the report to one volume (VOLUME or
	// VOLUME@WHEN); the scrub checks the whole store all the same.
	Spec   string `json:"spec,omitempty"`
	Repair bool   `json:"repair,omitempty"`
}

// VerifyResult says what a scrub found, repaired and lost.
type VerifyResult struct {
	Time       Time  `json:"time"`
	Packs      int   `json:"packs"`
	Bytes      int64 `json:"bytes"`
	WithParity int   `json:"with_parity"`
	// NoParity names the packs written before parity (checked record by
	// record, never repaired); Unsealed the pack being written, whose
	// parity comes when it is sealed.
	NoParity []string `json:"no_parity,omitempty"`
	// Store is the object store the packs are in (--store), where packs
	// carry no parity: every record is checked against its checksum.
	Store           string `json:"store,omitempty"`
	Unsealed        string `json:"unsealed,omitempty"`
	Repairable      int    `json:"repairable_units"`
	Repaired        int    `json:"repaired_units"`
	ParityMissing   int    `json:"parity_missing"`
	ParityRewritten int    `json:"parity_rewritten"`
	Healed          int    `json:"healed_chunks"`
	// LostChunks cannot be read (their slices records included) until
	// the same data is imported or written again.
	LostChunks int              `json:"lost_chunks"`
	Affected   []VerifyAffected `json:"affected,omitempty"`
	// OK: nothing is lost (what parity can rebuild is not lost).
	OK bool `json:"ok"`
}

// VerifyAffected is a volume that lost chunks touch.
type VerifyAffected struct {
	Volume string `json:"volume"`
	// BlockVersions read a lost chunk, written from First to Last: every
	// instant from First on may read one, until its block is written
	// again. A clone forked after First inherits them (Via names its
	// parent).
	BlockVersions int    `json:"block_versions"`
	First         Time   `json:"first"`
	Last          Time   `json:"last"`
	Via           string `json:"via,omitempty"`
}

// Verify scrubs the store: every pack's parity units or records against
// their checksums. With Repair it rewrites what parity rebuilds and the
// sidecars that are missing; without, it only reports. Chunks lost
// beyond repair are remembered, and the next import or write of the same
// bytes stores them again.
func (s *Service) Verify(ctx context.Context, r VerifyRequest, progress ProgressFunc) (*VerifyResult, error) {
	only := ""
	if r.Spec != "" {
		v, _, _, err := s.Resolve(r.Spec)
		if err != nil {
			return nil, err
		}
		only = v.Name
	}
	sr, err := s.chunks.Scrub(ctx, blockstore.ScrubOptions{Repair: r.Repair, Progress: func(done, total int64) {
		report(progress, done, total)
	}})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	out := &VerifyResult{Time: Time(s.now().UnixNano()), Packs: sr.Packs, Bytes: sr.Bytes, WithParity: sr.WithParity,
		Repairable: sr.Repairable, Repaired: sr.Repaired, ParityMissing: sr.ParityMissing,
		ParityRewritten: sr.ParityRewritten, Healed: sr.Healed, LostChunks: len(sr.Lost) + len(sr.Using)}
	if out.Store = s.Store().URL; out.Store == "" {
		for _, n := range sr.NoParity {
			out.NoParity = append(out.NoParity, fmt.Sprintf("%08d.pack", n))
		}
	}
	if sr.Unsealed != 0 && out.Store == "" {
		out.Unsealed = fmt.Sprintf("%08d.pack", sr.Unsealed)
	}
	aff, err := s.tl.Affected(append(sr.Lost, sr.Using...))
	if err != nil {
		return nil, err
	}
	for _, a := range aff {
		out.Affected = append(out.Affected, VerifyAffected{Volume: a.Volume.Name, BlockVersions: a.BlockVersions,
			First: Time(a.First), Last: Time(a.Last)})
		for _, c := range s.tl.Volumes() { // clones read their parent's blocks before the fork
			if c.Parent == a.Volume.ID && c.ForkTime >= a.First {
				out.Affected = append(out.Affected, VerifyAffected{Volume: c.Name, BlockVersions: a.BlockVersions,
					First: Time(c.ForkTime), Last: Time(c.ForkTime), Via: a.Volume.Name})
			}
		}
	}
	if only != "" {
		var keep []VerifyAffected
		for _, a := range out.Affected {
			if a.Volume == only {
				keep = append(keep, a)
			}
		}
		out.Affected = keep
	}
	out.OK = out.LostChunks == 0
	if err := s.setJSON(lastVerifyKey(), out); err != nil {
		return out, err
	}
	return out, nil
}

func lastVerifyKey() []byte { return []byte{tagHousekeeping, 'v', 'e', 'r', 'i', 'f', 'y'} }

// LastVerify returns the last scrub's result, or nil when none ran.
func (s *Service) LastVerify() *VerifyResult {
	r := new(VerifyResult)
	if !s.getJSON(lastVerifyKey(), r) {
		return nil
	}
	return r
}

// ParityStats is what parity did since the daemon started.
func (s *Service) ParityStats() blockstore.ParityStats { return s.chunks.ParityStats() }

// IndexLookups is how many chunks reads looked up in the chunk index
// since the store opened (see blockstore.Store.IndexLookups).
func (s *Service) IndexLookups() int64 { return s.chunks.IndexLookups() }
