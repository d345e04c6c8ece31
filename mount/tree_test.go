package mount

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)

// treeFixture: db01 with versions at t0, t0+10m, t0+20m and a label at
// t0+10m; db01-test, a clone of it.
func treeFixture(t *testing.T) (*fakeSource, *Mount, string) {
	t.Helper()
	requireTools(t, fuseTools)
	src := newFakeSource(t0.Add(time.Hour))
	for i := range 3 {
		src.addVersion("db01", t0.Add(time.Duration(i)*10*time.Minute), randomBytes(uint64(i+1), 1<<20+512))
	}
	src.addLabel("db01", "before-patch", t0.Add(10*time.Minute))
	src.addClone("db01-test", t0, randomBytes(9, 1<<20))
	dir := emptyDir(t, "tree")
	state := t.TempDir()
	m, err := MountTree(dir, src, Options{StateDir: state, Clock: func() time.Time { return src.now }})
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	return src, m, dir
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func TestTreeListsVolumesInstantsAndPoints(t *testing.T) {
	_, _, dir := treeFixture(t)
	check := func(got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	check(names(t, dir), []string{"db01", "db01-test"})
	check(names(t, filepath.Join(dir, "db01")), []string{"at", "disk.img", "points"})
	check(names(t, filepath.Join(dir, "db01/at")),
		[]string{"20261125T140000Z", "20261125T141000Z", "20261125T142000Z", "before-patch"})
	check(names(t, filepath.Join(dir, "db01/points")), []string{"before-patch"})
	check(names(t, filepath.Join(dir, "db01/at/20261125T141000Z")), []string{"disk.img"})
}

func TestTreeResolvesAnyWhenOnLookup(t *testing.T) {
	src, _, dir := treeFixture(t)
	v := src.vols["db01"].versions
	for when, want := range map[string][]byte{
		"20261125T140000Z":          v[0].data, // listed
		"20261125T141500Z":          v[1].data, // between versions, not listed
		"2026-11-25T15:19:59+01:00": v[1].data, // RFC 3339, another zone
		"1795616400.5":              v[2].data, // Unix time of t0+20m
		"-50m":                      v[1].data, // relative to the fake's now, t0+1h
		"latest":                    v[2].data,
		"before-patch":              v[1].data,
	} {
		got := shaFile(t, filepath.Join(dir, "db01/at", when, "disk.img"))
		if got != shaBytes(want) {
			t.Errorf("at/%s: sha256 %s, want %s", when, got, shaBytes(want))
		}
	}
	if got := shaFile(t, filepath.Join(dir, "db01/points/before-patch/disk.img")); got != shaBytes(v[1].data) {
		t.Errorf("points/before-patch differs from the image")
	}
	if got := shaFile(t, filepath.Join(dir, "db01/disk.img")); got != shaBytes(v[2].data) {
		t.Errorf("db01/disk.img is not latest")
	}
	for _, p := range []string{"nosuch", "db01/at/20201125T140000Z", "db01/at/no-such-label", "db01/points/nope", "db01/nope"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
}

func TestTreeFixedImagesAreReadOnly(t *testing.T) {
	_, _, dir := treeFixture(t)
	for _, p := range []string{"db01/disk.img", "db01/at/20261125T140000Z/disk.img", "db01/points/before-patch/disk.img", "db01-test/at/latest/disk.img"} {
		p = filepath.Join(dir, p)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want 0444", p, fi.Mode())
		}
		_, err = os.OpenFile(p, os.O_RDWR, 0)
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
			t.Errorf("open %s for writing: %v, want EROFS or EPERM", p, err)
		}
		if err := os.Truncate(p, 0); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
			t.Errorf("truncate %s: %v, want EROFS or EPERM", p, err)
		}
	}
}

func TestTreeCloneIsWritableAndFsyncFlushes(t *testing.T) {
	src, _, dir := treeFixture(t)
	p := filepath.Join(dir, "db01-test/disk.img")
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := randomBytes(42, 300<<10)
	if _, err := f.WriteAt(data, 4096+17); err != nil {
		t.Fatal(err)
	}
	before := src.vols["db01-test"].flushes.Load()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if src.vols["db01-test"].flushes.Load() == before {
		t.Errorf("fsync did not call Image.Flush")
	}
	head := src.vols["db01-test"].head
	head.mu.RLock()
	got := slices.Clone(head.data[4096+17 : 4096+17+len(data)])
	head.mu.RUnlock()
	if !slices.Equal(got, data) {
		t.Errorf("the clone head does not hold what was written")
	}
	back := make([]byte, len(data))
	if _, err := f.ReadAt(back, 4096+17); err != nil || !slices.Equal(back, data) {
		t.Errorf("read back through the mount: %v, equal=%v", err, slices.Equal(back, data))
	}
	if _, err := f.WriteAt([]byte("x"), int64(len(head.data))); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write past the end: %v, want ENOSPC", err)
	}
}

// VOLUME/disk.img follows new versions: it is resolved on every open and
// its pages are not kept.
func TestTreeLatestFollowsNewVersions(t *testing.T) {
	src, _, dir := treeFixture(t)
	p := filepath.Join(dir, "db01/disk.img")
	if shaFile(t, p) != shaBytes(src.vols["db01"].versions[2].data) {
		t.Fatal("not latest")
	}
	next := randomBytes(77, 1<<20+512)
	src.addVersion("db01", t0.Add(30*time.Minute), next)
	if shaFile(t, p) != shaBytes(next) {
		t.Errorf("db01/disk.img still shows the old latest after a new version")
	}
}

// The tree closes every image it opened, on release, forget or unmount.
func TestTreeClosesImages(t *testing.T) {
	src, m, dir := treeFixture(t)
	for _, p := range []string{"db01/disk.img", "db01/at/20261125T140000Z/disk.img", "db01/at/-5m/disk.img", "db01-test/disk.img"} {
		shaFile(t, filepath.Join(dir, p))
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if o, c := src.opened.Load(), src.closed.Load(); o != c || o == 0 {
		t.Errorf("opened %d images, closed %d", o, c)
	}
	assertNoLeftovers(t, dir)
	if _, err := os.ReadDir(dir); err != nil {
		t.Errorf("after Unmount the mount point is not a plain directory: %v", err)
	}
}

func TestMountRefusesBadMountpoints(t *testing.T) {
	requireTools(t, fuseTools)
	src := newFakeSource(t0)
	src.addVersion("v", t0, make([]byte, 4096))
	full := emptyDir(t, "full")
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{full, filepath.Join(t.TempDir(), "missing"), file} {
		if m, err := MountTree(dir, src, Options{}); err == nil {
			m.Unmount()
			t.Errorf("MountTree(%s) succeeded", dir)
		} else {
			t.Logf("MountTree(%s): %v", dir, err)
		}
		if m, err := MountImage(dir, &fakeImage{data: make([]byte, 4096)}, false, Options{}); err == nil {
			m.Unmount()
			t.Errorf("MountImage(%s) succeeded", dir)
		}
		assertNoLeftovers(t, dir)
	}
	// A directory that is already a mount point.
	dir := emptyDir(t, "busy")
	m, err := MountTree(dir, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	if m2, err := MountImage(dir, &fakeImage{data: make([]byte, 4096)}, false, Options{}); err == nil {
		m2.Unmount()
		t.Errorf("mounting over a mount point succeeded")
	}
}
