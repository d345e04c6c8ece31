// Package timeline records which chunk each block of each volume held at
// each instant, and serves any instant as a View: the one type through
// which every reader and writer of disk contents goes (NBD, FUSE, export,
// hydration, verification). It knows nothing of NBD, FUSE or files.
//
// # Model
//
// A version is stamped with a Unix time in nanoseconds. VOLUME@T reads,
// for each block, the newest version stamped at or before T; a block with
// no version reads as zeroes, or, in a clone, as the parent as of the
// fork time. A volume's metadata (volume.go) says which versions are
// visible: versions stamped after Volume.Last are being written and no
// reader sees them.
//
// Keys and values are listed in keys.go and record.go; they, the Comparer
// name and FormatVersion are on-disk format. Version keys are
// 'v' | volume | block | ^time, so SeekPrefixGE(v|vol|block|^T) lands on
// the version to read, and bloom filters on the (volume, block) prefix
// skip tables for point reads.
//
// # Writing
//
// A version is written by a versionWriter: chunks go to the blockstore
// (pack bytes written before Put returns), version keys, time-index runs
// and the new metadata go to one Pebble batch. A version too large for one
// batch (an import) commits in parts behind a pending marker; Open undoes
// the parts of a version whose final batch never committed, so a killed
// import leaves no version. A durable commit (import, clone, Flush) syncs
// the packs before it syncs the batch that points at them; clone writes
// commit without sync, and Flush (NBD FLUSH and FUA, FUSE fsync) makes
// everything acknowledged so far durable.
//
// # Concurrency
//
// Store and View are safe for concurrent use. Writers of one volume are
// serialised by its volState.writeMu (a partial-block write reads the
// block first); readers take no lock but the short one guarding the
// metadata map, and see either the old or the new metadata, each
// complete. Decoded chunks are cached by ID (blockstore.Cache, in
// huge-page slabs); a chunk is immutable, so the cache never needs
// invalidating. Raw chunks read whole into the caller's buffer bypass it:
// the kernel's page cache already holds their records. Small reads that
// come in order start a read-ahead of the blocks that follow, on a
// goroutine of its own, at most one per view (readahead.go); Store.Close
// waits for it.
//
// A volume name is claimed under Store.mu before the first version is
// written (reserve.go): CreateVolume, Clone and an Import that creates
// share that one reservation, so of several creators of one name exactly
// one succeeds and the others get ErrExists; a creator that fails gives
// the name back. RemoveVolume checks for clones, finished or still being
// created, under the same lock and bars new clones of the volume until it
// is done.
//
// # Errors
//
// ErrReadOnly, ErrOutOfRange, ErrNoSpace and ErrNotFound also match the
// syscall.Errno an edge should report (EPERM, EINVAL, ENOSPC, ENOENT), so
// the NBD and FUSE servers map them with errors.Is alone. A chunk that
// fails its checksum surfaces as an error wrapping blockstore.ErrCorrupt:
// wrong data is never returned.
//
// # Known limits
//
// Clone writes commit without fsync. Their chunk index entries can reach
// the disk before their pack bytes do (a memtable flush, another writer's
// sync), so a power loss (not a process crash) before the next Flush may
// leave an unflushed block, or a later write that deduplicates against
// its chunk, pointing at bytes that never reached the disk: that block
// reads as an I/O error (the checksum catches it), never as wrong data.
// The chunk store does not deduplicate against an entry whose bytes lie
// past the end of its pack, so a later write stores them again and heals
// it. Imports sync the packs before every batch, so they are not exposed. An import stamped --at in the past,
// between the volume's newest version and an instant already viewed,
// changes what that instant shows.
package timeline
