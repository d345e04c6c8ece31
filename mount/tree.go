package mount

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// tree is the state shared by the nodes of a MountTree: the source, and
// the fixed images that instant directories hold open, so Unmount can
// close those the kernel never forgot.
type tree struct {
	cfg *config
	src Source
	mu  struct {
		sync.Mutex
		open map[*instantDir]struct{}
	}
}

func (t *tree) hold(d *instantDir) {
	t.mu.Lock()
	t.mu.open[d] = struct{}{}
	t.mu.Unlock()
}

// release closes d's image once, whether the kernel forgot d or the tree
// is going away.
func (t *tree) release(d *instantDir) {
	t.mu.Lock()
	_, ok := t.mu.open[d]
	delete(t.mu.open, d)
	t.mu.Unlock()
	if ok {
		closeLogged(t.cfg, d.file.name, d.file.img)
	}
}

func (t *tree) close() {
	t.mu.Lock()
	held := make([]*instantDir, 0, len(t.mu.open))
	for d := range t.mu.open {
		held = append(held, d)
	}
	t.mu.Unlock()
	for _, d := range held {
		t.release(d)
	}
}

func dirEntry(out *fuse.EntryOut, t time.Duration) {
	out.Attr.Mode = syscall.S_IFDIR | 0o555
	out.SetEntryTimeout(t)
	out.SetAttrTimeout(t)
}

func listDirs(names []string) fs.DirStream {
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, n := range names {
		entries = append(entries, fuse.DirEntry{Name: n, Mode: syscall.S_IFDIR})
	}
	return fs.NewListDirStream(entries)
}

// rootDir lists the volumes.
type rootDir struct {
	fs.Inode
	t *tree
}

var (
	_ fs.NodeReaddirer = (*rootDir)(nil)
	_ fs.NodeLookuper  = (*rootDir)(nil)
	_ fs.NodeGetattrer = (*rootDir)(nil)
)

func (r *rootDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	return 0
}

func (r *rootDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	vols, err := r.t.src.Volumes(ctx)
	if err != nil {
		r.t.cfg.log.Warn("mount: list volumes", "err", err)
		return nil, toErrno(err)
	}
	return listDirs(vols), 0
}

