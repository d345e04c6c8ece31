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
// its data; holes stay holes). From then on every write is in PATH and
// in the timeline, each version at the time its write arrived:
//
//   - A small write (part of one block: a guest's or a database's page)
//     is written to PATH, stamped with its time and queued, and
//     acknowledged; one goroutine records the queue behind the replies,
//     in order, many writes in one pack write and one Pebble commit
//     (group.go). Anything that reads the volume's history (an export
//     or mount of an instant, `rewind log`, a label, prune: the catalog
//     settles the queue when it looks a volume up by name) and every
//     FLUSH wait for the writes queued before them, so no one sees a
//     history without a write that was acknowledged.
//   - Any other write (a whole block or more), WRITE_ZEROES and TRIM are
//     recorded first, then applied to PATH, both before the reply, once
//     the queue is recorded (small writes wait meanwhile, so versions
//     come in the order of their times). WRITE_ZEROES and TRIM record
//     holes and punch holes in PATH (zeroes are written where it cannot
//     punch): both read as zeroes after.
//
// A write the timeline cannot take (a full disk, a failed store) is an
// error to the client and never reaches PATH. When the store fails
// under writes already queued (acknowledged, in PATH, not yet recorded):
// for want of space, the queue waits and is tried again, and every new
// write, FLUSH and read of the history is an error meanwhile; any other
// failure ends the recording, the protection shows as failed, every
// later request is an error, and the write-intent bitmap is marked
// whole, so the next start compares PATH with the timeline and records
// what history lacks (below). Either way no acknowledged write is
// missing from history, and a FLUSH succeeds only once everything
// acknowledged before it is recorded and durable. FLUSH (and FUA, which
// the NBD server turns into one) syncs the timeline and PATH
// (fdatasync) at the same time and replies when both are done. Requests
// that touch the same blocks are ordered by a range lock, so the
// timeline and PATH see overlapping writes in the same order. A write
// that PATH refused is an error; the timeline then records what PATH
// holds there, so its newest version still equals PATH.
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
// both sides. The recorder (group.go) holds small writes back while
// another request is recorded before its reply, and those requests back
// while small writes are queued: the two kinds never interleave, so the
// timeline commits a volume's versions in the order of their times.
// Small writes hash and compress their own bytes, side by side, before
// they queue; the recording goroutine takes the queue up to 512 writes
// at a time, and never two writes of one block at once.
//
// # Known limits
//
//   - The comparison after an unclean stop reads the marked regions of
//     PATH (64 MiB each), all of it when random writes touched them all
//     within the last 10 s before the crash; the export waits for it.
//   - Unprotect while clients are connected ends their I/O with errors.
//   - Block status of a device primary reports all data.
//   - The timeline sets the IOPS: recording a 4 KiB write (its digest
//     and compression, a patch in a pack, four keys in Pebble's
//     memtable) costs the daemon more CPU than serving it; at queue
//     depth 32 without flushes, on 2 cores, rewind reached 0.43-0.50 of
//     nbdkit's IOPS by hand (0.46-0.56 in the bench) with small writes
//     recorded behind their replies, against 0.35-0.38 recording each
//     before its reply (docs/benchmarks.md). A FLUSH waits for the
//     queue, then mostly for the timeline's syncs (the Guard syncs the
//     packs, then the log); FLUSHes that come together share the
//     primary's fdatasync (syncer.go).
//   - A workload that mixes small writes with whole-block ones switches
//     between the two paths; each switch waits for the queue to be
//     recorded.
//   - Writes queued when the recording fails for good (not for want of
//     space) are in history only after a restart, stamped at it.
//   - After an unclean stop, the comparison puts together every block
//     of the marked regions that writes left in patches, to compare its
//     bytes with the primary's: after a crash during random writes over
//     all of a 1 GiB primary, the export answered after 5.5 s.
package protect
