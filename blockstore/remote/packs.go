package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/objstore"
	"golang.org/x/sync/errgroup"
)

const (
	packsPrefix = "packs"
	segPrefix   = "packseg"
	// readAhead is how many blocks past a sequential read are fetched
	// in the background, each by its own GET, up to readAhead at once in
	// all.
	readAhead = 16
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
	p := &Packs{FS: o.FS, dir: filepath.Clean(o.Dir), c: newConn(o.Backend, o.Logger, o.RetryFor, o.ReadOnly), cache: ca,
		sem: make(chan struct{}, readAhead), remote: map[string]*remotePack{}, open: map[string]map[*packFile]bool{},
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

// uploadSpans uploads the ranges of a local pack written since its last
// sync, as segments; segments past the file's end (it was cut) go.
func (p *Packs) uploadSpans(name string, f vfs.File, spans []span) error {
	if p.c.readOnly {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	p.mu.Lock()
	r := p.rp(name)
	var cut []seg
	kept := r.segs[:0]
	for _, s := range r.segs {
		switch {
		case s.off >= size:
			cut = append(cut, s)
		case s.end() > size:
			spans = append(spans, span{s.off, size})
		default:
			kept = append(kept, s)
		}
	}
	r.segs = kept
	p.mu.Unlock()
	for _, s := range cut {
		if err := p.c.del(segName(segPrefix, name, s.off)); err != nil {
			return err
		}
	}
	var parts []span
	for _, sp := range coalesce(spans) {
		sp.end = min(sp.end, size)
		for off := sp.off; off < sp.end; off += partSize {
			parts = append(parts, span{off, min(off+partSize, sp.end)})
		}
	}
	var g errgroup.Group
	g.SetLimit(parallelPuts)
	for _, sp := range parts {
		g.Go(func() error {
			b := make([]byte, sp.end-sp.off)
			if n, err := f.ReadAt(b, sp.off); n < len(b) {
				return fmt.Errorf("upload pack %s: read %d bytes at %d: %v", name, len(b), sp.off, err)
			}
			if err := p.c.put(segName(segPrefix, name, sp.off), b); err != nil {
				return err
			}
			p.mu.Lock()
			r := p.rp(name)
			r.segs = append(r.segs, seg{sp.off, sp.end - sp.off})
			sort.Slice(r.segs, func(i, j int) bool { return r.segs[i].off < r.segs[j].off })
			p.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

const (
	// partSize bounds a segment: larger ranges go up in parts, side by
	// side.
	partSize = 8 << 20
	// parallelPuts is how many parts go up at once.
	parallelPuts = 4
)

// maxSegs is how many segments a sealed pack may stay in; a pack synced
// more often than that (small writes, each flushed) goes up whole.
const maxSegs = 32

// wholeInSegs reports whether segs cover [0, size) one after another, in
// at most maxSegs objects.
func wholeInSegs(segs []seg, size int64) bool {
	if len(segs) == 0 || len(segs) > maxSegs {
		return false
	}
	var end int64
	for _, s := range segs {
		if s.off != end {
			return false
		}
		end = s.end()
	}
	return end == size
}

type span struct{ off, end int64 }

func coalesce(spans []span) []span {
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && s.off <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// readRemote reads a pack from the object store, block by block through
// the cache.
func (p *Packs) readRemote(name string, b []byte, off int64) (int, error) {
	r, ok := p.remoteOf(name)
	if !ok {
		return 0, fmt.Errorf("pack %s: %w", name, os.ErrNotExist)
	}
	size := r.size()
	if off >= size {
		return 0, io.EOF
	}
	want := b
	if off+int64(len(b)) > size {
		want = b[:size-off]
	}
	done := 0
	for done < len(want) {
		pos := off + int64(done)
		k := blockKey{name, pos / blockSize}
		boff := pos - k.blk*blockSize
		p.readingAhead(name, k.blk, size)
		n, ok := p.cache.readAt(k, want[done:min(len(want), done+int(blockSize-boff))], boff)
		if !ok {
			data, err := p.cache.get(k, func() ([]byte, error) { return p.fetch(name, k.blk, size) })
			if err != nil {
				return done, err
			}
			if boff >= int64(len(data)) {
				return done, io.ErrUnexpectedEOF
			}
			n = copy(want[done:], data[boff:])
		}
		done += n
	}
	if len(want) < len(b) {
		return done, io.EOF
	}
	return done, nil
}

// readingAhead starts fetching the blocks after blk when the pack is
// being read in order.
func (p *Packs) readingAhead(name string, blk, size int64) {
	p.mu.Lock()
	last, ok := p.seq[name]
	p.seq[name] = blk
	p.mu.Unlock()
	if ok && last == blk {
		return // still in the block the last read was in
	}
	// In order when the block before is here: each of several streams
	// reading one pack in order (NBD clients with a few connections)
	// keeps its read-ahead going.
	if blk > 0 && !p.cache.cached(blockKey{name, blk - 1}) {
		return
	}
	for i := blk + 1; i <= blk+readAhead && i*blockSize < size; i++ {
		k := blockKey{name, i}
		if p.cache.cached(k) {
			continue
		}
		select {
		case p.sem <- struct{}{}:
		default:
			return // enough in flight
		}
		go func() {
			defer func() { <-p.sem }()
			p.cache.get(k, func() ([]byte, error) { return p.fetch(name, k.blk, size) })
		}()
	}
}

// fetch reads block blk of a pack from the object store.
func (p *Packs) fetch(name string, blk, size int64) ([]byte, error) {
	r, ok := p.remoteOf(name)
	if !ok {
		return nil, fmt.Errorf("pack %s: %w", name, os.ErrNotExist)
	}
	off := blk * blockSize
	n := min(blockSize, size-off)
	if r.whole >= 0 {
		return p.c.get(packsPrefix+"/"+name, off, n)
	}
	for _, sg := range r.segs {
		if sg.off <= off && off+n <= sg.end() {
			// Within one segment (the usual case): its bytes as they come.
			data, err := p.c.get(segName(segPrefix, name, sg.off), off-sg.off, n)
			if errors.Is(err, objstore.ErrNotExist) && p.refresh(name) {
				return p.c.get(packsPrefix+"/"+name, off, n)
			}
			return data, err
		}
	}
	b := make([]byte, n)
	err := p.readSegs(name, r.segs, b, off)
	if errors.Is(err, objstore.ErrNotExist) && p.refresh(name) {
		// Another writer sealed it meanwhile (this is a reader).
		return p.c.get(packsPrefix+"/"+name, off, n)
	}
	return b, err
}

// refresh looks for a whole object of a pack known in segments; it
// reports whether there is one.
func (p *Packs) refresh(name string) bool {
	var size int64
	err := p.c.retry("stat "+name, func(ctx context.Context) error {
		var err error
		size, err = p.c.b.Stat(ctx, packsPrefix+"/"+name)
		return err
	})
	if err != nil {
		return false
	}
	p.mu.Lock()
	r := p.rp(name)
	r.whole, r.segs = size, nil
	p.mu.Unlock()
	return true
}

// readSegs fills b from off with the pack's segments (what none covers
// stays zero: bytes no index entry names).
func (p *Packs) readSegs(name string, segs []seg, b []byte, off int64) error {
	end := off + int64(len(b))
	for _, s := range segs {
		lo, hi := max(s.off, off), min(s.end(), end)
		if lo >= hi {
			continue
		}
		data, err := p.c.get(segName(segPrefix, name, s.off), lo-s.off, hi-lo)
		if err != nil {
			return err
		}
		copy(b[lo-off:], data)
	}
	return nil
}

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
