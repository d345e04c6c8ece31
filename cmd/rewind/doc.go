// Command rewind keeps every write of protected disks as a timeline and
// serves any second of it. CLI.md is the contract; `rewind --help` and
// `rewind CMD --help` describe every command.
//
// This package only parses flags (kong) and wires the packages together:
// one file per command (import.go, volume.go, history.go, point.go,
// export.go, mount.go, serve.go). Every command calls a catalog.API: the
// daemon's, through DATA/rewind.sock, when `rewind serve` runs on the data
// directory, otherwise the data directory opened in-process. serve.go
// builds the daemon: the socket, the NBD server (exports.go adapts
// timeline views to nbd.Backend), the FUSE tree and rewind mount
// (mountserve.go), and Prometheus metrics (metrics.go).
//
// # Shutdown
//
// SIGTERM or SIGINT cancels the command's context. The daemon then stops
// accepting, lets in-flight NBD requests finish and be answered, unmounts
// everything it mounted, flushes the store and exits 0.
package main
