package remote

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
)

const (
	packsPrefix = "packs"
	segPrefix   = "packseg"
	// readAhead is how many blocks past a sequential read are fetched
	// in the background, aheadRun blocks to a GET, up to aheads GETs at
	// once in all. An object store serves a few large ranges for less
	// than many small ones: SeaweedFS spent 3.8 ms of CPU per MiB on
	// 1 MiB ranges and 1.6-2.1 ms on 4 MiB ones.
	readAhead = 16
	aheadRun  = 4
	aheads    = 8
	// deleteAfter is how long a removed pack's objects stay: the chunk
	// store keeps a removed pack's handle for in-flight reads a minute.
	deleteAfter = time.Minute
)

// DefaultCacheBytes bounds the local cache of pack blocks by default.
const DefaultCacheBytes = 1 << 30

// PacksOptions configure a Packs.
type PacksOptions struct {
	FS         vfs.FS // the local file system; default vfs.Default
	Dir        string // the packs directory
	CacheDir   string // where read blocks are kept (emptied at open)
	CacheBytes int64  // default DefaultCacheBytes; < 0 keeps nothing
	Backend    objstore.Backend
	Logger     *slog.Logger
	RetryFor   time.Duration
	ReadOnly   bool // upload and delete nothing
	// Lease, the writer's, bounds every upload and delete (see Lease);
	// nil for none.
	Lease *Lease
}

// Packs is a vfs.FS for the chunk store's packs directory that keeps
// sealed packs in the object store only; see the package comment.
type Packs struct {
	vfs.FS
	dir   string
	c     conn
	cache *cache
	sem   chan struct{} // bounds background fetches

	mu      sync.Mutex
	remote  map[string]*remotePack
	open    map[string]map[*packFile]bool // handles on local files
	seq     map[string]int64              // the block each pack was last read at
	doomed  map[string]*time.Timer        // removed packs whose objects go later
	sealing sync.WaitGroup
}

type remotePack struct {
	whole int64 // size of packs/NAME; -1 without one
	segs  []seg // packseg/NAME/OFFSET
}

func (r *remotePack) size() int64 {
	if r.whole >= 0 {
		return r.whole
	}
	var end int64
	for _, s := range r.segs {
		end = max(end, s.end())
	}
	return end
}

