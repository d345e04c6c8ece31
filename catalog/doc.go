// Package catalog is the service every command and the daemon call: it
// names volumes, parses points in time (VOLUME@WHEN), keeps recovery point
// labels, and carries out imports, exports, clones and the listings of the
// CLI contract on top of the timeline.
//
// # Data directory
//
//	DATA/index/   the Pebble database (timeline, chunk index, catalog keys)
//	DATA/packs/   chunk pack files
//	DATA/rewind.sock  the daemon's local socket (catalog/api)
//
// Catalog keys share the database with the timeline (see timeline/keys.go):
//
//	'p' | volume id u64 | label  -> recovery point (JSON)
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
// do.
package catalog
