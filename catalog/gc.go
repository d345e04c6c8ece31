package catalog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// tagHousekeeping is the first byte of the records of the last prune of
// each volume and of the last garbage collection. Part of the on-disk
// format:
//
//	'k' | "gc"               -> GCResult (JSON)
//	'k' | "prune" | vol u64  -> LastPrune (JSON)
const tagHousekeeping = 'k'

func lastGCKey() []byte { return []byte{tagHousekeeping, 'g', 'c'} }

func lastPruneKey(vol uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{tagHousekeeping}, "prune"...), vol)
}

// GCRequest is `rewind gc`.
type GCRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// GCResult says what a garbage collection found and freed.
type GCResult struct {
	Time   Time `json:"time"` // when it ended
	DryRun bool `json:"dry_run,omitempty"`
	// Chunks were indexed when it began; Referenced of them were in use.
	Chunks     int64 `json:"chunks"`
	Referenced int64 `json:"referenced"`
	// Removed chunks (their index entries), and their records' bytes.
	Removed      int64 `json:"removed_chunks"`
	RemovedBytes int64 `json:"removed_bytes"`
	// Packs rewritten (their live records copied out) and removed.
	PacksRewritten int   `json:"packs_rewritten"`
	PacksRemoved   int   `json:"packs_removed"`
	MovedBytes     int64 `json:"moved_bytes"`
	// FreedBytes is what the pack files gave back to the filesystem.
	FreedBytes      int64   `json:"freed_bytes"`
	PackBytesBefore int64   `json:"pack_bytes_before"`
	PackBytesAfter  int64   `json:"pack_bytes_after"`
	Seconds         float64 `json:"seconds"`
}

// LastPrune is the last prune that removed anything from a volume.
type LastPrune struct {
	Time    Time  `json:"time"`
	Removed int   `json:"removed_versions"`
	Blocks  int64 `json:"removed_block_versions"`
}

// GC removes the chunks that no version references and rewrites packs
// that are mostly garbage; exports, mounts and writes go on meanwhile.
func (s *Service) GC(ctx context.Context, r GCRequest) (*GCResult, error) {
	res, err := s.tl.Collect(ctx, blockstore.GCOptions{DryRun: r.DryRun})
	if errors.Is(err, blockstore.ErrGCRunning) {
		return nil, errorf(ErrConflict, "a garbage collection, a verify or a replication is running; wait for it to end")
	}
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	out := &GCResult{Time: Time(s.now().UnixNano()), DryRun: r.DryRun, Chunks: res.Chunks, Referenced: res.Referenced,
		Removed: res.Removed, RemovedBytes: res.RemovedBytes, PacksRewritten: res.PacksRewritten,
		PacksRemoved: res.PacksRemoved, MovedBytes: res.MovedBytes, FreedBytes: res.FreedBytes,
		PackBytesBefore: res.PackBytesBefore, PackBytesAfter: res.PackBytesAfter, Seconds: res.Duration.Seconds()}
	if !r.DryRun {
		if err := s.setJSON(lastGCKey(), out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// LastGC returns the last garbage collection, or nil when none ran.
func (s *Service) LastGC() *GCResult {
	r := new(GCResult)
	if !s.getJSON(lastGCKey(), r) {
		return nil
	}
	return r
}

func (s *Service) lastPrune(vol uint64) *LastPrune {
	r := new(LastPrune)
	if !s.getJSON(lastPruneKey(vol), r) {
		return nil
	}
	return r
}

func (s *Service) setJSON(key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Set(key, b, pebble.Sync)
}

// getJSON reads key into v; a missing or unreadable record is none.
func (s *Service) getJSON(key []byte, v any) bool {
	val, closer, err := s.db.Get(key)
	if err != nil {
		return false
	}
	defer closer.Close()
	return json.Unmarshal(val, v) == nil
}
