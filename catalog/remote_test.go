package catalog

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/remote"
	"github.com/rewind-dev/rewind/timeline"
)

// storeEnv is a directory standing for a bucket, and two disk images.
type storeEnv struct {
	dir, bucket string
	imgs        [][]byte
}

func newStoreEnv(t *testing.T) *storeEnv {
	e := &storeEnv{dir: t.TempDir()}
	e.bucket = filepath.Join(e.dir, "bucket")
	a := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{7}).Read(a)
	b := bytes.Clone(a)
	rand.NewChaCha8([32]byte{8}).Read(b[1<<20 : 1<<20+300<<10])
	e.imgs = [][]byte{a, b}
	return e
}

func (e *storeEnv) open(t *testing.T, data string, o Options) (*Service, error) {
	o.Dir = filepath.Join(e.dir, data)
	return Open(o)
}

func (e *storeEnv) importImage(t *testing.T, s *Service, i int) Time {
	t.Helper()
	img := filepath.Join(e.dir, "img")
	if err := os.WriteFile(img, e.imgs[i], 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := s.Import(context.Background(), ImportRequest{Volume: "vm", Source: img, File: src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Time
}

// TestStoreDisasterRecovery: what a writer acknowledged is in the object
// store while the writer still runs (nothing closed, as when its machine
// dies), and a new, empty data directory serves every instant and label
// from it.
func TestStoreDisasterRecovery(t *testing.T) {
	// The new directory takes the store over, and uploads only a lease
	// time later (remote.Lease): a short one keeps the test short.
	old := remote.LeaseTTL
	remote.LeaseTTL = 3 * time.Second
	defer func() { remote.LeaseTTL = old }()
	e := newStoreEnv(t)
	s1, err := e.open(t, "d1", Options{Store: e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	t0 := e.importImage(t, s1, 0)
	e.importImage(t, s1, 1)
	if _, err := s1.AddPoint(context.Background(), "vm@latest", "good"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.open(t, "d2", Options{Store: e.bucket}); err == nil {
		t.Fatal("a second writer opened the store")
	}
	s2, err := e.open(t, "d2", Options{Store: e.bucket, TakeOver: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !bytes.Equal(exportBytes(t, s2, "vm@good"), e.imgs[1]) {
		t.Fatal("vm@good differs on the new data directory")
	}
	if !bytes.Equal(exportBytes(t, s2, "vm@"+t0.String()), e.imgs[0]) {
		t.Fatal("the first version differs on the new data directory")
	}
	// Most bytes are in the object store, not in the new directory.
	if local := dirBytes(t, filepath.Join(e.dir, "d2", "packs")); local != 0 {
		t.Fatalf("the new directory holds %d bytes of packs", local)
	}
}

// TestStoreReader: a reader opens another writer's store, reads every
// instant, and refuses writes; the writer goes on.
func TestStoreReader(t *testing.T) {
	e := newStoreEnv(t)
	s1, err := e.open(t, "d1", Options{Store: e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	e.importImage(t, s1, 0)
	r, err := e.open(t, "r", Options{Store: e.bucket, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !bytes.Equal(exportBytes(t, r, "vm@latest"), e.imgs[0]) {
		t.Fatal("the reader reads wrong")
	}
	if _, err := r.AddPoint(context.Background(), "vm@latest", "x"); !errors.Is(err, timeline.ErrUnwritable) {
		t.Fatalf("a reader's write: %v, want ErrUnwritable", err)
	}
	e.importImage(t, s1, 1)
	if !bytes.Equal(exportBytes(t, s1, "vm@latest"), e.imgs[1]) {
		t.Fatal("the writer reads wrong")
	}
}

// TestStoreRemembered: a data directory remembers its store, refuses
// another, and a store kept in the directory refuses --store.
func TestStoreRemembered(t *testing.T) {
	e := newStoreEnv(t)
	s, err := e.open(t, "d", Options{Store: e.bucket})
	if err != nil {
		t.Fatal(err)
	}
	e.importImage(t, s, 0)
	s.Close()
	s, err = e.open(t, "d", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(exportBytes(t, s, "vm@latest"), e.imgs[0]) {
		t.Fatal("reopened without --store, the directory reads wrong")
	}
	s.Close()
	if _, err := e.open(t, "d", Options{Store: filepath.Join(e.dir, "other")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("another store: %v, want ErrInvalid", err)
	}
	l, err := e.open(t, "local", Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.importImage(t, l, 0)
	l.Close()
	if _, err := e.open(t, "local", Options{Store: filepath.Join(e.dir, "b2")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a local store given --store: %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "b2")); err == nil {
		t.Fatal("the refused store was created")
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
