// Command rewind keeps every write of protected disks as a timeline and
// serves any second of it. CLI.md is the contract; `rewind --help` and
// `rewind CMD --help` describe every command.
//
// This package only parses flags (kong) and wires the packages together:
// one file per command (import.go, volume.go, history.go, point.go,
// export.go, mount.go, serve.go). Every command calls a catalog.API: the
// daemon's, through DATA/rewind.sock, when `rewind serve` runs on the data
// directory, otherwise the data directory opened in-process. serve.go
// builds the daemon: the REST API's one route table (catalog/api's
// routes, then the daemon's own from recoverserve.go, protectserve.go,
// mountserve.go and verifyserve.go, as api.Route values), served on the
// socket and on --http; the NBD server (exports.go adapts
// timeline views to nbd.Backend), the FUSE tree and rewind mount
// (mountserve.go), the daemon's side of verify --fsck and --boot
// (verifyserve.go: the checks run in package mount/proof), and Prometheus
// metrics (metrics.go). verify --boot runs qemu in the CLI, as the
// caller, on a connection it accepts and passes to the daemon, which
// serves it the pinned instant read-only as NBD. replicate.go and
// replicatesched.go are rewind replicate and serve --replicate-to.
//
// # Acting for callers
//
// The daemon runs as root and acts only for root and the owner of the
// data directory (catalog/api checks the socket's peer). import and
// export open their files here, with the caller's rights, and pass them
// open (catalog.OpenSource, catalog.OpenDest), in-process or not; an
// export that fails removes the file it created. rewind mount mounts
// only onto a directory the caller owns, unless the caller is root, and
// rewind replicate writes only to a directory target the caller owns
// (catalog/api checks it).
// Over --http no caller owns anything here: a mount names no directory,
// and the daemon mounts at DATA/mounts/VOLUME@INSTANT, a 0700 directory
// it makes and removes at unmount (a dir given over HTTP is refused).
// Known limit: the owner is checked before mount(2) follows the path, so
// a caller who owns a parent directory could swap the mount point for a
// symlink in between; it could only cover an empty directory.
//
// rewind serve re-executes itself as an I/O flusher (mount/doc.go) right
// after parsing its arguments; where that fails it logs a warning and
// serves anyway.
//
// # Shutdown
//
// SIGTERM or SIGINT cancels the command's context. The daemon then stops
// accepting, lets in-flight NBD requests finish and be answered, unmounts
// everything it mounted, flushes the store and exits 0.
package main
