package timeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// newTestStore opens a store on an in-memory filesystem with volume "a"
// imported at 100 (eight blocks), its clock at 200.
func newTestStore(t *testing.T) *scriptEnv {
	t.Helper()
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 200}
	e.open()
	t.Cleanup(e.close)
	data := pattern(1, 8*testBS)
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(data),
		Size: int64(len(data)), At: 100, BlockSize: testBS}); err != nil {
		t.Fatal(err)
	}
	return e
}

// named counts the volumes called name, in memory and in the records a
// reopened store loads.
func named(t *testing.T, e *scriptEnv, name string) (inMemory, onDisk int) {
	t.Helper()
	for _, v := range e.s.Volumes() {
		if v.Name == name {
			inMemory++
		}
	}
	it, err := e.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for it.SeekGE([]byte{tagMeta}); it.Valid() && it.Key()[0] == tagMeta; it.Next() {
		v, err := unmarshalVolume(it.Value())
		if err != nil {
			t.Fatal(err)
		}
		if v.Name == name {
			onDisk++
		}
	}
	return inMemory, onDisk
}

// Fifty clones to one name make one volume; the others are refused with
// ErrExists, and the parent can be removed once the clone is.
func TestConcurrentClonesOfOneName(t *testing.T) {
	e := newTestStore(t)
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.s.Clone("a", 100, "dup")
		}()
	}
	close(start)
	wg.Wait()
	made := 0
	for _, err := range errs {
		switch {
		case err == nil:
			made++
		case !errors.Is(err, ErrExists):
			t.Errorf("clone: %v, want ErrExists", err)
		}
	}
	if made != 1 {
		t.Fatalf("%d clones succeeded, want 1", made)
	}
	if mem, disk := named(t, e, "dup"); mem != 1 || disk != 1 {
		t.Fatalf("%d volumes named dup in memory, %d on disk; want 1", mem, disk)
	}
	if err := e.s.RemoveVolume("a"); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove the parent of a clone: %v, want ErrInUse", err)
	}
	if err := e.s.RemoveVolume("dup"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.RemoveVolume("a"); err != nil {
		t.Fatalf("remove the parent once its clone is gone: %v", err)
	}
	if vs := e.s.Volumes(); len(vs) != 0 {
		t.Fatalf("volumes left: %v", vs)
	}
}

// Clones, creates and imports of one name race: exactly one creates the
// volume. An import that comes after it adds a version to it; every other
// creator gets ErrExists.
func TestConcurrentCreatorsOfOneName(t *testing.T) {
	e := newTestStore(t)
	const n = 51
	data := pattern(2, 4*testBS)
	errs := make([]error, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch i % 3 {
			case 0:
				_, errs[i] = e.s.Clone("a", 100, "dup")
				created[i] = errs[i] == nil
			case 1:
				_, errs[i] = e.s.CreateVolume("dup", 4*testBS, testBS, KindCreated)
				created[i] = errs[i] == nil
			case 2:
				var r *ImportResult
				r, errs[i] = e.s.Import(context.Background(), ImportOptions{Name: "dup",
					Source: bytes.NewReader(data), Size: int64(len(data)), BlockSize: testBS})
				created[i] = errs[i] == nil && r.Created
			}
		}()
	}
	close(start)
	wg.Wait()
	made := 0
	for i, err := range errs {
		if created[i] {
			made++
		}
		if err != nil && !errors.Is(err, ErrExists) {
			t.Errorf("creator %d: %v, want ErrExists", i, err)
		}
		if err == nil && !created[i] && i%3 != 2 {
			t.Errorf("creator %d succeeded without creating", i)
		}
	}
	if made != 1 {
		t.Fatalf("%d creators made the volume, want 1", made)
	}
	if mem, disk := named(t, e, "dup"); mem != 1 || disk != 1 {
		t.Fatalf("%d volumes named dup in memory, %d on disk; want 1", mem, disk)
	}
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }

// A creator that fails gives the name back.
func TestFailedCreateReleasesName(t *testing.T) {
	e := newTestStore(t)
	_, err := e.s.Import(context.Background(), ImportOptions{Name: "b", Source: failingReader{},
		Size: 4 * testBS, BlockSize: testBS})
	if err == nil {
		t.Fatal("import of a failing source succeeded")
	}
	if _, err := e.s.Volume("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a failed import: %v, want ErrNotFound", err)
	}
	if _, err := e.s.Clone("a", 100, "b"); err != nil {
		t.Fatalf("clone to the name a failed import gave back: %v", err)
	}
}

// A clone racing the removal of its parent either is refused or keeps the
// parent: never a clone of a removed volume.
func TestCloneRacesRemoveOfParent(t *testing.T) {
	for i := range 20 {
		e := newTestStore(t)
		name := fmt.Sprintf("c%d", i)
		var cloneErr, removeErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, cloneErr = e.s.Clone("a", 100, name) }()
		go func() { defer wg.Done(); removeErr = e.s.RemoveVolume("a") }()
		wg.Wait()
		switch {
		case cloneErr == nil && removeErr == nil:
			t.Fatal("both the clone and the removal of its parent succeeded")
		case cloneErr == nil && !errors.Is(removeErr, ErrInUse):
			t.Fatalf("remove: %v, want ErrInUse", removeErr)
		case removeErr == nil && !errors.Is(cloneErr, ErrNotFound):
			t.Fatalf("clone: %v, want ErrNotFound", cloneErr)
		}
		for _, v := range e.s.Volumes() {
			if _, err := e.s.VolumeByID(v.Parent); v.Parent != 0 && err != nil {
				t.Fatalf("clone %s has no parent: %v", v.Name, err)
			}
		}
	}
}
