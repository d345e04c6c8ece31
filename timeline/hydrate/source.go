package hydrate

import "github.com/rewind-dev/rewind/timeline"

// Source is what the copier reads: the live writable clone. Its methods
// must be safe for concurrent use. *timeline.View satisfies it.
type Source interface {
	ReadAt(p []byte, off int64) (int, error)
	Size() int64
	// Extents reports data and holes in [off, off+n); it may cover less
	// than asked, but at least one byte.
	Extents(off, n int64) ([]timeline.Extent, error)
}

var _ Source = (*timeline.View)(nil)

// ScanReader is an optional Source extension the copier reads through
// when it is there: a read that adds nothing to the source's cache, so
// a copy of the whole disk does not evict what the workload reads again.
type ScanReader interface {
	ReadAtScan(p []byte, off int64) (int, error)
}

var _ ScanReader = (*timeline.View)(nil)
