package catalog

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// packLimitFS lets the packs grow by at most free bytes in all; a write
// past that fails with ENOSPC. Its files have no descriptor, so every
// write goes through it.
type packLimitFS struct {
	vfs.FS
	mu   sync.Mutex
	free int64
}

type packLimitFile struct {
	vfs.File
	fs *packLimitFS
}

func (p *packLimitFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, c)
	if err != nil || !strings.Contains(name, "/packs/") {
		return f, err
	}
	return &packLimitFile{File: f, fs: p}, nil
}

func (p *packLimitFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.FS.OpenReadWrite(name, c, o...)
	if err != nil || !strings.Contains(name, "/packs/") {
		return f, err
	}
	return &packLimitFile{File: f, fs: p}, nil
}

func (f *packLimitFile) Fd() uintptr { return vfs.InvalidFd }

func (f *packLimitFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	ok := int64(len(b)) <= f.fs.free
	if ok {
		f.fs.free -= int64(len(b))
	}
	f.fs.mu.Unlock()
	if !ok {
		return 0, syscall.ENOSPC
	}
	return f.File.WriteAt(b, off)
}

func packsSize(t *testing.T, dir string) int64 {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	var n int64
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestImportOutOfSpace: an import whose packs do not fit fails with one
// line naming the lack of space, and leaves no volume and no pack bytes.
func TestImportOutOfSpace(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 32<<20)
	rand.New(rand.NewSource(1)).Read(data)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	fs := &packLimitFS{FS: vfs.Default, free: 12 << 20}
	s, err := Open(Options{Dir: dir, FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src, err := OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = s.Import(context.Background(), ImportRequest{Volume: "v", Source: img, File: src}, nil)
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("import into a full disk: %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "no space left on "+dir) {
		t.Fatalf("import into a full disk said %q", msg)
	}
	if vols, _ := s.Volumes(context.Background()); len(vols) != 0 {
		t.Fatalf("volumes after a failed import: %v", vols)
	}
	if n := packsSize(t, dir); n > 16 {
		t.Fatalf("a failed import left %d bytes of packs", n)
	}
	if err := s.Writable(); err != nil {
		t.Fatalf("a full pack stopped the store: %v", err)
	}
	// With room, the same import goes through.
	fs.mu.Lock()
	fs.free = 64 << 20
	fs.mu.Unlock()
	if _, err := s.Import(context.Background(), ImportRequest{Volume: "v", Source: img, File: src}, nil); err != nil {
		t.Fatal(err)
	}
}
