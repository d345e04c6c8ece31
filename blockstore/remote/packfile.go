package remote

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// packFile is a handle on a pack: on its local file while there is one,
// else on the object store.
type packFile struct {
	p    *Packs
	name string
	path string

	mu    sync.RWMutex
	local vfs.File // nil once the pack is only in the object store

	smu   sync.Mutex
	spans []span // written since the last sync

	upMu sync.Mutex // one upload of spans at a time (see SealPack)
}

func (f *packFile) goRemote() {
	f.mu.Lock()
	if f.local != nil {
		f.local.Close()
		f.local = nil
	}
	f.mu.Unlock()
}

func (f *packFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.RLock()
	if l := f.local; l != nil {
		defer f.mu.RUnlock()
		return l.ReadAt(b, off)
	}
	f.mu.RUnlock()
	return f.p.readRemote(f.name, b, off)
}

// ReadvAt reads into each of bufs in turn from off, as preadv does.
func (f *packFile) ReadvAt(bufs [][]byte, off int64) (int, error) {
	total := 0
	for _, b := range bufs {
		n, err := f.ReadAt(b, off)
		total += n
		off += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (f *packFile) Read([]byte) (int, error) {
	return 0, fmt.Errorf("pack %s: sequential reads are not supported", f.name)
}

func (f *packFile) Write([]byte) (int, error) {
	return 0, fmt.Errorf("pack %s: sequential writes are not supported", f.name)
}

func (f *packFile) WriteAt(b []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.local == nil {
		return 0, fmt.Errorf("pack %s is sealed: %w", f.name, os.ErrPermission)
	}
	n, err := f.local.WriteAt(b, off)
	if n > 0 {
		f.smu.Lock()
		f.spans = append(f.spans, span{off, off + int64(n)})
		f.smu.Unlock()
	}
	return n, err
}

func (f *packFile) sync(data bool) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.local == nil {
		return nil
	}
	var err error
	if data {
		err = f.local.SyncData()
	} else {
		err = f.local.Sync()
	}
	if err != nil {
		return err
	}
	f.upMu.Lock()
	defer f.upMu.Unlock()
	f.smu.Lock()
	spans := f.spans
	f.spans = nil
	f.smu.Unlock()
	if err := f.p.uploadSpans(f.name, f.local, spans); err != nil {
		f.smu.Lock()
		f.spans = append(f.spans, spans...)
		f.smu.Unlock()
		return err
	}
	return nil
}

func (f *packFile) Sync() error     { return f.sync(false) }
func (f *packFile) SyncData() error { return f.sync(true) }

func (f *packFile) SyncTo(length int64) (bool, error) { return true, f.sync(true) }

func (f *packFile) Preallocate(off, n int64) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.local != nil {
		return f.local.Preallocate(off, n)
	}
	return nil
}

func (f *packFile) Stat() (vfs.FileInfo, error) {
	f.mu.RLock()
	if l := f.local; l != nil {
		defer f.mu.RUnlock()
		return l.Stat()
	}
	f.mu.RUnlock()
	r, ok := f.p.remoteOf(f.name)
	if !ok {
		return nil, fmt.Errorf("pack %s: %w", f.name, os.ErrNotExist)
	}
	return remoteInfo{f.name, r.size()}, nil
}

func (f *packFile) Prefetch(off, n int64) error { return nil }

// Fd returns no descriptor, so that the chunk store writes through
// WriteAt (which notes what to upload) and never reads a descriptor that
// SealPack closes under it.
func (f *packFile) Fd() uintptr { return vfs.InvalidFd }

func (f *packFile) Close() error {
	f.p.mu.Lock()
	delete(f.p.open[f.name], f)
	f.p.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.local != nil {
		err := f.local.Close()
		f.local = nil
		return err
	}
	return nil
}

// remoteInfo describes a pack in the object store.
type remoteInfo struct {
	name string
	size int64
}

func (i remoteInfo) Name() string           { return i.name }
func (i remoteInfo) Size() int64            { return i.size }
func (i remoteInfo) Mode() os.FileMode      { return 0o440 }
func (i remoteInfo) ModTime() time.Time     { return time.Time{} }
func (i remoteInfo) IsDir() bool            { return false }
func (i remoteInfo) Sys() any               { return nil }
func (i remoteInfo) DeviceID() vfs.DeviceID { return vfs.DeviceID{} }