// NewPacks lists the packs the object store holds and settles what an
// earlier process left: packs still local go up whole.
func NewPacks(o PacksOptions) (*Packs, error) {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	ca, err := newCache(o.CacheDir, o.CacheBytes)
	if err != nil {
		return nil, err
	}
	p := &Packs{FS: o.FS, dir: filepath.Clean(o.Dir), c: newConn(o.Backend, o.Logger, o.RetryFor, o.ReadOnly).withLease(o.Lease), cache: ca,
		sem: make(chan struct{}, aheads), remote: map[string]*remotePack{}, open: map[string]map[*packFile]bool{},
		seq: map[string]int64{}, doomed: map[string]*time.Timer{}}
	if err := o.FS.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, err
	}
	objs, err := p.c.list(packsPrefix + "/")
	if err != nil {
		return nil, fmt.Errorf("list the packs in %s: %w", o.Backend, err)
	}
	for _, ob := range objs {
		p.rp(strings.TrimPrefix(ob.Name, packsPrefix+"/")).whole = ob.Size
	}
	if objs, err = p.c.list(segPrefix + "/"); err != nil {
		return nil, fmt.Errorf("list the packs in %s: %w", o.Backend, err)
	}
	for _, ob := range objs {
		if base, off, ok := parseSeg(strings.TrimPrefix(ob.Name, segPrefix+"/")); ok {
			r := p.rp(base)
			r.segs = append(r.segs, seg{off, ob.Size})
		}
	}
	if !o.ReadOnly {
		if err := p.settle(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Packs) rp(name string) *remotePack {
	r, ok := p.remote[name]
	if !ok {
		r = &remotePack{whole: -1}
		p.remote[name] = r
	}
	return r
}

// settle seals the packs an earlier process left in the directory, and
// those it left in segments only.
func (p *Packs) settle() error {
	names, err := p.FS.List(p.dir)
	if err != nil {
		return err
	}
	local := map[string]bool{}
	for _, n := range names {
		if strings.HasSuffix(n, ".pack") {
			local[n] = true
			if err := p.SealPack(p.FS.PathJoin(p.dir, n)); err != nil {
				return err
			}
		}
	}
	for name, r := range p.remote {
		if local[name] || len(r.segs) == 0 || r.whole < 0 && wholeInSegs(r.segs, r.size()) {
			continue
		}
		if r.whole < 0 {
			b := make([]byte, r.size())
			if err := p.readSegs(name, r.segs, b, 0); err != nil {
				return err
			}
			if err := p.c.put(packsPrefix+"/"+name, b); err != nil {
				return err
			}
			r.whole = int64(len(b))
		}
		if err := p.dropSegs(name); err != nil {
			return err
		}
	}
	return nil
}

// Fence stops every upload and delete from now on, with err: another
// writer took the store.
func (p *Packs) Fence(err error) { p.c.fenced.Store(&err) }

// Unwrap implements vfs.FS.
func (p *Packs) Unwrap() vfs.FS { return p.FS }

func (p *Packs) inDir(path string) (string, bool) {
	if filepath.Dir(filepath.Clean(path)) != p.dir {
		return "", false
	}
	return filepath.Base(path), true
}

func (p *Packs) remoteOf(name string) (*remotePack, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.remote[name]
	if !ok {
		return nil, false
	}
	c := *r
	c.segs = append([]seg(nil), r.segs...)
	return &c, true
}

// IsRemote reports whether the pack at path is read from the object
// store (it is not in the local directory).
func (p *Packs) IsRemote(path string) bool {
	name, ok := p.inDir(path)
	if !ok {
		return false
	}
	if _, err := p.FS.Stat(path); err == nil {
		return false
	}
	_, ok = p.remoteOf(name)
	return ok
}

// List implements vfs.FS: the directory's files and the packs in the
// object store.
func (p *Packs) List(dir string) ([]string, error) {
	names, err := p.FS.List(dir)
	if err != nil || filepath.Clean(dir) != p.dir {
		return names, err
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
	}
	p.mu.Lock()
	for n := range p.remote {
		if !seen[n] {
			names = append(names, n)
		}
	}
	p.mu.Unlock()
	sort.Strings(names)
	return names, nil
}

// Stat implements vfs.FS.
func (p *Packs) Stat(path string) (vfs.FileInfo, error) {
	fi, err := p.FS.Stat(path)
	if err == nil || !errors.Is(err, iofs.ErrNotExist) {
		return fi, err
	}
	if name, ok := p.inDir(path); ok {
		if r, ok := p.remoteOf(name); ok {
			return remoteInfo{name, r.size()}, nil
		}
	}
	return nil, err
}

// Open implements vfs.FS.
func (p *Packs) Open(path string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.FS.Open(path, opts...)
	name, in := p.inDir(path)
	if !in {
		return f, err
	}
	if err == nil {
		return p.track(name, path, f), nil
	}
	if errors.Is(err, iofs.ErrNotExist) {
		if _, ok := p.remoteOf(name); ok {
			return &packFile{p: p, name: name, path: path}, nil
		}
	}
	return nil, err
}

// Create implements vfs.FS.
func (p *Packs) Create(path string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(path, c)
	if err != nil {
		return nil, err
	}
	name, in := p.inDir(path)
	if !in {
		return f, nil
	}
	return p.track(name, path, f), nil
}

// OpenReadWrite implements vfs.FS: a pack in the object store only is
// brought back to the directory first.
func (p *Packs) OpenReadWrite(path string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	name, in := p.inDir(path)
	if !in {
		return p.FS.OpenReadWrite(path, c, opts...)
	}
	if _, err := p.FS.Stat(path); errors.Is(err, iofs.ErrNotExist) {
		if r, ok := p.remoteOf(name); ok {
			if err := p.download(name, r, path); err != nil {
				return nil, err
			}
		}
	}
	f, err := p.FS.OpenReadWrite(path, c, opts...)
	if err != nil {
		return nil, err
	}
	return p.track(name, path, f), nil
}

func (p *Packs) download(name string, r *remotePack, path string) error {
	b := make([]byte, r.size())
	if _, err := p.readRemote(name, b, 0); err != nil {
		return fmt.Errorf("bring back pack %s: %w", name, err)
	}
	f, err := p.FS.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (p *Packs) track(name, path string, f vfs.File) *packFile {
	pf := &packFile{p: p, name: name, path: path, local: f}
	p.mu.Lock()
	if p.open[name] == nil {
		p.open[name] = map[*packFile]bool{}
	}
	p.open[name][pf] = true
	p.mu.Unlock()
	return pf
}

// Remove implements vfs.FS. The pack's objects go a minute later (see
// deleteAfter), or at Close.
func (p *Packs) Remove(path string) error {
	err := p.FS.Remove(path)
	name, in := p.inDir(path)
	if !in {
		return err
	}
	p.mu.Lock()
	_, remote := p.remote[name]
	delete(p.remote, name)
	if remote && !p.c.readOnly {
		p.doomed[name] = time.AfterFunc(deleteAfter, func() { p.deleteNow(name) })
	}
	p.mu.Unlock()
	if err != nil && remote && errors.Is(err, iofs.ErrNotExist) {
		err = nil
	}
	return err
}

// deleteNow deletes a removed pack's objects.
func (p *Packs) deleteNow(name string) {
	p.mu.Lock()
	t, ok := p.doomed[name]
	delete(p.doomed, name)
	p.mu.Unlock()
	if !ok {
		return
	}
	t.Stop()
	p.cache.drop(name)
	if err := p.c.del(packsPrefix + "/" + name); err != nil {
		p.c.log.Warn("a removed pack could not be deleted from the object store", "pack", name, "err", err)
	}
	objs, err := p.c.list(segPrefix + "/" + name + "/")
	if err == nil {
		for _, o := range objs {
			err = errors.Join(err, p.c.del(o.Name))
		}
	}
	if err != nil {
		p.c.log.Warn("a removed pack's segments could not be deleted from the object store", "pack", name, "err", err)
	}
}

// SealPack uploads the pack at path whole, deletes its segments, and
// deletes the local file: from now on it is read from the object store.
// The chunk store calls it once nothing more is written to the pack.
func (p *Packs) SealPack(path string) error {
	if p.c.readOnly {
		return nil
	}
	name, in := p.inDir(path)
	if !in {
		return nil
	}
	p.sealing.Add(1)
	defer p.sealing.Done()
	// What the writer wrote since its last sync goes up as segments, as
	// a sync would: a pack filled between syncs then stays in its
	// segments, and nothing goes up twice.
	p.mu.Lock()
	var writers []*packFile
	for pf := range p.open[name] {
		writers = append(writers, pf)
	}
	p.mu.Unlock()
	for _, pf := range writers {
		if err := pf.sync(true); err != nil {
			return fmt.Errorf("seal pack %s: %w", name, err)
		}
	}
	f, err := p.FS.Open(path)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r, _ := p.remoteOf(name)
	if r != nil && r.whole < 0 && wholeInSegs(r.segs, fi.Size()) {
		// Its segments hold it all, in few objects: they stay as they are.
	} else if r == nil || r.whole != fi.Size() {
		b := make([]byte, fi.Size())
		if n, err := f.ReadAt(b, 0); int64(n) < fi.Size() {
			f.Close()
			return fmt.Errorf("seal pack %s: %v", name, err)
		}
		if err := p.c.put(packsPrefix+"/"+name, b); err != nil {
			f.Close()
			return fmt.Errorf("seal pack %s: %w", name, err)
		}
		p.mu.Lock()
		p.rp(name).whole = fi.Size()
		p.mu.Unlock()
		p.cache.drop(name)
	}
	f.Close()
	if r, _ := p.remoteOf(name); r != nil && r.whole >= 0 {
		if err := p.dropSegs(name); err != nil {
			return err
		}
	}
	// Handles on the local file read from the object store from now on.
	p.mu.Lock()
	open := make([]*packFile, 0, len(p.open[name]))
	for pf := range p.open[name] {
		open = append(open, pf)
	}
	delete(p.open, name)
	p.mu.Unlock()
	for _, pf := range open {
		pf.goRemote()
	}
	if err := p.FS.Remove(path); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	return nil
}

func (p *Packs) dropSegs(name string) error {
	p.mu.Lock()
	var segs []seg
	if r, ok := p.remote[name]; ok {
		segs, r.segs = r.segs, nil
	}
	p.mu.Unlock()
	for _, s := range segs {
		if err := p.c.del(segName(segPrefix, name, s.off)); err != nil {
			return err
		}
	}
	return nil
}

// Close waits for seals in progress and deletes the objects of removed
// packs now.
func (p *Packs) Close() {
	p.sealing.Wait()
	p.mu.Lock()
	names := make([]string, 0, len(p.doomed))
	for n := range p.doomed {
		names = append(names, n)
	}
	p.mu.Unlock()
	for _, n := range names {
		p.deleteNow(n)
	}
}

// CacheBytes returns the bytes the local cache holds.
func (p *Packs) CacheBytes() int64 { return p.cache.bytes() }
