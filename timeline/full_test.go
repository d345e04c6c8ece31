package timeline

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// spaceFS is a filesystem with a fixed amount of free space: writes to
// the files it limits (limits(name)) take from free, fail with ENOSPC
// (after writing what fits) when it runs out, and removing a file gives
// its size back. free < 0 means no limit.
type spaceFS struct {
	vfs.FS
	limits func(name string) bool
	mu     sync.Mutex
	free   int64
	// syncErr, if set, fails the sync of every limited file.
	syncErr error
}

func (s *spaceFS) setFree(n int64) {
	s.mu.Lock()
	s.free = n
	s.mu.Unlock()
}

// take claims n bytes and returns how many it got.
func (s *spaceFS) take(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free < 0 {
		return n
	}
	got := min(int64(n), s.free)
	s.free -= got
	return int(got)
}

func (s *spaceFS) wrapFile(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !s.limits(name) {
		return f, err
	}
	return &spaceFile{File: f, fs: s}, nil
}

func (s *spaceFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := s.FS.Create(name, c)
	return s.wrapFile(name, f, err)
}

func (s *spaceFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := s.FS.OpenReadWrite(name, c, o...)
	return s.wrapFile(name, f, err)
}

func (s *spaceFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := s.FS.ReuseForWrite(old, name, c)
	return s.wrapFile(name, f, err)
}

func (s *spaceFS) Remove(name string) error {
	fi, statErr := s.FS.Stat(name)
	if err := s.FS.Remove(name); err != nil {
		return err
	}
	s.mu.Lock()
	if statErr == nil && s.free >= 0 && s.limits(name) {
		s.free += fi.Size()
	}
	s.mu.Unlock()
	return nil
}

type spaceFile struct {
	vfs.File
	fs *spaceFS
}

func (f *spaceFile) Write(p []byte) (int, error) {
	n := f.fs.take(len(p))
	m, err := f.File.Write(p[:n])
	if err == nil && n < len(p) {
		err = syscall.ENOSPC
	}
	return m, err
}

func (f *spaceFile) WriteAt(p []byte, off int64) (int, error) {
	n := f.fs.take(len(p))
	m, err := f.File.WriteAt(p[:n], off)
	if err == nil && n < len(p) {
		err = syscall.ENOSPC
	}
	return m, err
}

func (f *spaceFile) Sync() error {
	f.fs.mu.Lock()
	err := f.fs.syncErr
	f.fs.mu.Unlock()
	if err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *spaceFile) SyncData() error { return f.Sync() }

func (f *spaceFile) SyncTo(int64) (bool, error) { return true, f.Sync() }

