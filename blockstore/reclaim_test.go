package blockstore

import (
	"bytes"
	"errors"
	"math/rand"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func randomChunk(seed int64) []byte {
	b := make([]byte, 8<<10)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func packSize(t *testing.T, fs vfs.FS, n uint32) int64 {
	t.Helper()
	fi, err := fs.Stat(fs.PathJoin("packs", packName(n)))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestTornTailCutAtOpen: whatever a crash left after the newest pack's
// last whole record (a header cut short, a payload that does not match
// its checksum) is cut off at open, and every indexed chunk still reads.
func TestTornTailCutAtOpen(t *testing.T) {
	for _, tear := range []string{"short header", "short payload", "bad checksum"} {
		t.Run(tear, func(t *testing.T) {
			fs := vfs.NewMem()
			db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quiet{}})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			s, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecRaw})
			if err != nil {
				t.Fatal(err)
			}
			res := put(t, s, db, randomChunk(1), randomChunk(2))
			whole := packSize(t, fs, 1)
			// A record torn by a crash after the last whole one.
			txn := s.NewTxn()
			if _, err := txn.Put(randomChunk(3)); err != nil {
				t.Fatal(err)
			}
			f, err := fs.OpenReadWrite(fs.PathJoin("packs", packName(1)), vfs.WriteCategoryUnspecified)
			if err != nil {
				t.Fatal(err)
			}
			switch tear {
			case "short header":
				s.Close()
				f = rewriteHead(t, fs, whole+20)
			case "short payload":
				s.Close()
				f = rewriteHead(t, fs, packSize(t, fs, 1)-100)
			case "bad checksum":
				s.Close()
				if _, err := f.WriteAt([]byte{0xff, 0xee}, packSize(t, fs, 1)-10); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			s, err = Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecRaw})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := packSize(t, fs, 1); got != whole {
				t.Fatalf("pack is %d bytes after open, want %d (its whole records)", got, whole)
			}
			for i, r := range res {
				got, err := s.Get(r.ID)
				if err != nil || !bytes.Equal(got, randomChunk(int64(i+1))) {
					t.Fatalf("chunk %d after cutting the tail: %v", i, err)
				}
			}
		})
	}
}

// rewriteHead leaves the first n bytes of pack 1 (MemFS cannot truncate).
func rewriteHead(t *testing.T, fs vfs.FS, n int64) vfs.File {
	t.Helper()
	path := fs.PathJoin("packs", packName(1))
	old, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, n)
	if _, err := old.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	old.Close()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

// fullFS has room for the header of a new pack, and no more.
type fullFS struct{ vfs.FS }
type fullFile struct{ vfs.File }

func (fs fullFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, o...)
	return fullFile{f}, err
}
func (fs fullFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fullFile{f}, err
}
func (f fullFile) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= packHeaderSize {
		return f.File.WriteAt(p, off)
	}
	return 0, syscall.ENOSPC
}

// TestFullPackWriteGivesSpaceBack: a run that does not fit fails with
// ENOSPC and leaves its pack as it was.
func TestFullPackWriteGivesSpaceBack(t *testing.T) {
	mem := vfs.NewMem()
	db, err := pebble.Open("db", &pebble.Options{FS: mem, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{FS: mem, Dir: "packs", DB: db, Codec: CodecRaw})
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, db, randomChunk(1))
	s.Close()
	s, err = Open(Options{FS: fullFS{mem}, Dir: "packs", DB: db, Codec: CodecRaw})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.NewTxn().Put(randomChunk(2))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("put on a full disk: %v, want ENOSPC", err)
	}
	if got := s.Tail(); got != (Position{2, packHeaderSize}) {
		t.Fatalf("the failed write kept its reservation: tail at %+v", got)
	}
}
