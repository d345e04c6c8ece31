// Package blockstore keeps content-addressed chunks: the bytes of disk
// blocks, named by their BLAKE3-256 digest, compressed where that pays,
// appended to pack files and indexed in Pebble. It knows nothing of
// volumes or time: the timeline package decides which chunk a block held
// when.
//
// # Layout
//
// Chunks are appended to pack files (packs/NNNNNNNN.pack, see pack.go for
// the record format). The chunk index lives in the Pebble database the
// caller opens, under keys that start with IndexPrefix:
//
//	'c' | BLAKE3-256 digest (32 bytes) -> location (see location.go)
//
// Every chunk is deduplicated across all volumes: a digest that is already
// indexed is never written again. A block that repeats bytes stored
// before at another offset (a file copied inside a guest lands on other
// pages) is stored as a slices record that references runs of those
// chunks (see slices.go); page fingerprints for finding them live under
//
//	'f' | xxhash64 of a 4 KiB page -> chunk digest prefix | page number
//
// The collector of unreferenced chunks (Collect, gc.go) counts the
// chunks a slices record references as referenced.
//
// A small write into a block of a writable clone is stored by PutDelta
// (delta.go): the caller holds the block's old chunk and its bytes, so
// the new chunk becomes a slices record of the old chunk's runs (or, when
// the old chunk is a slices record, of its runs) around the changed
// bytes, found by comparison, with no fingerprint lookups, no second read
// of the old chunk and no compression of the whole block; its literal
// bytes are compressed with s2 when the store's codec is zstd. Such a
// record references only chunks stored whole, as every slices record
// does.
//
// A chunk of up to 16 KiB stored alone (the bytes of a small write to a
// clone, which the timeline keeps as a patch of its block) is compressed
// with s2 when the store's codec is zstd: zstd's setup costs more than
// its work on so few bytes.
//
// Whether a chunk is indexed is first asked of a Bloom filter of the IDs
// in the index, loaded in the background from the first write after Open
// (idfilter.go): an ID it
// does not hold is stored at once, without a Pebble lookup. Every ID a
// Txn stores is added before its entry can commit. StopReadingIndex ends
// the loading (and WarmLocations); it must run before the database
// closes.
//
// Chunks that compress and are stored by one PutMany (the new blocks of
// an import segment) are compressed together, up to sixteen to a bundle
// record (see bundle.go); each keeps its own index entry, which names
// the bundle and the member's place in it. Reading a member decodes its
// bundle, which the store keeps for the neighbours that follow. A
// collector can drop a bundle only when all of its members are
// unreferenced.
//
// # Durability
//
// A chunk is written to its pack with pwrite before Put returns, and its
// index entry is added to the caller's batch. The caller commits the batch
// after the pack bytes are written (so a process crash never leaves an
// index entry without its bytes), and SyncPacks runs before any index
// entry can reach the disk (the timeline's Guard calls it before Pebble
// writes its log or a table), so a power loss never does either.
//
// Open checks the newest pack: a torn tail (a record cut short, or in its
// last 8 MiB one that fails its checksum) is cut off. An index entry that
// points past the end of its pack counts as absent (Has).
//
// # Full disk and giving space back
//
// A write that does not fit fails with an error matching syscall.ENOSPC
// and gives its reservation back when nothing was reserved after it. A
// discardable Txn (an import) can be discarded when it fails: its pack
// bytes are cut off, if every byte written since its first is its own;
// Reclaim does the same at open for one a crash ended, keeping records
// that others stored and indexed. While such a Txn is live, no other Txn
// deduplicates against the chunks stored after its start (see
// reclaim.go).
//
// # Errors
//
// A chunk that does not verify (bad record header, checksum mismatch,
// wrong length, truncated pack) is reported as an error wrapping
// ErrCorrupt, and its bytes are never returned. ErrNotFound means the
// index has no such chunk.
//
// # Concurrency
//
// A Store is safe for concurrent use. Appends reserve their offset under a
// short lock and write outside it; reads are stateless ReadAt calls on
// shared file handles.
//
// # Memory
//
// Read and write buffers, decoded bundles and the slabs of a Cache come
// from blockstore/hugemem: memory advised for huge pages before its first
// touch and never unmapped, recycled through pools. A process keeps what
// it needed at its busiest, up to 64 MiB of buffers of each size (beyond
// that, buffers keep their address but give their memory back), plus the
// capacity of its caches. A Store also remembers the locations of up to
// 256 Ki chunks read lately (about 30 MB).
//
// # Parity
//
// A pack written by this build is flagged for parity; once sealed it
// gets a Reed-Solomon sidecar (package parity), written in the
// background. A record that fails its checks on a read is rebuilt from
// it and written back; a chunk beyond repair is remembered as damaged
// and counts as absent for Has, so storing its bytes again heals it.
// Scrub checks every pack (scrub.go); see paritystore.go.
//
// # Collecting garbage
//
// Collect removes the chunks that nothing references, with the caller
// naming the references (the timeline's version values), beside writers
// and readers: mark and sweep with a watermark, a record of every chunk
// Has reported stored while it runs, and pack rewriting; see gc.go for
// the protocol and why a chunk deduplicated meanwhile survives.
package blockstore
