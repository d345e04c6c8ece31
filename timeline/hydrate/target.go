package hydrate

// Target is where the copier writes: a file, a block device, or (later)
// an NBD server. Its methods must be safe for concurrent use on
// disjoint ranges.
type Target interface {
	WriteAt(p []byte, off int64) (int, error)
	// WriteZeroes makes [off, off+n) read as zeroes.
	WriteZeroes(off, n int64) error
	// Flush makes every completed write durable.
	Flush() error
	Size() int64
}
