package remote

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
)

const indexPrefix = "index"

// mergeBelow is the size up to which the newest segments of a file are
// merged into one: a log synced after every few writes would otherwise
// leave thousands of tiny objects to list and fetch at a restore.
const mergeBelow = 4 << 20

// Mirror is a vfs.FS that uploads every synced byte of the files in one
// directory (the index's) to the object store; see the package comment.
// Files elsewhere pass through.
type Mirror struct {
	vfs.FS
	dir string
	c   conn

	mu   sync.Mutex
	segs map[string][]seg // by file name, sorted by offset
}

// MirrorOptions configure a Mirror.
type MirrorOptions struct {
	FS       vfs.FS // the local file system; default vfs.Default
	Dir      string // the directory mirrored
	Backend  objstore.Backend
	Logger   *slog.Logger
	RetryFor time.Duration // default DefaultRetryFor
	ReadOnly bool          // upload nothing (a reader of another writer's bucket)
	// Lease, the writer's, bounds every upload and delete (see Lease);
	// nil for none.
	Lease *Lease
}

// NewMirror lists what the object store holds of the directory.
func NewMirror(o MirrorOptions) (*Mirror, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	m := &Mirror{FS: o.FS, dir: filepath.Clean(o.Dir), c: newConn(o.Backend, o.Logger, o.RetryFor, o.ReadOnly).withLease(o.Lease), segs: map[string][]seg{}}
	objs, err := m.c.list(indexPrefix + "/")
	if err != nil {
		return nil, fmt.Errorf("list the index in %s: %w", o.Backend, err)
	}
	for _, ob := range objs {
		if base, off, ok := parseSeg(ob.Name[len(indexPrefix)+1:]); ok {
			m.segs[base] = append(m.segs[base], seg{off, ob.Size})
		}
	}
	return m, nil
}

// Fence stops every upload and delete from now on, with err: another
// writer took the store.
func (m *Mirror) Fence(err error) { m.c.fenced.Store(&err) }

// Unwrap implements vfs.FS.
func (m *Mirror) Unwrap() vfs.FS { return m.FS }

// mirrored returns the name under which path is mirrored, if it is.
func (m *Mirror) mirrored(path string) (string, bool) {
	if filepath.Dir(filepath.Clean(path)) != m.dir {
		return "", false
	}
	base := filepath.Base(path)
	if base == "LOCK" {
		return "", false
	}
	return base, true
}

// drop deletes every object of base.
func (m *Mirror) drop(base string) error {
	m.mu.Lock()
	segs := m.segs[base]
	delete(m.segs, base)
	m.mu.Unlock()
	if m.c.readOnly {
		return nil
	}
	for _, s := range segs {
		if err := m.c.del(segName(indexPrefix, base, s.off)); err != nil {
			return err
		}
	}
	return nil
}

// upload sends [from, to) of f as a segment of base, replacing the
// segments at or past from, and merges the newest small ones.
func (m *Mirror) upload(base string, f io.ReaderAt, from, to int64) error {
	if m.c.readOnly {
		return nil
	}
	if err := m.c.writable("upload", base); err != nil {
		return err
	}
	b := make([]byte, to-from)
	if n, err := f.ReadAt(b, from); int64(n) < to-from {
		return fmt.Errorf("mirror %s: read %d bytes at %d: %v", base, to-from, from, err)
	}
	if err := m.c.put(segName(indexPrefix, base, from), b); err != nil {
		return err
	}
	m.mu.Lock()
	var stale []seg
	segs := m.segs[base]
	kept := segs[:0]
	for _, s := range segs {
		switch {
		case s.off < from:
			kept = append(kept, s)
		case s.off > from:
			stale = append(stale, s)
		}
	}
	kept = append(kept, seg{from, to - from})
	m.segs[base] = kept
	// Merge the newest two while the newer is at least as large and
	// both are small (a binary counter: few objects, few re-uploads).
	var merge *seg
	if n := len(kept); n >= 2 && kept[n-1].size >= kept[n-2].size && kept[n-2].size+kept[n-1].size <= mergeBelow && kept[n-2].end() == kept[n-1].off {
		merge = &seg{kept[n-2].off, kept[n-2].size + kept[n-1].size}
	}
	m.mu.Unlock()
	for _, s := range stale {
		if err := m.c.del(segName(indexPrefix, base, s.off)); err != nil {
			return err
		}
	}
	if merge != nil {
		return m.upload(base, f, merge.off, merge.end())
	}
	return nil
}

// uploadAll sends the whole of the local file path as base.
func (m *Mirror) uploadAll(path, base string) error {
	if err := m.drop(base); err != nil {
		return err
	}
	f, err := m.FS.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return m.upload(base, f, 0, fi.Size())
}

func (m *Mirror) wrap(path string, f vfs.File, size int64) vfs.File {
	base, ok := m.mirrored(path)
	if !ok {
		return f
	}
	return &mirrorFile{File: f, m: m, base: base, written: size, synced: size, dirty: math.MaxInt64}
}

// Create implements vfs.FS.
func (m *Mirror) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := m.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	if base, ok := m.mirrored(name); ok {
		if err := m.drop(base); err != nil {
			f.Close()
			return nil, err
		}
		return &mirrorFile{File: f, m: m, base: base, fresh: true, dirty: math.MaxInt64}, nil
	}
	return f, nil
}

// OpenReadWrite implements vfs.FS.
func (m *Mirror) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := m.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return m.wrap(name, f, fi.Size()), nil
}

