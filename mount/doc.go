// Package mount is the FUSE side of rewind: it shows disk images of a
// volume's history as files, and the files inside those images.
//
// It knows nothing of the store. The daemon hands it a Source (volumes,
// their instants and recovery points, and Open of "VOLUME" or
// "VOLUME@WHEN") and Images (Size, a stateless ReadAt, WriteAt, Flush,
// Close). Three kinds of mount are made from them:
//
//   - MountTree (rewind serve --mount DIR) shows DIR/VOLUME/disk.img,
//     DIR/VOLUME/at/WHEN/disk.img for any WHEN (resolved by Open when it
//     is looked up, listed or not; listing at/ shows Source.Instants), and
//     DIR/VOLUME/points/LABEL/disk.img.
//   - MountImage (rewind mount VOLUME@WHEN DIR) shows one image as
//     DIR/disk.img.
//   - MountFiles (rewind mount --files) shows the files inside an image:
//     DIR itself for a whole-disk filesystem, DIR/p1, DIR/p2, ... for a
//     partitioned disk (GPT, or MBR with logical partitions from p5).
//
// # Fixed and moving images
//
// An image at a fixed instant never changes, so the kernel may keep it:
// its opens return FOPEN_KEEP_CACHE and its entries and attributes live
// for Options.FixedTimeout (1h), and a second read is served from the page
// cache without a FUSE request. Requests carry up to 1 MiB (MaxWrite,
// max_read, and the mount's readahead raised to match). Since the kernel
// keeps those pages, a handle on a fixed image reads through ScanReader
// when the image has it (not when opened with O_DIRECT), so that the
// daemon does not copy the same bytes into its chunk cache as well.
//
// Everything else moves: VOLUME/disk.img (latest, or a clone's writable
// head, exactly as the NBD export VOLUME behaves), at/latest, at/-90s, and
// an absolute WHEN less than 10 s old or in the future. Those are resolved
// again by Source.Open on every open, never kept across opens, and their
// entries live for Options.MovingTimeout (1s). An Image that implements
// Immutable decides for itself. A label is taken as fixed; one moved to
// another instant shows its old instant until the kernel drops the entry.
//
// A clone head's disk.img is writable (mode 0644): writes are WriteAt
// calls and fsync calls Flush, which must make them durable. Every other
// image is mode 0444: opening it for writing fails with EROFS, and so
// does resizing. A disk never changes size; writes past its end get
// ENOSPC.
//
// # Files as after a crash
//
// An instant of a live disk is crash-consistent: metadata the system had
// committed may still sit only in the filesystem's journal, so mounting it
// ro,noload (ext4) or ro,norecovery (xfs) can hide files. MountFiles lets
// the kernel replay the journal, as it would after a crash, into a
// throwaway copy-on-write overlay: a private FUSE mount under
// Options.StateDir serves the image with writes kept in an unlinked
// sparse file; each partition of it is attached to a loop device
// (losetup --offset --sizelimit --direct-io=on; partition nodes of
// losetup -P do not appear in containers) and mounted with -o ro, so the
// kernel replays the journal into the overlay and shows the result
// read-only (nosuid, nodev; xfs also nouuid). History is never written:
// the Image's WriteAt is never called. A partitioned disk gets a small
// read-only tmpfs at DIR holding p1, p2, ...; a partition without a
// filesystem it can mount (swap, LVM, LUKS, unknown) is left out and
// reported by Mount.Skipped, one line each; MountFiles fails only when
// nothing can be shown.
//
// Replay (rewind verify --fsck) does the same for a checker: each
// filesystem whose type it is asked for is attached over the overlay,
// mounted read-only (the kernel replays its journal) and unmounted again,
// and the callback gets its loop device, one filesystem at a time;
// everything is undone before Replay returns.
//
// # Clean-up
//
// Every mount, loop device and directory made is written to
// StateDir/mounts.json (under an flock) before it is made, with the
// process's pid and start time. Unmount undoes them newest first (each
// filesystem, then its loop device, then the tmpfs, the FUSE overlay and
// the directories); a busy
// mount is detached lazily (MNT_DETACH, or fusermount3 -u -z) and logged.
// CleanupStale undoes the records of processes that are gone (kill -9),
// checking each against /proc/self/mountinfo and /sys/block/loop* first;
// the daemon calls it at start. Bad input (a missing, non-empty or
// already mounted directory, an image with no filesystem) fails with one
// line saying what to do, and leaves no mount and no loop device behind.
//
// # Concurrency
//
// FUSE requests run on many goroutines at once. Reads are stateless
// ReadAt calls with no cursor and no lock; Image.ReadAt must be safe for
// concurrent use, and so must WriteAt and Flush of a clone head, which
// several handles and NBD connections may share (the Source must keep
// every Image of one head coherent). The overlay's readers take no lock;
// its writers are serialised, because a partial-block write copies the
// block up from the base first. The tree holds one Image per fixed
// instant directory the kernel knows, and closes it when the kernel
// forgets the directory or at Unmount; moving images are opened per
// handle and closed on release.
//
// # Deadlocks to avoid
//
//   - A FUSE request must never wait on a mount served by the same
//     process. The daemon must never stat, list or read inside its own
//     mounts (it uses mountinfo for device numbers and state); Source and
//     Image must reach the store directly, never through DIR. In
//     particular MountFiles reads partition tables and filesystem
//     signatures from the Image, not through its overlay mount.
//   - A loop device on a FUSE file: writing back the loop's dirty pages
//     needs this process, which may itself be waiting in memory reclaim
//     for that write-back. Direct I/O on the loop keeps the FUSE file's
//     pages out of the page cache, and a daemon serving loop devices
//     should run as an I/O flusher (prctl PR_SET_IO_FLUSHER, Linux 5.6+,
//     CAP_SYS_RESOURCE): the flag is per thread and inherited, so call
//     ExecAsIOFlusher first thing in main, before the runtime's threads
//     matter; IOFlusher reports it. Prefer NBD when a real block device
//     is wanted.
//   - Unmount order: the filesystem before its loop device, the loop
//     device before the FUSE mount that backs it, the FUSE mount before
//     the images it serves are closed. Unmounting the FUSE mount first
//     would leave the loop reading a dead file.
//   - Tests and tools may read a mount served by their own process (the
//     tests do), because go-fuse serves from other goroutines; what must
//     not happen is a FUSE handler blocking on such a read.
//
// # Errors
//
// Errors from Source and Image become errnos only at the FUSE edge
// (toErrno): an error wrapping fs.ErrNotExist or ENOENT is ENOENT (an
// unknown volume, label or instant, or one before the first write); a
// wrapped syscall.Errno is passed through (EROFS, EPERM, ENOSPC, ...);
// fs.ErrPermission is EPERM, fs.ErrInvalid EINVAL, a cancelled request
// EINTR, a deadline ETIMEDOUT, and anything else EIO, logged with its
// message. Mount functions return wrapped errors that read as one line.
package mount
