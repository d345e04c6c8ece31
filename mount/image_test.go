package mount

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func mountImageT(t *testing.T, img Image, writable bool, opts Options) string {
	t.Helper()
	requireTools(t, fuseTools)
	dir := emptyDir(t, "view")
	m, err := MountImage(dir, img, writable, opts)
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	return filepath.Join(dir, "disk.img")
}

func TestImageBytesMatch(t *testing.T) {
	data := randomBytes(3, 5<<20+123) // not a multiple of the page size
	p := mountImageT(t, &fakeImage{data: data}, false, Options{})
	if got := shaFile(t, p); got != shaBytes(data) {
		t.Fatalf("sha256 through the mount %s, want %s", got, shaBytes(data))
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != int64(len(data)) {
		t.Fatalf("stat: %v, size %d", err, fi.Size())
	}
}

func TestImageReadOnly(t *testing.T) {
	p := mountImageT(t, &fakeImage{data: make([]byte, 1<<20)}, false, Options{})
	_, err := os.OpenFile(p, os.O_WRONLY, 0)
	if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
		t.Fatalf("open for writing: %v, want EROFS or EPERM", err)
	}
}

func TestImageWritableFsyncFlushes(t *testing.T) {
	var flushes atomic.Int64
	img := &fakeImage{data: make([]byte, 2<<20), writable: true, flushes: &flushes}
	p := mountImageT(t, img, true, Options{})
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("hello"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if flushes.Load() == 0 {
		t.Fatal("fsync did not call Flush")
	}
	img.mu.RLock()
	defer img.mu.RUnlock()
	if !bytes.Equal(img.data[1<<20:1<<20+5], []byte("hello")) {
		t.Fatal("write did not reach the image")
	}
}

// Many goroutines read random ranges at once; every byte must match. Run
// with -race: reads are stateless ReadAt calls with no shared cursor.
func TestImageParallelReads(t *testing.T) {
	data := randomBytes(11, 64<<20)
	img := &fakeImage{data: data}
	p := mountImageT(t, img, false, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			f, err := os.Open(p) // one descriptor each, and one shared below
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 1<<20)
			for range 60 {
				off := r.Int64N(int64(len(data)))
				n := 1 + r.IntN(len(buf))
				n, err := f.ReadAt(buf[:n], off)
				if err != nil && off+int64(n) != int64(len(data)) {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
					errs <- errors.New("bytes differ")
					return
				}
			}
		})
	}
	shared, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 2))
			buf := make([]byte, 256<<10)
			for range 200 {
				off := r.Int64N(int64(len(data) - len(buf)))
				if _, err := shared.ReadAt(buf, off); err != nil || !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
					errs <- errors.New("shared descriptor: bytes differ")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// An immutable image is served from the page cache on the second read;
// a Live one is read from the image again.
func TestImageKeepCache(t *testing.T) {
	for _, tc := range []struct {
		name   string
		live   bool
		cached bool
	}{{"immutable", false, true}, {"live", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			img := &fakeImage{data: randomBytes(5, 16<<20)}
			p := mountImageT(t, img, false, Options{Live: tc.live})
			first := shaFile(t, p)
			before := img.reads.Load()
			second := shaFile(t, p)
			again := img.reads.Load() - before
			if first != second || first != shaBytes(img.data) {
				t.Fatal("bytes differ")
			}
			if tc.cached && again != 0 {
				t.Errorf("second read of an immutable image reached the image %d times, want 0 (page cache)", again)
			}
			if !tc.cached && again == 0 {
				t.Errorf("second read of a live image was served from cache")
			}
		})
	}
}

// faultyImage fails reads that touch [bad, bad+4096).
type faultyImage struct {
	fakeImage
	bad int64
}

func (f *faultyImage) ReadAt(p []byte, off int64) (int, error) {
	if off < f.bad+4096 && off+int64(len(p)) > f.bad {
		return 0, errors.New("blockstore: chunk checksum mismatch")
	}
	return f.fakeImage.ReadAt(p, off)
}

// A failed read is an EIO reply for that range, never a dead mount.
func TestImageReadErrorIsEIO(t *testing.T) {
	img := &faultyImage{fakeImage: fakeImage{data: randomBytes(8, 4<<20)}, bad: 2 << 20}
	p := mountImageT(t, img, false, Options{Live: true})
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 2<<20); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the bad range: %v, want EIO", err)
	}
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, img.data[:4096]) {
		t.Errorf("read of a good range after the error: %v", err)
	}
}

// scanImage counts reads that would fill its cache and reads that would not.
type scanImage struct {
	fakeImage
	scans atomic.Int64
}

func (s *scanImage) ReadAtScan(p []byte, off int64) (int, error) {
	s.scans.Add(1)
	return s.fakeImage.ReadAt(p, off)
}

// A fixed image, whose pages the kernel keeps, is read without filling the
// image's cache, unless opened with O_DIRECT (no kernel cache then); a
// live image always fills it.
func TestImageScanReadsWhereTheKernelCaches(t *testing.T) {
	for _, tc := range []struct {
		name      string
		live      bool
		flags     int
		wantScans bool
	}{
		{"fixed", false, 0, true},
		{"fixed O_DIRECT", false, syscall.O_DIRECT, false},
		{"live", true, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := &scanImage{fakeImage: fakeImage{data: randomBytes(6, 4<<20)}}
			p := mountImageT(t, img, false, Options{Live: tc.live})
			f, err := os.OpenFile(p, os.O_RDONLY|tc.flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<20) // aligned for O_DIRECT: a fresh 1 MiB allocation is page-aligned
			for off := int64(0); off < 4<<20; off += 1 << 20 {
				if _, err := f.ReadAt(buf, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, img.data[off:off+1<<20]) {
					t.Fatalf("bytes differ at %d", off)
				}
			}
			scans, plain := img.scans.Load(), img.reads.Load()-img.scans.Load()
			if tc.wantScans && (scans == 0 || plain != 0) {
				t.Errorf("%d scan reads and %d caching reads, want only scans", scans, plain)
			}
			if !tc.wantScans && (scans != 0 || plain == 0) {
				t.Errorf("%d scan reads and %d caching reads, want no scans", scans, plain)
			}
		})
	}
}