// fullEnv is a store on a spaceFS, with a volume "a" imported at 100 and
// cloned as "c".
func fullEnv(t *testing.T, limits func(string) bool) (*scriptEnv, *spaceFS, *View) {
	t.Helper()
	sfs := &spaceFS{limits: limits, free: -1}
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.wrap = func(fs vfs.FS) vfs.FS { sfs.FS = fs; return sfs }
	e.open()
	ctx := context.Background()
	if _, err := e.s.Import(ctx, ImportOptions{Name: "a", Source: bytes.NewReader(pattern(1, 64*testBS)), Size: 64 * testBS, At: 100, BlockSize: testBS}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("a", 100, "c"); err != nil {
		t.Fatal(err)
	}
	return e, sfs, cloneView(t, e)
}

// cloneOf imports disk, in blocks of bs, as volume "a" at 100 and clones
// that instant as "c"; it returns the clone's writable view.
func cloneOf(t *testing.T, e *scriptEnv, disk []byte, bs int64) *View {
	t.Helper()
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(disk), Size: int64(len(disk)), At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("a", 100, "c"); err != nil {
		t.Fatal(err)
	}
	return cloneView(t, e)
}

func cloneView(t *testing.T, e *scriptEnv) *View {
	t.Helper()
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.s.Head(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// block is a block of random bytes, which do not compress.
func block(seed byte) []byte {
	b := make([]byte, testBS)
	rand.New(rand.NewSource(int64(seed) + 100)).Read(b)
	return b
}

func readBlock(t *testing.T, v *View, n int) []byte {
	t.Helper()
	got := make([]byte, testBS)
	if _, err := v.ReadAt(got, int64(n)*testBS); err != nil {
		t.Fatalf("read block %d: %v", n, err)
	}
	return got
}

func isPack(name string) bool { return strings.HasPrefix(name, "packs") }
func isIndex(name string) bool {
	return strings.HasPrefix(name, "db") || name == "reserve"
}

// TestPackFullFailsOneWrite: a clone write whose pack bytes do not fit
// fails with ENOSPC, and the store goes on: reads work, and once there is
// space, writes and flushes do.
func TestPackFullFailsOneWrite(t *testing.T) {
	e, sfs, v := fullEnv(t, isPack)
	defer e.close()
	if _, err := v.WriteAt(block(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	sfs.setFree(100)
	_, err := v.WriteAt(block(2), testBS)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write into a full pack: %v, want ENOSPC", err)
	}
	if err := e.s.Writable(); err != nil {
		t.Fatalf("a full pack stopped the store: %v", err)
	}
	if !bytes.Equal(readBlock(t, v, 0), block(1)) {
		t.Fatal("block 0 reads wrong after a failed write")
	}
	sfs.setFree(-1)
	if _, err := v.WriteAt(block(3), testBS); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlock(t, v, 1), block(3)) {
		t.Fatal("block 1 reads wrong")
	}
}

// TestIndexFullStopsWrites: when the index's log meets a full disk, the
// store stops taking writes (with ENOSPC) but keeps serving reads, closes
// without a panic, and reopens with everything flushed before.
func TestIndexFullStopsWrites(t *testing.T) {
	e, sfs, v := fullEnv(t, isIndex)
	for i := range 8 {
		if _, err := v.WriteAt(block(byte(10+i)), int64(i)*testBS); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	sfs.setFree(0)
	var err error
	for i := 0; err == nil && i < 10000; i++ {
		if _, err = v.WriteAt(block(byte(i)), int64(8+i%8)*testBS); err == nil {
			err = v.Flush()
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrUnwritable) {
		t.Fatalf("writes into a full index end with %v, want ENOSPC and ErrUnwritable", err)
	}
	if _, err := e.fs.Stat("reserve"); err == nil {
		t.Fatal("the reserve is still there: the log never met the full disk")
	}
	if _, err := v.WriteAt(block(99), 0); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("write after the store stopped: %v", err)
	}
	if err := v.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("flush after the store stopped: %v", err)
	}
	// Space comes back: the store still takes no writes until reopened.
	sfs.setFree(-1)
	if _, err := v.WriteAt(block(99), 0); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("write after space came back: %v", err)
	}
	for i := range 8 {
		if !bytes.Equal(readBlock(t, v, i), block(byte(10+i))) {
			t.Fatalf("block %d reads wrong on a stopped store", i)
		}
	}
	v.Close()
	e.close()
	e.open()
	defer e.close()
	if err := e.s.Writable(); err != nil {
		t.Fatalf("reopened store: %v", err)
	}
	if _, err := e.fs.Stat("reserve"); err != nil {
		t.Fatalf("the reserve was not made again: %v", err)
	}
	v = cloneView(t, e)
	for i := range 8 {
		if !bytes.Equal(readBlock(t, v, i), block(byte(10+i))) {
			t.Fatalf("block %d, flushed before the disk filled, reads wrong after reopening", i)
		}
	}
	if _, err := v.WriteAt(block(50), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestIndexSyncErrorStopsWrites: a log sync that fails (Pebble's fatal
// commit error) stops the store instead of the process.
func TestIndexSyncErrorStopsWrites(t *testing.T) {
	e, sfs, v := fullEnv(t, isIndex)
	defer e.close()
	if _, err := v.WriteAt(block(1), 0); err != nil {
		t.Fatal(err)
	}
	sfs.mu.Lock()
	sfs.syncErr = syscall.EIO
	sfs.mu.Unlock()
	if err := v.Flush(); !errors.Is(err, ErrUnwritable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with a failing log sync: %v", err)
	}
	if _, err := v.WriteAt(block(2), 0); !errors.Is(err, ErrUnwritable) {
		t.Fatalf("write after a failed sync: %v", err)
	}
	if !bytes.Equal(readBlock(t, v, 0), block(1)) {
		t.Fatal("reads fail after the store stopped")
	}
}

// TestIndexFullWithoutReserve: when even the reserve does not make room
// for the log (here, it is on another disk), the log write is dropped:
// the store stops taking writes, closes without a panic and reopens with
// everything flushed before.
func TestIndexFullWithoutReserve(t *testing.T) {
	e, sfs, v := fullEnv(t, func(name string) bool { return strings.HasPrefix(name, "db") })
	if _, err := v.WriteAt(block(1), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	sfs.setFree(0)
	if _, err := v.WriteAt(block(2), testBS); err != nil {
		t.Fatal(err) // not flushed: the log is written later
	}
	if err := v.Flush(); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrUnwritable) {
		t.Fatalf("flush with no room for the log: %v", err)
	}
	if !e.guard.dropping.Load() {
		t.Fatal("the log write was not dropped")
	}
	v.Close()
	e.close()
	sfs.setFree(-1)
	e.open()
	defer e.close()
	v = cloneView(t, e)
	if !bytes.Equal(readBlock(t, v, 0), block(1)) {
		t.Fatal("the block flushed before the disk filled reads wrong after reopening")
	}
	readBlock(t, v, 1) // either version, but no error
}
