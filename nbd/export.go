package nbd

import (
	"context"
	"time"
)

// Extent is a run of an export reported by block status.
type Extent struct {
	Offset, Length int64
	Hole           bool // reads as zeroes and holds no data (NBD_STATE_HOLE|NBD_STATE_ZERO)
}

// Backend is the disk an export serves. Errors are mapped to NBD errors with
// errors.Is against syscall.EPERM, syscall.ENOSPC, syscall.EINVAL,
// syscall.ENOTSUP, syscall.EIO (anything else => EIO).
//
// The server calls a Backend from several goroutines at once (up to
// Server.Workers per connection, on every connection sharing it); requests
// that overlap may run concurrently, as the NBD protocol allows. Offsets and
// lengths are always within [0, Size()) and lengths are positive.
type Backend interface {
	Size() int64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// WriteZeroes makes [off, off+n) read as zeroes. It may deallocate.
	WriteZeroes(off, n int64) error
	// Trim is advisory: the range may be discarded; its content is then
	// undefined until written again.
	Trim(off, n int64) error
	// Flush persists every write that has completed before it is called,
	// on any connection.
	Flush() error
	// Extents describes [off, off+n) from off on, in order. It may cover
	// less than asked, but returns at least one extent when n > 0. It is
	// called for every BLOCK_STATUS and every structured READ (to send
	// holes as OFFSET_HOLE), so it should cost about one index lookup;
	// QEMU asks for one extent per round trip. Extents the server cannot
	// use (gaps, overlaps, empty ones) are reported as data.
	Extents(off, n int64) ([]Extent, error)
}

// FastZeroer is an optional Backend extension. FastZero reports whether
// WriteZeroes over [off, off+n) is cheaper than writing zeroes, so that
// NBD_CMD_FLAG_FAST_ZERO requests proceed. Without it every fast-zero
// request fails at once with ENOTSUP, as the protocol asks.
type FastZeroer interface {
	FastZero(off, n int64) bool
}

// NoHoleZeroer is an optional Backend extension for WRITE_ZEROES with
// NBD_CMD_FLAG_NO_HOLE: the range must read as zeroes and stay allocated.
// Without it such requests use WriteZeroes, which may deallocate.
type NoHoleZeroer interface {
	WriteZeroesNoHole(off, n int64) error
}

// Cacher is an optional Backend extension for NBD_CMD_CACHE (prefetch).
// Without it, CACHE succeeds without doing anything.
type Cacher interface {
	Cache(off, n int64) error
}

// Resident is an optional Backend extension. Resident reports whether a
// read of [off, off+n) would be served from memory, without waiting for
// storage. The server then serves a small read on the connection's reader
// goroutine and writes its reply at once, instead of handing it to a
// worker and then to the writer: two goroutine wake-ups that took a third
// of the time of a lone 4 KiB read. A wrong answer costs only time (a read
// that does wait holds up the requests behind it), never correctness.
type Resident interface {
	Resident(off, n int64) bool
}

// Export is what a Resolver opens for one connection.
type Export struct {
	Name, Description string
	Backend           Backend
	ReadOnly          bool
	// BlockSize is the preferred block size to advertise (the volume block
	// size). It is rounded up to a power of two in [512, MaxPayload];
	// zero means 4096. The minimum block size is always 1.
	BlockSize uint32
	// MultiConn says all connections to this name share one Backend, so
	// that FLUSH and FUA on one are visible on all (NBD_FLAG_CAN_MULTI_CONN).
	MultiConn bool
	// Release is called once when the connection using the export ends
	// (may be nil). The server does not Flush before it.
	Release func()
	// MetricsName is the name the export's connections and requests are
	// reported under to Metrics (empty: Name). Exports that share it
	// share series: a resolver that accepts many names for one disk (a
	// volume at any instant) should give them all the disk's name, so
	// that the names clients send cannot grow the series without bound.
	MetricsName string
}

// ExportInfo is one entry of NBD_OPT_LIST.
type ExportInfo struct{ Name, Description string }

// Resolver finds exports by name. Open errors: ErrUnknownExport (or wrapping
// it) => NBD_REP_ERR_UNKNOWN with the error text as message; other errors =>
// NBD_REP_ERR_UNKNOWN too, with their text as message.
//
// Open is called only once a client names an export with NBD_OPT_GO,
// NBD_OPT_INFO or NBD_OPT_EXPORT_NAME, and, when TLS is configured, only
// after TLS is up. For NBD_OPT_INFO the export is released before the reply.
type Resolver interface {
	Open(ctx context.Context, name string) (*Export, error)
	List(ctx context.Context) ([]ExportInfo, error)
}

// Metrics receives per-export observations; the daemon implements it with
// Prometheus. Its methods are called concurrently and must not block.
// export is always an Export's MetricsName (or Name), never a string a
// client sent.
type Metrics interface {
	ConnOpened(export string)
	ConnClosed(export string)
	// ConnRefused is called for a connection closed on arrival because a
	// limit was reached: reason is RefusedServerLimit or
	// RefusedClientLimit.
	ConnRefused(reason string)
	// UnknownExport is called when a client names an export the Resolver
	// does not open (NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME). The
	// name is not passed on: clients choose it.
	UnknownExport()
	// BufferMemory is called when the payload bytes held against
	// Server.BufferMemory, or the number of requests waiting for it,
	// change: up to a few times a request.
	BufferMemory(held int64, waiting int)
	// Request is called once a reply has been written. cmd is the lower
	// case command name ("read", "write", "flush", "trim", "cache",
	// "write_zeroes", "block_status", "unknown"); bytes is the request
	// length; d runs from the request header being read to the reply
	// being written; err is nil or wraps the Errno that was sent.
	Request(export string, cmd string, bytes int64, d time.Duration, err error)
}