func (r *rootDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	vols, err := r.t.src.Volumes(ctx)
	if err != nil {
		r.t.cfg.log.Warn("mount: list volumes", "err", err)
		return nil, toErrno(err)
	}
	if !slices.Contains(vols, name) {
		return nil, syscall.ENOENT
	}
	dirEntry(out, r.t.cfg.MovingTimeout)
	// Keep the node the kernel already has: a new one would give every
	// fixed image below it a new inode, and the kernel would drop its
	// cached pages each time the short entry timeout ran out.
	if ch := r.GetChild(name); ch != nil {
		return ch, 0
	}
	return r.NewInode(ctx, &volumeDir{t: r.t, vol: name}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

// volumeDir holds VOLUME/disk.img, VOLUME/at/ and VOLUME/points/.
type volumeDir struct {
	fs.Inode
	t   *tree
	vol string
}

var (
	_ fs.NodeReaddirer = (*volumeDir)(nil)
	_ fs.NodeLookuper  = (*volumeDir)(nil)
)

func (v *volumeDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream([]fuse.DirEntry{
		{Name: "disk.img", Mode: syscall.S_IFREG},
		{Name: "at", Mode: syscall.S_IFDIR},
		{Name: "points", Mode: syscall.S_IFDIR},
	}), 0
}

func (v *volumeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch name {
	case "disk.img":
		// VOLUME behaves as its NBD export: a clone head is writable,
		// anything else is latest, read-only. Both can change, so every
		// open resolves it again and nothing is cached for long.
		img, writable, err := v.t.src.Open(ctx, v.vol)
		if err != nil {
			v.t.cfg.log.Warn("mount: open image", "name", v.vol, "err", err)
			return nil, toErrno(err)
		}
		f := &imageFile{cfg: v.t.cfg, src: v.t.src, name: v.vol, size: img.Size(), writable: writable}
		closeLogged(v.t.cfg, v.vol, img)
		f.fillEntry(out)
		return v.NewInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), 0
	case "at", "points":
		dirEntry(out, v.t.cfg.MovingTimeout)
		if ch := v.GetChild(name); ch != nil { // see rootDir.Lookup
			return ch, 0
		}
		list := v.t.src.Instants
		if name == "points" {
			list = v.t.src.Points
		}
		return v.NewInode(ctx, &whenDir{t: v.t, vol: v.vol, list: list}, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	return nil, syscall.ENOENT
}

// whenDir is VOLUME/at/ or VOLUME/points/: it lists what list returns,
// and looks up any WHEN, listed or not.
type whenDir struct {
	fs.Inode
	t    *tree
	vol  string
	list func(ctx context.Context, volume string) ([]string, error)
}

var (
	_ fs.NodeReaddirer = (*whenDir)(nil)
	_ fs.NodeLookuper  = (*whenDir)(nil)
)

func (w *whenDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	names, err := w.list(ctx, w.vol)
	if err != nil {
		w.t.cfg.log.Warn("mount: list instants", "volume", w.vol, "err", err)
		return nil, toErrno(err)
	}
	return listDirs(names), 0
}

func (w *whenDir) Lookup(ctx context.Context, when string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	name := w.vol + "@" + when
	if ch := w.GetChild(when); ch != nil && !moving(when, w.t.cfg.now()) {
		// A fixed instant keeps its node, its image and so its cached
		// pages (see rootDir.Lookup).
		if d, ok := ch.Operations().(*instantDir); ok && d.file.fixed {
			dirEntry(out, w.t.cfg.timeout(true))
			return ch, 0
		}
	}
	img, _, err := w.t.src.Open(ctx, name)
	if err != nil {
		errno := toErrno(err)
		if errno == syscall.ENOENT {
			w.t.cfg.log.Debug("mount: no such instant", "name", name, "err", err)
		} else {
			w.t.cfg.log.Warn("mount: resolve instant", "name", name, "err", err)
		}
		return nil, errno
	}
	fixed := !moving(when, w.t.cfg.now())
	if im, ok := img.(Immutable); ok {
		fixed = im.Immutable()
	}
	f := &imageFile{cfg: w.t.cfg, src: w.t.src, name: name, size: img.Size(), fixed: fixed}
	d := &instantDir{t: w.t, file: f}
	if fixed {
		f.img = img // held until the kernel forgets the directory
		w.t.hold(d)
	} else {
		closeLogged(w.t.cfg, name, img)
	}
	dirEntry(out, w.t.cfg.timeout(fixed))
	return w.NewInode(ctx, d, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

// instantDir is VOLUME/at/WHEN or VOLUME/points/LABEL, holding disk.img.
type instantDir struct {
	fs.Inode
	t    *tree
	file *imageFile // template for the disk.img node
}

var (
	_ fs.NodeReaddirer   = (*instantDir)(nil)
	_ fs.NodeLookuper    = (*instantDir)(nil)
	_ fs.NodeOnForgetter = (*instantDir)(nil)
)

func (d *instantDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	return fs.NewListDirStream([]fuse.DirEntry{{Name: "disk.img", Mode: syscall.S_IFREG}}), 0
}

func (d *instantDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name != "disk.img" {
		return nil, syscall.ENOENT
	}
	d.file.fillEntry(out)
	if ch := d.GetChild(name); ch != nil {
		return ch, 0
	}
	return d.NewInode(ctx, d.file.clone(), fs.StableAttr{Mode: syscall.S_IFREG}), 0
}

// OnForget runs once the kernel dropped the directory, which it does only
// after its disk.img is closed and forgotten.
func (d *instantDir) OnForget() {
	if d.file.img != nil {
		d.t.release(d)
	}
}
