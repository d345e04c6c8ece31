package catalog

import (
	"context"
	"io"
	"os"
	"time"
)

// API is what the CLI calls: the Service in-process, or the daemon
// through its socket (catalog/api). Every method is one command of the CLI
// contract.
type API interface {
	Import(ctx context.Context, r ImportRequest, progress ProgressFunc) (*ImportResult, error)
	Volumes(ctx context.Context) ([]VolumeInfo, error)
	CreateVolume(ctx context.Context, r CreateRequest) (*VolumeInfo, error)
	RemoveVolume(ctx context.Context, name string, force bool) error
	Log(ctx context.Context, r LogRequest) ([]LogEntry, error)
	Diff(ctx context.Context, a, b string) (*DiffResult, error)
	AddPoint(ctx context.Context, spec, label string) (*Point, error)
	Points(ctx context.Context, volume string) ([]Point, error)
	RemovePoint(ctx context.Context, volume, label string) error
	// Export writes spec to r.File; dest "-" writes to w.
	Export(ctx context.Context, r ExportRequest, w io.Writer, progress ProgressFunc) (*ExportResult, error)
	Clone(ctx context.Context, spec, name string) (*VolumeInfo, error)
	Stats(ctx context.Context) (*Stats, error)
	SetRetention(ctx context.Context, r Retention) (*Retention, error)
	Retention(ctx context.Context, volume string) (*Retention, error)
	Prune(ctx context.Context, r PruneRequest) ([]PruneResult, error)
	GC(ctx context.Context, r GCRequest) (*GCResult, error)
	Verify(ctx context.Context, r VerifyRequest, progress ProgressFunc) (*VerifyResult, error)
	Replicate(ctx context.Context, r ReplicateRequest, progress ProgressFunc) (*ReplicateResult, error)
	Activity(ctx context.Context, r ActivityRequest) (*Activity, error)
	Instant(ctx context.Context, spec string) (*Resolved, error)
}

// ProgressFunc receives how far a long operation is.
type ProgressFunc func(done, total int64)

// ImportRequest is `rewind import`.
type ImportRequest struct {
	Volume string `json:"volume"`
	// Source names the source in messages; File is the source itself,
	// opened by the caller (OpenSource): the service opens no path.
	Source    string   `json:"source"`
	File      *os.File `json:"-"`
	At        string   `json:"at,omitempty"`
	BlockSize int64    `json:"block_size,omitempty"`
	// Stream, when File is nil, is the source as a stream of Size bytes
	// (an import sent over the network): read once, in order, no holes
	// skipped.
	Stream io.Reader `json:"-"`
	Size   int64     `json:"-"`
	// DirtyBitmap, for an nbd:// Source, reads only the blocks that
	// QEMU's qemu:dirty-bitmap:NAME context marks; the rest is kept from
	// the volume's newest version.
	DirtyBitmap string `json:"dirty_bitmap,omitempty"`
}

// ImportResult says what an import recorded.
type ImportResult struct {
	Volume   string        `json:"volume"`
	Time     Time          `json:"time"`
	Created  bool          `json:"created"`
	Size     int64         `json:"size"`
	Blocks   int64         `json:"blocks"`
	Bytes    int64         `json:"bytes"`
	Stored   int64         `json:"stored"`
	Duration time.Duration `json:"duration_ns"`
	// Read is the bytes read from the source (holes and, with a dirty
	// bitmap, clean blocks are not read).
	Read int64 `json:"read"`
}

