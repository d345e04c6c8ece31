package mount

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// imageFile is a disk.img node. A fixed image is shared by every handle
// and owned by whoever made the node; otherwise every open resolves name
// again through src, so VOLUME/disk.img follows the newest version.
type imageFile struct {
	fs.Inode
	cfg      *config
	src      Source // nil when img is set
	name     string // what src.Open resolves; for logs otherwise
	img      Image  // shared image, or nil: open per handle
	size     int64
	writable bool
	fixed    bool // immutable: the kernel keeps its pages and attributes
}

var (
	_ fs.NodeOpener    = (*imageFile)(nil)
	_ fs.NodeGetattrer = (*imageFile)(nil)
	_ fs.NodeSetattrer = (*imageFile)(nil)
)

// clone returns a fresh node with the same settings, for another Lookup.
func (f *imageFile) clone() *imageFile {
	return &imageFile{cfg: f.cfg, src: f.src, name: f.name, img: f.img,
		size: f.size, writable: f.writable, fixed: f.fixed}
}

func (f *imageFile) fillAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	if f.writable {
		a.Mode = syscall.S_IFREG | 0o644
	}
	a.Size = uint64(f.size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	t := f.cfg.started
	a.SetTimes(&t, &t, &t)
}

func (f *imageFile) fillEntry(out *fuse.EntryOut) {
	f.fillAttr(&out.Attr)
	out.SetEntryTimeout(f.cfg.timeout(f.fixed))
	out.SetAttrTimeout(f.cfg.timeout(f.fixed))
}

func (f *imageFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr)
	out.SetTimeout(f.cfg.timeout(f.fixed))
	return 0
}

// Setattr accepts what leaves the disk as it is (touch, truncating to its
// own size) and refuses to resize it.
func (f *imageFile) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok && int64(size) != f.size {
		if !f.writable {
			return syscall.EROFS
		}
		return syscall.EPERM // a disk keeps its size
	}
	return f.Getattr(ctx, nil, out)
}

func (f *imageFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	wantWrite := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if wantWrite && !f.writable {
		return nil, 0, syscall.EROFS
	}
	h := &imageHandle{cfg: f.cfg, name: f.name, img: f.img, size: f.size, writable: f.writable}
	if h.img == nil {
		img, writable, err := f.src.Open(ctx, f.name)
		if err != nil {
			f.cfg.log.Warn("mount: open image", "name", f.name, "err", err)
			return nil, 0, toErrno(err)
		}
		if wantWrite && !writable {
			closeLogged(f.cfg, f.name, img)
			return nil, 0, syscall.EROFS
		}
		h.img, h.owned, h.writable, h.size = img, true, writable, img.Size()
	}
	var fuseFlags uint32
	if f.fixed {
		fuseFlags = fuse.FOPEN_KEEP_CACHE
		if sr, ok := h.img.(ScanReader); ok && flags&syscall.O_DIRECT == 0 {
			h.scan = sr
		}
	}
	return h, fuseFlags, 0
}

// imageHandle is one open disk.img. Reads and writes are stateless
// ReadAt/WriteAt calls; the handle holds no lock.
type imageHandle struct {
	cfg      *config
	name     string
	img      Image
	owned    bool // closed on release
	size     int64
	writable bool
	scan     ScanReader // reads of a fixed image the kernel caches
	// failed holds the errnos of write and fsync errors already logged
	// for this handle: a full store fails every write, the log says so
	// once.
	failed sync.Map // syscall.Errno → bool
}

// logFailure logs a failed write or fsync, the first of each errno.
func (h *imageHandle) logFailure(msg string, err error, args ...any) syscall.Errno {
	errno := toErrno(err)
	if _, seen := h.failed.LoadOrStore(errno, true); !seen {
		h.cfg.log.Warn(msg+" (later ones with this errno are not logged)", append([]any{"name", h.name, "err", err}, args...)...)
	}
	return errno
}

var (
	_ fs.FileReader   = (*imageHandle)(nil)
	_ fs.FileWriter   = (*imageHandle)(nil)
	_ fs.FileFsyncer  = (*imageHandle)(nil)
	_ fs.FileReleaser = (*imageHandle)(nil)
)

func (h *imageHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= h.size || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	if rest := h.size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	read := h.img.ReadAt
	if h.scan != nil {
		read = h.scan.ReadAtScan
	}
	n, err := read(dest, off)
	if err == nil && n < len(dest) {
		// The kernel would take a short reply for the end of the file.
		err = io.ErrUnexpectedEOF
	}
	if err != nil && !(errors.Is(err, io.EOF) && n == len(dest)) {
		h.cfg.log.Warn("mount: read", "name", h.name, "off", off, "len", len(dest), "n", n, "err", err)
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest), 0
}

func (h *imageHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.writable {
		return 0, syscall.EROFS
	}
	if off < 0 || off >= h.size {
		return 0, syscall.ENOSPC
	}
	if rest := h.size - off; int64(len(data)) > rest {
		data = data[:rest] // a short write; the next one gets ENOSPC
	}
	n, err := h.img.WriteAt(data, off)
	if err != nil {
		return uint32(n), h.logFailure("mount: write", err, "off", off, "len", len(data))
	}
	return uint32(n), 0
}

// Fsync makes every acknowledged write durable: it is the FUSE side of
// an NBD FLUSH.
func (h *imageHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if !h.writable {
		return 0
	}
	if err := h.img.Flush(); err != nil {
		return h.logFailure("mount: flush", err)
	}
	return 0
}

func (h *imageHandle) Release(ctx context.Context) syscall.Errno {
	if h.owned {
		closeLogged(h.cfg, h.name, h.img)
	}
	return 0
}

func closeLogged(cfg *config, name string, img Image) {
	if err := img.Close(); err != nil {
		cfg.log.Warn("mount: close image", "name", name, "err", err)
	}
}
