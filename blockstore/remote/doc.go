// Package remote keeps a store's files in an object store (see objstore)
// as well as, or instead of, its data directory: the layer that makes a
// bucket the backup.
//
// Two vfs.FS layers do it, each below what it serves:
//
//   - Mirror, under the Pebble index: every file stays in the data
//     directory, and every byte Pebble syncs is uploaded before the sync
//     returns, as a segment object index/NAME/OFFSET. The bucket therefore
//     holds, at every instant, a state of the index a crash could have
//     left, which is a state Pebble opens; Restore downloads it into an
//     empty directory.
//   - Packs, under the chunk store's packs: a pack is written in the data
//     directory, and each sync uploads the ranges written since the last
//     as packseg/NAME/OFFSET, in parts that end at multiples of partSize.
//     Once the store seals a pack (it is full, or the store closes) it
//     stays in its segments if they hold it in at most maxSegs objects;
//     else the whole file goes up as packs/NAME and the segments go. The
//     local file is deleted. Reads of a pack that is not local are range
//     GETs through a bounded cache of 1 MiB blocks on local disk
//     (cache.go): a block alone, or for reads in order a run of aheadRun
//     blocks in one GET, with read-ahead (packread.go).
//
// Since the chunk store syncs its packs before the index commits anything
// that points into them (timeline.Guard runs that sync before Pebble syncs
// a table, and a commit syncs the packs first), what the bucket's index
// points at is in the bucket too.
//
// A failed upload is retried with backoff for up to Options.RetryFor (two
// minutes by default): an object store that goes away for a while stalls
// writes, then they go on. Past that, the sync fails, and the store stops
// taking writes (reads go on).
//
// Replication (replicate.go) copies a store to another repository: a
// Replicator sends packs in PartSize segments and then an index snapshot
// file by file, the MANIFEST and marker files last, so that the target
// opens as it was before the run until the new index is whole. A Journal,
// kept by the source, says which parts it sent; a part is skipped only
// when the target holds it at its size and the journal has it (with the
// same checksum, for a pack still being written). A Bucket limits the
// bytes sent. Known limits: a killed Put on a directory target may leave
// a temporary file behind (never listed); a reader that opened the target
// before a run may find packs the run deleted (those the source
// collected) gone.
//
// Object layout under the backend's root:
//
//	rewind.repo          what the repository is (repo.go)
//	lease                who writes it (lease.go)
//	index/NAME/OFFSET    the index's files, in segments (16 hex digits)
//	packs/NNNNNNNN.pack  sealed packs
//	packseg/NNNNNNNN.pack/OFFSET  ranges of packs not yet sealed
package remote
