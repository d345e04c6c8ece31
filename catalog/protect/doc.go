// Package protect runs continuous protection: `rewind protect VOLUME
// --primary PATH`. The daemon serves PATH, the production disk (a file
// or block device), as the writable export VOLUME through a Disk, and
// records every write in VOLUME's timeline (a volume of kind protected)
// with its own arrival time. Reads come from PATH. Any instant of the
// volume can then be exported, mounted, cloned or recovered as
// VOLUME@WHEN, which is read-only history.
//
// # Writes
//
// The volume is made at protect time by importing PATH's content (only
// its data; holes stay holes). From then on a write is recorded in the
// timeline first, then written to PATH, both before it is acknowledged;
// a write the timeline cannot record (a full disk, a failed store) is an
// error to the client and never reaches PATH, so history has no gap.
// WRITE_ZEROES and TRIM record holes and punch holes in PATH (zeroes are
// written where it cannot punch): both read as zeroes after. FLUSH (and
// FUA, which the NBD server turns into one) syncs the timeline and PATH
// (fdatasync) at the same time and replies when both are done. Requests that touch
// the same blocks are ordered by a range lock, so the timeline and PATH
// see overlapping writes in the same order. A
// write that the timeline took and PATH refused is an error; the
// timeline then records again what PATH holds there, so its newest
// version still equals PATH.
//
// # Persistence and crashes
//
// Each protection keeps DATA/protected/NAME.json: the path, what it
// names (device and inode, or the device number), the size, and whether
// the daemon stopped cleanly. The CLI opens PATH with the caller's
// rights and passes the descriptor (the daemon opens no path for a
// caller); a restarted daemon reopens it by path, only if it is still
// the same file or device, and serves it again. `rewind import` into a
// protected volume is refused (catalog.Import), even after unprotect: its
// versions come from its primary only. PATH is locked (flock) while
// protected; a PATH that another program locks (QEMU locks its
// images) is refused as in use.
//
// After a crash, writes acknowledged since the last flush may be in the
// timeline and not in PATH, or the other way round; flushed writes are
// in both. The start after an unclean stop therefore compares them where
// the write-intent bitmap (intent.go, DATA/protected/NAME.intent) says a
// write was in progress or not flushed: PATH wins, and the blocks where
// it differs from the timeline's newest version are recorded as a new
// version, stamped at that start (it shows in `rewind log` as an import,
// of 0 blocks when they agreed). Without a bitmap it can count on
// (missing, damaged, or marked whole after a divergence), it compares
// all of PATH. So the
// two agree on every flushed write and, from then on, on everything;
// an unflushed write that only PATH kept is in history, with the time
// of the restart rather than its own. A clean stop (Manager.Close, after
// the exports closed) flushes both and records so, and the next start
// skips the comparison.
//
// The comparison runs after Open returns, so that the daemon serves
// everything else while a large primary is read (Manager.resuming). The
// protection shows as resuming, with how far the comparison is; its
// Disk is not served, nor its newest version in the Disk's place
// (Manager.Serve), and Unprotect is refused, until it ends. Close
// interrupts it (Manager.ctx); the record stays unclean, and the next
// start compares again.
//
// # Concurrency
//
// Manager's methods are safe for concurrent use; its map of jobs is under
// Manager.mu. Protect reserves the name under it (Manager.mu.starting)
// and makes the volume without it, so that exports keep opening while a
// large primary is read; the flock on PATH keeps a second protection of
// the same PATH out. A Disk's I/O holds Disk.mu shared; closing it
// (unprotect, daemon stop) holds it exclusively, and later I/O fails with
// ErrEnded. The timeline runs writes of different blocks side by side
// (its block locks); the range lock orders overlapping requests across
// both sides. Small writes (part of one block) that arrive while others
// are being recorded are recorded together (group.go; writes of whole
// blocks are recorded each on its own): each hashes and compresses its
// bytes, then one of them stores the group's chunks in one pack write
// and its versions, one a write, in one Pebble commit; no group holds
// two writes of one block (the range lock), and a group the timeline
// refuses is an error to each of its writes, none of which reaches
// PATH.
//
// # Known limits
//
//   - The comparison after an unclean stop reads the marked regions of
//     PATH (64 MiB each), all of it when random writes touched them all
//     within the last 10 s before the crash; the export waits for it.
//   - Unprotect while clients are connected ends their I/O with errors.
//   - Block status of a device primary reports all data.
//   - The timeline sets the IOPS: recording a 4 KiB write (a patch in a
//     pack, Pebble's memtable) took most of Disk.WriteAt's CPU at queue
//     depth 32, the primary's pwrite about an eighth; at queue depth 32
//     without flushes rewind reaches about a quarter of nbdkit's IOPS,
//     where the NBD server alone (recording nothing) reaches 0.6-1.0 of
//     it: on 2 cores the host is CPU-bound at rewind's 36-46 µs of CPU a
//     write (docs/benchmarks.md), even with writes recorded together.
//     A FLUSH waits mostly for the timeline's syncs (the Guard syncs the
//     packs, then the log); FLUSHes that come together share the
//     primary's fdatasync (syncer.go). Writing the primary on a second
//     goroutine while the timeline records was 12% slower at queue
//     depth 1 on a 2-core machine, so the two run one after the other.
//   - After an unclean stop, the comparison puts together every block
//     of the marked regions that writes left in patches, to compare its
//     bytes with the primary's: after a crash during random writes over
//     all of a 1 GiB primary, the export answered after 5.5 s.
package protect
