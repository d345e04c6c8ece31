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
// reader sees them. Only the head of a clone or of a protected volume
// (Store.Head) takes writes, each a version of its own; what this
// package says of clone writes holds for both.
//
// A TRIM or WRITE_ZEROES is one version like any write, but the run of
// whole blocks it zeroes is one range record (ranges.go), not a hole
// version per block; its partial edge blocks are patches as for a write.
// A range record is a hole base for each block it covers, stamped with its
// version's time: block b as of T reads its newest base at or before T,
// a range record over b counting as one, with the patches after it. Blocks
// that are holes already are not recorded, so zeroing nothing but holes
// records no version, and zeroing only a few blocks that hold data (fewer
// than defaultRangeBlocks) gives each a hole version instead. Each volume's range records are kept in memory with
// its metadata (loaded at Open, replaced when a version commits), so a
// read asks the index nothing more for them. An older store moves to
// FormatVersion with its first range record, so that builds which know
// nothing of them refuse it rather than read trimmed blocks as their older
// versions.
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
// import leaves no version. A durable commit (import, clone) syncs the
// packs before it syncs the batch that points at them; clone writes
// commit without sync, and Flush (NBD FLUSH and FUA, FUSE fsync) makes
// everything acknowledged so far durable by syncing Pebble's log, whose
// syncs the Guard precedes with a sync of the packs (see Durability).
// A clone write commits the volume's metadata record only every
// maxUnsavedVersions versions: its summary record says the rest, and
// Open rolls the metadata forward over the summaries after its Last;
// Store.Close writes the records that are behind. A clone write that changes part
// of a block stores only the bytes it writes, as a patch over the block's
// previous version (keys.go), and reads nothing. Once a block has
// maxPatches patches in a row (patch.go), the next partial write reads the
// block, patches applied, and stores it whole as a new base, as a delta of
// the old chunk when there were no patches (blockstore.Txn.PutDelta); a
// read of a block applies at most maxPatches patches per volume of a clone
// chain. New chunks go into the decoded-chunk cache, for the next read or
// write of a hot block. Once the store takes no write for a moment,
// blocks whose newest versions end in runs of foldAt patches or more are
// folded (fold.go): the newest version becomes a base holding the same
// bytes, under the same key, so that cold reads of the newest instant
// find whole blocks; Open looks for such runs again, since the queue is
// kept in memory only, unless the store was closed with nothing left to
// fold and said so (fold.go). A block put together from its patches for a read
// of part of it is kept in the chunk cache under a digest of its base and
// patches; a read of the whole block (a copy of the disk) reads the base
// in place with the blocks around it, lays the patches over it and keeps
// nothing put together, as for a raw chunk read whole.
//
// # Pruning
//
// Prune (prune.go) thins a volume's history to the versions that a set
// of instants reads, plus the newest version, every instant an open view
// holds (ViewAt holds its instant until Close) and the fork instants of
// the volume's clones. A block version survives when a kept instant reads
// it: the newest at or before the instant, and below a patch the versions
// down to its base. A range record survives when a kept instant reads
// it for some block, that is when a block it covers has no newer base up
// to that instant, whether or not its version is kept: removing it would
// let the older versions it hides show through. The removed versions
// leave the history first, in one commit that also records the newest of
// them in the metadata (Volume.Pruned) and deletes the range records that
// no kept instant reads; then their block versions are deleted. A view or a
// clone asked for an instant up to Volume.Pruned gets the newest version
// kept at or before it, so no instant ever reads a mix of what remains.
// Prune runs beside writers; views and clones wait for it while they pick
// their instant (volState.pruneMu). Chunks are not freed: a collector
// finds those that no version references.
//
// # Durability
//
// A durable commit (an import, a fold, a relocation, a collection) syncs
// the pack bytes it wrote before the index entries that point at them.
// A clone write does not: it commits without sync, and Pebble writes its
// log to the file as commits come, so after a power loss the log may hold
// a clone write whose pack bytes never reached the disk. The store keeps
// a synced mark for that (synced.go): a time at or before which every
// version's chunks are durable, saved after a sync of the packs every
// 250 ms while writes come and at a clean close. Open reads back the
// chunks of every version stamped after the mark; a version that lost
// one is taken out of the history (its block versions, time-index
// records and share of the metadata are deleted, and so are those of
// later versions of the same blocks), and the lost chunk's index entry
// goes, so that no later write deduplicates against it.
// Pebble's tables and log are synced after the packs (the Guard,
// guard.go), so only log records that the kernel wrote out unsynced can
// be ahead of the packs. What a power loss can cost:
//
//   - Nothing that a Flush, an FUA write, an fsync or an import returned
//     for: all of it is on disk, bytes and index.
//   - Clone writes since the last Flush: any of them may be lost, each
//     whole (its blocks read as they did before it), and with one the
//     later writes of the same blocks; none reads as an error or as other
//     bytes.
//   - An import that had not returned: it leaves no version, and its
//     pack bytes are given back at the next open (see Store.Open).
//   - Bytes at the tail of the newest pack that no durable index entry
//     names: blockstore.Open cuts them off.
//
// # Full disk
//
// A pack write that does not fit fails that write with an error matching
// syscall.ENOSPC; the store goes on. A write of the index that does not
// fit, or an index commit or sync that fails, stops the store taking
// writes (ErrUnwritable, also matching ENOSPC when the disk is full): the
// Guard keeps a reserve file of free space for what Pebble has in flight
// at that moment, so Pebble never meets the error itself. Reads go on;
// the store writes again once reopened with space to spare.
//
// # Concurrency
//
// Store and View are safe for concurrent use. An import or a removal
// holds its volume's volState.writeMu alone. Clone writes (View.write)
// hold it shared and run side by side: each holds the locks of the blocks
// it covers (blocklock.go: striped, taken in order) while it reads the
// rest of a partial block, fills it and stores its chunks, so two writes
// of one block take turns and the second reads what the first committed;
// only stamping the version's time and committing its batch are
// serialised, by volState.commitMu, so versions become visible in the
// order of their times and Volume.Last only grows. Readers take no lock
// but the short one guarding the metadata map, and see either the old or
// the new metadata, each complete. A write may also be stamped ahead of
// its recording (Store.Stamp, Write.At: a protected disk's small write,
// recorded behind its reply); its writer records such writes in the
// order of their stamps and never commits another version of the volume
// in between, and the synced mark stays before the oldest stamp whose
// write is not recorded yet. Decoded chunks are cached by ID (blockstore.Cache, in
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
// the NBD and FUSE servers map them with errors.Is alone. A write that
// meets a full disk wraps syscall.ENOSPC; once the store stopped taking
// writes, every write and Flush returns an error matching ErrUnwritable
// that wraps its cause (ENOSPC, or anything else, which edges report as
// EIO). A chunk that
// fails its checksum surfaces as an error wrapping blockstore.ErrCorrupt:
// wrong data is never returned.
//
// # Known limits
//
// A read of a volume with range records as of an instant older than its
// newest record looks through them, newest first, for those over its
// blocks: a cost that grows with their number (a head, or an instant
// after the newest record, searches a map; a volume with none pays
// nothing). Runs of fewer than defaultRangeBlocks whole blocks are written
// block by block to keep the records few, and Prune removes those that no
// kept instant reads.
//
// An import stamped --at in the past, between the volume's newest
// version and an instant already viewed, changes what that instant shows.
// Only the newest pack's tail is checked at open; an older pack torn by a
// power loss keeps its garbage tail (no durable entry points into it).
package timeline
