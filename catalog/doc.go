// Package catalog is the service every command and the daemon call: it
// names volumes, parses points in time (VOLUME@WHEN), keeps recovery point
// labels, and carries out imports, exports, clones and the listings of the
// CLI contract on top of the timeline.
//
// The service opens no path given to it: Import reads ImportRequest.File
// and Export writes ExportRequest.File, which the caller opened with its
// own rights (OpenSource, OpenDest) and, through the daemon, passed open.
//
// # Data directory
//
//	DATA/index/   the Pebble database (timeline, chunk index, catalog keys)
//	DATA/packs/   chunk pack files
//	DATA/rewind.sock  the daemon's local socket (catalog/api), 0600
//	DATA/.sock-*/     where the socket is made before it is renamed into place
//	DATA/reserve  8 MiB kept free for the index (see timeline.Guard)
//	DATA/replicate/   replication's state: the id this directory holds
//	                  targets' leases by, a journal per target repository
//	                  of what was sent, the last complete run per target,
//	                  and the snapshot of the index a run is sending
//
// Catalog keys share the database with the timeline (see timeline/keys.go):
//
//	'p' | volume id u64 | label  -> recovery point (JSON)
//	'r' | volume id u64          -> retention policy (JSON)
//	'k' | "replica" | vol u64    -> the volume is a replica of another site
//
// # Replication
//
// Replicate (replicate.go) copies a snapshot of the store to a repository
// of its own, which any data directory given it as --store serves. Its
// volumes are marked replicas there: they take no import, label,
// retention or writable head, prune leaves them alone, and clones of them
// are ordinary volumes. One replication runs at a time per Service (the
// next waits), and it keeps garbage collection from starting meanwhile
// (blockstore.Store.HoldGC): a pack the snapshot references does not go
// before it is copied. A verify waits for it too.
//
// # Concurrency
//
// A Service is safe for concurrent use. Pebble lets one process open a
// data directory: while a daemon runs, commands reach this service through
// the daemon's socket instead of opening it themselves. Volume names are
// claimed by the timeline under its lock, so concurrent creators of one
// name (create, clone, import, mount --rw --as) make one volume.
//
// # Time
//
// Instants are int64 nanoseconds since 1970, so a WHEN outside
// 1677-09-21..2262-04-11 is a parse error (ParseWhen) naming the limit.
// import --at may not be more than MaxAtAhead past the clock: each new
// version is stamped after the newest, so a stamp in the future would
// carry every later import with it.
//
// # Errors
//
// ErrBadWhen, ErrBadName, ErrNotFound, ErrExists, ErrConflict and ErrBusy
// classify failures for the CLI and the socket API; messages say what to
// do. ErrNoSpace (also matching syscall.ENOSPC) is an import or open that
// met a full disk; the import gave its space back.
//
// # Full disk
//
// A store whose index could not commit takes no more writes until it is
// reopened (timeline.ErrUnwritable): Writable says why, every volume in
// Volumes carries the note, and Close closes it without flushing. A data
// directory too full for Pebble to start opens read-only, unwritable.
package catalog
