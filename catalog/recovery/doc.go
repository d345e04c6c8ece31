// Package recovery runs instant recoveries: `rewind recover VOLUME@WHEN
// --to TARGET`. A recovery clones VOLUME@WHEN, serves the clone at once
// through a Disk (the NBD export and FUSE image of the new volume), and
// copies it in the background into TARGET with a hydrate.Copier. Writes
// through the Disk land in the clone, as every clone write does, and
// reach TARGET through the copier (dirty bits, or written through in
// write-blocking mode). Cutover waits until TARGET holds what the clone
// holds, pauses the Disk's I/O, records the cutover, and from then on
// the Disk reads and writes TARGET directly. The clone's history up to
// the cutover stays readable; the source volume is never written.
//
// # Targets
//
// A file or block device is opened by the CLI with the caller's rights
// and its descriptor passed to the daemon (the daemon opens no path for
// a caller); a file the CLI creates is new and sparse, so the copier
// skips the clone's holes there. An nbd:// or nbds:// URI is dialled by
// the daemon with rewind's own NBD client (nbd/client). A target is
// locked (flock) and named once among running recoveries: a second
// recovery to it is refused.
//
// # Persistence
//
// Each recovery keeps two files in DATA/recoveries: NAME.json, the
// record (source, target, state, limit), replaced atomically; and
// NAME.progress, the copier's saved bitmap (hydrate.FileStore). A
// restarted daemon resumes every recovery still copying: it reopens a
// file target by path and checks that it is the same file (device and
// inode) the caller passed, dials an NBD target again, and marks dirty
// every block the clone wrote since the saved progress (its watermark).
// The cutover is recorded before the Disk switches to the target, so a
// crash right after it never copies the clone over newer target writes.
//
// # Concurrency
//
// Manager's methods are safe for concurrent use; its map of jobs is under
// Manager.mu. A Disk's I/O holds Disk.mu shared; a cutover holds it
// exclusively for the moment of the switch. A job's record is changed
// under job.mu and saved under it.
//
// # Known limits
//
//   - A failed copy (a target error) stays failed until `recover retry`
//     starts it again (retry.go), into the same target or another, from
//     the beginning (or, with Resume, from its saved progress into the
//     same target): the export keeps serving the clone meanwhile and
//     nothing is lost. After a restart, a recovery whose copy had ended
//     is served through a parked Disk (Manager.parked) whose copier
//     follows the writes and never runs, so that it can be retried.
//   - An NBD target whose connection breaks is dialled again for up to
//     targetRetryFor (nbdTarget); past that the copy fails. One out of
//     reach at a restart is dialled in the background (pendingTarget).
//     A cut-over file or device target that cannot be opened again is
//     served as a deadTarget, whose every request fails, never as the
//     clone, which its later writes left behind.
//   - After cutover the export reports the whole target as data (no
//     block status of the target).
package recovery