// ReuseForWrite implements vfs.FS: the file starts anew in the object
// store (the bytes a reused log holds past its new end are not uploaded).
func (m *Mirror) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := m.FS.ReuseForWrite(oldname, newname, c)
	if err != nil {
		return nil, err
	}
	if base, ok := m.mirrored(oldname); ok {
		if err := m.drop(base); err != nil {
			f.Close()
			return nil, err
		}
	}
	if base, ok := m.mirrored(newname); ok {
		if err := m.drop(base); err != nil {
			f.Close()
			return nil, err
		}
		return &mirrorFile{File: f, m: m, base: base, fresh: true, dirty: math.MaxInt64}, nil
	}
	return f, nil
}

// Remove implements vfs.FS. An object that cannot be deleted is left (a
// restore gets a file Pebble no longer uses, which it deletes).
func (m *Mirror) Remove(name string) error {
	if err := m.FS.Remove(name); err != nil {
		return err
	}
	if base, ok := m.mirrored(name); ok {
		if err := m.drop(base); err != nil {
			m.c.log.Warn("an index file's copy in the object store could not be deleted", "file", base, "err", err)
		}
	}
	return nil
}

// Rename implements vfs.FS.
func (m *Mirror) Rename(oldname, newname string) error {
	if err := m.FS.Rename(oldname, newname); err != nil {
		return err
	}
	if base, ok := m.mirrored(newname); ok {
		if err := m.uploadAll(newname, base); err != nil {
			return err
		}
	}
	if base, ok := m.mirrored(oldname); ok {
		return m.drop(base)
	}
	return nil
}

// Link implements vfs.FS.
func (m *Mirror) Link(oldname, newname string) error {
	if err := m.FS.Link(oldname, newname); err != nil {
		return err
	}
	if base, ok := m.mirrored(newname); ok {
		return m.uploadAll(newname, base)
	}
	return nil
}

// mirrorFile tracks what was written to a mirrored file and uploads it
// when synced.
type mirrorFile struct {
	vfs.File
	m    *Mirror
	base string

	mu      sync.Mutex
	fresh   bool  // created by this process: its object is made at Close at the latest
	pos     int64 // of the next Write
	written int64 // high-water mark of the bytes written
	dirty   int64 // lowest offset written since the last upload, or math.MaxInt64
	synced  int64 // bytes uploaded
}

func (f *mirrorFile) noteWrite(off, n int64) {
	f.mu.Lock()
	f.dirty = min(f.dirty, off)
	if off+n > f.written {
		f.written = off + n
	}
	f.mu.Unlock()
}

func (f *mirrorFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	off := f.pos
	f.mu.Unlock()
	n, err := f.File.Write(p)
	f.mu.Lock()
	f.pos += int64(n)
	f.mu.Unlock()
	f.noteWrite(off, int64(n))
	return n, err
}

func (f *mirrorFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	f.noteWrite(off, int64(n))
	return n, err
}

// flush uploads what was written since the last upload.
func (f *mirrorFile) flush(always bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := min(f.synced, f.dirty)
	if from >= f.written && !(always && f.fresh) {
		return nil
	}
	if err := f.m.upload(f.base, f.File, from, f.written); err != nil {
		return err
	}
	f.synced, f.dirty, f.fresh = f.written, math.MaxInt64, false
	return nil
}

func (f *mirrorFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return err
	}
	return f.flush(true)
}

func (f *mirrorFile) SyncData() error {
	if err := f.File.SyncData(); err != nil {
		return err
	}
	return f.flush(true)
}

func (f *mirrorFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err != nil || !full {
		return full, err
	}
	return true, f.flush(true)
}

// Close uploads a file created here that was never synced (Pebble's
// marker files are made so), then closes it.
func (f *mirrorFile) Close() error {
	err := f.flush(false)
	f.mu.Lock()
	fresh := f.fresh
	f.mu.Unlock()
	if err == nil && fresh {
		err = f.flush(true)
	}
	return errorsJoin(err, f.File.Close())
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Restore downloads the index the object store holds into dir, which it
// empties first; progress, if not nil, is told the bytes done and the
// total. It returns the number of files. A file that goes while it is
// downloaded (a writer is at work) starts the download over, a few
// times.
func Restore(b objstore.Backend, fs vfs.FS, dir string, log *slog.Logger, progress func(done, total int64)) (n int, err error) {
	if fs == nil {
		fs = vfs.Default
	}
	for range 5 {
		if err := fs.RemoveAll(dir); err != nil {
			return 0, err
		}
		n, err = restore(newConn(b, log, 0, true), fs, dir, progress)
		if !errors.Is(err, objstore.ErrNotExist) {
			break
		}
	}
	return n, err
}

func restore(c conn, fs vfs.FS, dir string, progress func(done, total int64)) (int, error) {
	objs, err := c.list(indexPrefix + "/")
	if err != nil {
		return 0, err
	}
	files := map[string][]seg{}
	var total int64
	for _, ob := range objs {
		if base, off, ok := parseSeg(ob.Name[len(indexPrefix)+1:]); ok {
			files[base] = append(files[base], seg{off, ob.Size})
			total += ob.Size
		}
	}
	if err := fs.MkdirAll(dir, 0o750); err != nil {
		return 0, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var done int64
	for _, base := range names {
		f, err := fs.Create(fs.PathJoin(dir, base), vfs.WriteCategoryUnspecified)
		if err != nil {
			return 0, err
		}
		for _, s := range files[base] {
			b, err := c.get(segName(indexPrefix, base, s.off), 0, -1)
			if err == nil {
				_, err = f.WriteAt(b, s.off)
			}
			if err != nil {
				f.Close()
				return 0, fmt.Errorf("restore %s: %w", base, err)
			}
			done += s.size
			if progress != nil {
				progress(done, total)
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return 0, err
		}
		if err := f.Close(); err != nil {
			return 0, err
		}
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return len(names), d.Sync()
}
