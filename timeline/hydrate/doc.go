// Package hydrate copies a live writable clone into a target (a file, a
// block device, later an NBD server) while a workload uses the clone,
// and hands the workload over to the target once the two are equal. It
// is modelled on QEMU's mirror job (block/mirror.c).
//
// # Model
//
// The source is cut into granules (Options.Granularity, 64 KiB by
// default); a dirty bitmap holds one bit per granule, all set at the
// start. Workers (Options.Workers, 16 by default) take runs of dirty
// granules that are not in flight (at most Options.MaxRequest), clear
// their dirty bits and set their in-flight bits before reading, copy
// them, and on error set the dirty bits again and fail the copy. Holes
// of the source (Source.Extents) are skipped on granules known to read
// as zeroes on the target (a new sparse file, or a granule the copier
// zeroed) and written with Target.WriteZeroes otherwise. Ranges passed
// to Prioritize are taken before the cursor's next run. Before the
// workers start, a sweep asks the source for its holes in spans of
// sweepSpan granules and clears the dirty bits of hole granules known
// zero on the target (claiming each span as a worker would, so writes
// meanwhile stay dirty): an empty 64 GiB disk is ready in one pass
// instead of a million requests. Data copies take
// tokens from a Limiter (bytes/s, SetRate at any time, 0 = unlimited;
// copies already waiting follow the new rate).
//
// Writes through the export: the export brackets each write to the
// clone with BeginWrite and Write.Finish (FinishZeroes for trims and
// zeroes, Abort if the clone write failed). In background mode Finish
// marks the granules dirty. In write-blocking mode BeginWrite waits for
// copies and writes in flight over the range and holds it (so neither a
// copy's older data nor an overlapping write lands on the target last),
// clears the dirty bits of the granules it covers whole, and Finish
// writes to the target before the export acknowledges. The copier
// switches to write-blocking mode when the dirty count fails to shrink
// over Options.StallPasses passes of its cursor; SetMode forces either
// mode. MarkDirty marks ranges that changed outside BeginWrite.
//
// Converged means nothing dirty, nothing in flight, the target flushed.
// The copier keeps running after it converges; Cutover waits for it,
// pauses the export's I/O through the caller's callback, checks again,
// flushes, and stops the copier, leaving I/O paused for the caller to
// switch the export to the target.
//
// # Persisted progress
//
// Checkpoint (every Options.SaveInterval while Run runs, and when it
// returns) snapshots the dirty bitmap with in-flight granules marked
// dirty, plus the known-zero bitmap and a generation number, flushes the
// target, then saves through a Store (FileStore: write, fsync, rename,
// fsync the directory). The layout is in format.go. New resumes from
// it. Writes that land in the clone after a snapshot are not in it, so
// Options.Watermark (for a clone, its newest version time) is read under
// the same lock as the snapshot and saved with it; after a restart the
// caller marks dirty every range the clone wrote at or after it
// (Resumed). A write between BeginWrite and
// Finish is saved as dirty, so a write straddling the snapshot is
// covered too. Options.FlushSource runs after the snapshot and before
// the save: a clone write the bitmap calls copied is then durable in the
// clone, so a crash cannot leave the target newer than the clone. A
// resumed copier trusts no zero bit of a granule saved dirty, and
// MarkDirty drops them too: the target may hold data there written after
// the save.
//
// # Concurrency
//
// Every method of Copier and Limiter is safe for concurrent use. The
// Copier's state lives in one mutex (c.mu); no I/O happens while it is
// held: workers, Write.Finish, Cutover and Checkpoint drop it around
// reads, writes and flushes, and mark their ranges in flight instead.
// Waiters (idle workers, BeginWrite waiting on ranges in flight,
// WaitConverged) wait on a channel that every change closes and
// replaces, together with their context. Checkpoint holds a second mutex
// (saveMu) across its flush and save so saves are ordered. Source and
// Target must be safe for concurrent calls on disjoint ranges.
//
// # Known limits
//
//   - Writes in write-blocking mode are not rate limited, and the copier
//     never switches back to background mode by itself.
//   - At most 64 prioritised ranges are queued; older ones drop.
//   - Any error fails the copy; there is no retry policy yet.
//   - FileTarget.WriteZeroes punches holes, or zeroes in place, and last
//     writes zeroes; on a block device that may be slow.
package hydrate
