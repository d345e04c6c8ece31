package mount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var filesTools = map[string]string{
	"fusermount3": "fuse3", "losetup": "mount", "mkfs.ext4": "e2fsprogs",
	"mkfs.xfs": "xfsprogs", "sgdisk": "gdisk",
}

func sh(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mkExt4 makes an ext4 image of size MiB holding files.
func mkExt4(t testing.TB, path string, mib int, files map[string]string) {
	t.Helper()
	src := t.TempDir()
	writeFiles(t, src, files)
	sh(t, "truncate", "-s", fmt.Sprintf("%dM", mib), path)
	sh(t, "mkfs.ext4", "-F", "-q", "-d", src, path)
}

// mkXFS makes a 320 MiB xfs image (xfs's minimum is 300 MB) holding flat
// files, through a prototype file so nothing has to be mounted.
func mkXFS(t testing.TB, path string, files map[string]string) {
	t.Helper()
	src := t.TempDir()
	writeFiles(t, src, files)
	var proto strings.Builder
	proto.WriteString("boot\n0 0\nd--755 0 0\n")
	for name := range files {
		fmt.Fprintf(&proto, "%s ---644 0 0 %s\n", name, filepath.Join(src, name))
	}
	proto.WriteString("$\n")
	pf := filepath.Join(src, "proto")
	if err := os.WriteFile(pf, []byte(proto.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "truncate", "-s", "320M", path)
	sh(t, "mkfs.xfs", "-q", "-f", "-p", pf, path)
}

// journalOnly returns an image of fstype (ext4 or xfs) holding a.txt in
// place and j.txt only in its journal: the image is copied while still
// mounted, after an fsync committed the transaction but before the
// filesystem wrote the metadata to its home location.
func journalOnly(t testing.TB, fstype string) string {
	t.Helper()
	dir := t.TempDir()
	base, snap, mnt := filepath.Join(dir, "base.img"), filepath.Join(dir, "snap.img"), filepath.Join(dir, "mnt")
	files := map[string]string{"a.txt": "in place\n"}
	if fstype == "xfs" {
		mkXFS(t, base, files)
	} else {
		mkExt4(t, base, 64, files)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	dev := sh(t, "losetup", "--find", "--show", base)
	defer sh(t, "losetup", "--detach", dev)
	sh(t, "mount", "-o", mountData(fstype), dev, mnt)
	defer sh(t, "umount", mnt)
	f, err := os.Create(filepath.Join(mnt, "j.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("only in the journal\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // commits the journal transaction
		t.Fatal(err)
	}
	f.Close()
	sh(t, "cp", "--sparse=always", base, snap)
	return snap
}

// lsWithoutJournal lists the root of img mounted read-only without
// journal replay (ext4 noload, xfs norecovery).
func lsWithoutJournal(t *testing.T, img, fstype string) []string {
	t.Helper()
	opts := "ro,noload"
	if fstype == "xfs" {
		opts = "ro,norecovery,nouuid"
	}
	mnt := emptyDir(t, "nojournal")
	dev := sh(t, "losetup", "--find", "--show", "--read-only", img)
	defer sh(t, "losetup", "--detach", dev)
	sh(t, "mount", "-o", opts, dev, mnt)
	defer sh(t, "umount", mnt)
	return names(t, mnt)
}

func mountFilesT(t *testing.T, imgPath string) (*Mount, *fileImage, string, string) {
	t.Helper()
	img, err := openFileImage(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	dir, state := emptyDir(t, "files"), t.TempDir()
	m, err := MountFiles(dir, img, Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, m)
	return m, img, dir, state
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func assertUnmounted(t *testing.T, m *Mount, img *fileImage, dir, state string) {
	t.Helper()
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dir, state)
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("mount point not empty after Unmount: %q", got)
	}
	if img.writes.Load() != 0 {
		t.Errorf("history was written %d times", img.writes.Load())
	}
	doc, err := (&stateFile{dir: state}).readLocked()
	if err != nil || len(doc.Records) != 0 {
		t.Errorf("state file after Unmount: %v %+v", err, doc)
	}
	if left := names(t, state); !slices.Equal(left, []string{stateFileName, stateLockName}) {
		t.Errorf("state directory holds %q", left)
	}
}

func TestMountFilesReplaysJournalOnOverlay(t *testing.T) {
	requireTools(t, filesTools)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) { testJournalReplay(t, fstype) })
	}
}

func testJournalReplay(t *testing.T, fstype string) {
	snap := journalOnly(t, fstype)
	if got := lsWithoutJournal(t, snap, fstype); slices.Contains(got, "j.txt") || !slices.Contains(got, "a.txt") {
		t.Fatalf("without the journal %s shows %q: the fixture does not hold a journal-only file", fstype, got)
	}
	before := shaFile(t, snap)
	m, img, dir, state := mountFilesT(t, snap)
	if got := readFile(t, filepath.Join(dir, "j.txt")); got != "only in the journal\n" {
		t.Errorf("j.txt = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "a.txt")); got != "in place\n" {
		t.Errorf("a.txt = %q", got)
	}
	devs := loopsUnder(t, state)
	if len(devs) != 1 {
		t.Errorf("loop devices on the overlay: %q, want one", devs)
	}
	for _, d := range devs {
		if dio, _ := os.ReadFile(filepath.Join("/sys/block", d, "loop/dio")); string(bytes.TrimSpace(dio)) != "1" {
			t.Errorf("%s: direct I/O is off: the overlay's pages are cached twice", d)
		}
	}
	err := os.WriteFile(filepath.Join(dir, "new.txt"), nil, 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file: %v, want EROFS", err)
	}
	assertUnmounted(t, m, img, dir, state)
	if shaFile(t, snap) != before {
		t.Errorf("the image changed: the journal was replayed onto history")
	}
}

// copySparse writes src into dst at off, skipping zero blocks.
func copySparse(t testing.TB, dst, src string, off int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
	for pos := int64(0); ; pos += int64(len(buf)) {
		n, err := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off+pos); err != nil {
				t.Fatal(err)
			}
		}
		if err != nil {
			return
		}
	}
}