// VolumeInfo is one row of `rewind volume list`.
type VolumeInfo struct {
	Name         string `json:"name"`
	Size         int64  `json:"size"`
	BlockSize    int64  `json:"block_size"`
	Kind         string `json:"kind"`
	Parent       string `json:"parent,omitempty"`
	ForkTime     *Time  `json:"fork_time,omitempty"`
	First        Time   `json:"first"`
	Last         Time   `json:"last"`
	Versions     int64  `json:"versions"`
	LogicalBytes int64  `json:"logical_bytes"`
	StoredBytes  int64  `json:"stored_bytes"`
	// Unwritable says why the store takes no writes (its disk is full),
	// when it does not; the same for every volume.
	Unwritable string `json:"unwritable,omitempty"`
	// LastPrune is the last prune that removed versions of the volume;
	// LastGC the last garbage collection of the store (the same for
	// every volume). Absent when none ran.
	LastPrune *LastPrune `json:"last_prune,omitempty"`
	LastGC    *GCResult  `json:"last_gc,omitempty"`
	// LastVerify is the last scrub of the store (rewind verify, or the
	// daemon's schedule), the same for every volume.
	LastVerify *VerifyResult `json:"last_verify,omitempty"`
	// Replica, for a volume replicated from another site (rewind
	// replicate), says from where and as of when: it takes no writes.
	Replica *ReplicaInfo `json:"replica,omitempty"`
}

// CreateRequest is `rewind volume create`.
type CreateRequest struct {
	Volume    string `json:"volume"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size,omitempty"`
}

// LogRequest is `rewind log`.
type LogRequest struct {
	Volume string `json:"volume"`
	Since  string `json:"since,omitempty"`
	Until  string `json:"until,omitempty"`
	// Limit, when above 0, keeps the newest Limit versions of the range.
	Limit int `json:"limit,omitempty"`
}

// LogEntry is one recorded version.
type LogEntry struct {
	Time   Time   `json:"time"`
	Kind   string `json:"kind"`
	Blocks int64  `json:"blocks"`
	Bytes  int64  `json:"bytes"`
	Stored int64  `json:"stored"`
	Size   int64  `json:"size"`
}

// DiffResult is `rewind diff`.
type DiffResult struct {
	From   Time    `json:"from"`
	To     Time    `json:"to"`
	Ranges []Range `json:"ranges"`
	Bytes  int64   `json:"bytes"`
}

// Range is a run of bytes.
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Point is a recovery point label.
type Point struct {
	Volume  string `json:"volume"`
	Label   string `json:"label"`
	Time    Time   `json:"time"`
	Created Time   `json:"created"`
}

// ExportRequest is `rewind export`.
type ExportRequest struct {
	Spec string `json:"spec"`
	// Dest names the destination in messages, or is "-" for the writer
	// Export is given; File is the destination itself, opened by the
	// caller (OpenDest): the service opens no path.
	Dest string   `json:"dest"`
	File *os.File `json:"-"`
}

// ExportResult says what an export wrote.
type ExportResult struct {
	Spec     string        `json:"spec"`
	Time     Time          `json:"time"`
	Size     int64         `json:"size"`
	Data     int64         `json:"data_bytes"` // bytes of data (not holes) written
	Duration time.Duration `json:"duration_ns"`
}

// Stats is `rewind stats`.
type Stats struct {
	Volumes          int     `json:"volumes"`
	Versions         int64   `json:"versions"`
	LogicalBytes     int64   `json:"logical_bytes"` // bytes all versions recorded
	UniqueBytes      int64   `json:"unique_bytes"`  // distinct chunk bytes before compression
	StoredBytes      int64   `json:"stored_bytes"`  // pack files on disk
	IndexBytes       int64   `json:"index_bytes"`   // the Pebble database
	Chunks           int64   `json:"chunks"`
	SlicedChunks     int64   `json:"sliced_chunks"` // shifted duplicates: chunks stored as slices of others
	SlicedBytes      int64   `json:"sliced_bytes"`  // their size before slicing
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
	// Store is where the packs are: empty for the data directory, else
	// the object store (--store), with the bytes of its local cache.
	Store      string `json:"store,omitempty"`
	CacheBytes int64  `json:"cache_bytes,omitempty"`
	// FreeBytes is the space left on the data directory's filesystem
	// (-1: unknown).
	FreeBytes int64 `json:"free_bytes"`
}