// makeGPTDisk makes a GPT disk: p1 ext4, p2 xfs, p3 zeroes.
func makeGPTDisk(t testing.TB) string {
	t.Helper()
	tmp := t.TempDir()
	p1, p2, disk := filepath.Join(tmp, "p1.img"), filepath.Join(tmp, "p2.img"), filepath.Join(tmp, "disk.img")
	mkExt4(t, p1, 64, map[string]string{"a.txt": "ext4 here\n", "sub/deep.txt": "deep\n"})
	mkXFS(t, p2, map[string]string{"b.txt": "xfs here\n"})
	sh(t, "truncate", "-s", "420M", disk)
	sh(t, "sgdisk", "-n1:1M:+64M", "-t1:8300", "-n2:0:+320M", "-t2:8300", "-n3:0:+16M", "-t3:8300", disk)
	copySparse(t, disk, p1, 1<<20)
	copySparse(t, disk, p2, 65<<20)
	return disk
}

func TestMountFilesGPTPartitions(t *testing.T) {
	requireTools(t, filesTools)
	m, img, dir, state := mountFilesT(t, makeGPTDisk(t))
	if got := names(t, dir); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("%s holds %q, want p1 p2", dir, got)
	}
	if got := readFile(t, filepath.Join(dir, "p1/sub/deep.txt")); got != "deep\n" {
		t.Errorf("p1/sub/deep.txt = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "p2/b.txt")); got != "xfs here\n" {
		t.Errorf("p2/b.txt = %q", got)
	}
	skipped := m.Skipped()
	if len(skipped) != 1 || !strings.HasPrefix(skipped[0].Error(), "p3: unknown filesystem type;") {
		t.Errorf("Skipped() = %v, want one p3: unknown filesystem type", skipped)
	}
	for _, p := range []string{"p1/x", "p2/x", "x"} {
		if err := os.WriteFile(filepath.Join(dir, p), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write %s: %v, want EROFS", p, err)
		}
	}
	assertUnmounted(t, m, img, dir, state)
}

func TestMountFilesRefusesWhatItCannotShow(t *testing.T) {
	requireTools(t, filesTools)
	tmp := t.TempDir()
	junk := filepath.Join(tmp, "junk.img")
	if err := os.WriteFile(junk, randomBytes(1, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(tmp, "good.img")
	mkExt4(t, good, 16, map[string]string{"a": "a"})
	full := emptyDir(t, "full")
	writeFiles(t, full, map[string]string{"x": "x"})
	for _, tc := range []struct{ img, dir, want string }{
		{junk, emptyDir(t, "junk"), "disk: unknown filesystem type"},
		{good, full, "is not empty"},
		{good, filepath.Join(tmp, "missing"), "does not exist"},
	} {
		img, err := openFileImage(tc.img)
		if err != nil {
			t.Fatal(err)
		}
		state := t.TempDir()
		m, err := MountFiles(tc.dir, img, Options{StateDir: state})
		img.Close()
		if err == nil {
			m.Unmount()
			t.Errorf("MountFiles(%s) succeeded", tc.dir)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("MountFiles(%s): %q, want one line with %q", tc.dir, err, tc.want)
		}
		if errors.Is(err, ErrNoFilesystem) != (tc.img == junk) {
			t.Errorf("MountFiles(%s): errors.Is(%q, ErrNoFilesystem) = %v", tc.dir, err, !(tc.img == junk))
		}
		assertNoLeftovers(t, tc.dir, state)
		if left, _ := os.ReadDir(state); len(left) > 2 {
			t.Errorf("state directory not clean: %v", left)
		}
	}
}

// loopsUnder lists the loop devices whose backing file is under root.
func loopsUnder(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, e := range ents {
		if b := loopBacking(e.Name()); strings.HasPrefix(b, root+"/") {
			devs = append(devs, e.Name())
		}
	}
	return devs
}

// A file held open inside the view: Unmount detaches everything lazily,
// and the kernel lets go of the loop device once the file is closed.
func TestMountFilesUnmountWhileBusy(t *testing.T) {
	requireTools(t, filesTools)
	m, img, dir, state := mountFilesT(t, makeGPTDisk(t))
	f, err := os.Open(filepath.Join(dir, "p1/a.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("Unmount while busy: %v", err)
	}
	if ok, _ := isMountpoint(dir); ok {
		t.Errorf("%s is still mounted", dir)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "ext4 here\n" {
		t.Errorf("the open file stopped working: %v %q", err, b)
	}
	f.Close()
	m.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for len(loopsUnder(t, state)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // the kernel frees autoclear loops asynchronously
	}
	assertNoLeftovers(t, dir, state)
	if img.writes.Load() != 0 {
		t.Error("history was written")
	}
}
