package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loopDevicesOf lists the loop devices whose backing file is under dir.
func loopDevicesOf(t *testing.T, dir string) []string {
	out := mustRunCmd(t, "losetup", "-a")
	var devs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, dir) {
			devs = append(devs, l)
		}
	}
	return devs
}

// mountsUnder lists the mounts at or below dir.
func mountsUnder(t *testing.T, dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// TestFUSETree: every image in the tree is bit for bit the export of the
// same instant.
func TestFUSETree(t *testing.T) {
	requireTool(t, "fusermount3", "fuse3")
	rw := newRewind(t)
	v1, v2 := importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	rw.MustRun("point", "add", "db01@2026-11-25T10:30:00Z", "before-patch")
	rw.MustRun("clone", "db01@before-patch", "test")
	tree := filepath.Join(t.TempDir(), "tree")
	srv := rw.Serve(serveOptions{Mount: tree})
	want1, want2 := sha256File(t, v1), sha256File(t, v2)
	for path, want := range map[string]string{
		"db01/disk.img":                         want2,
		"db01/at/20261125T100000Z/disk.img":     want1,
		"db01/at/2026-11-25T10:59:59Z/disk.img": want1,
		"db01/at/latest/disk.img":               want2,
		"db01/at/-1s/disk.img":                  want2,
		"db01/points/before-patch/disk.img":     want1,
		"db01/at/before-patch/disk.img":         want1,
		"test/disk.img":                         want1,
	} {
		if got := sha256File(t, filepath.Join(tree, path)); got != want {
			t.Errorf("%s: sha256 %s, want %s", path, got[:12], want[:12])
		}
	}
	entries, _ := os.ReadDir(filepath.Join(tree, "db01", "at"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, want := range []string{"before-patch", "20261125T100000Z", "20261125T110000Z"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("listing at/ lacks %s: %v", want, names)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, "db01", "at", "1999-01-01T00:00:00Z", "disk.img")); err == nil {
		t.Error("an instant before the first version exists in the tree")
	}
	// History is read-only; the clone's image is writable and fsync is
	// durable: it survives a SIGKILL of the daemon.
	if f, err := os.OpenFile(filepath.Join(tree, "db01", "disk.img"), os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Error("history opened for writing")
	}
	f, err := os.OpenFile(filepath.Join(tree, "test", "disk.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("x", 4096)), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	srv.cmd.Process.Kill()
	<-srv.exited
	exec.Command("fusermount3", "-u", "-z", tree).Run()
	srv = rw.Serve(serveOptions{Mount: tree})
	b := make([]byte, 4096)
	g, err := os.Open(filepath.Join(tree, "test", "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	g.ReadAt(b, 1<<20)
	g.Close()
	if string(b) != strings.Repeat("x", 4096) {
		t.Error("a write fsynced through the tree was lost by a SIGKILL")
	}
	if got := sha256File(t, filepath.Join(tree, "db01/points/before-patch/disk.img")); got != want1 {
		t.Error("writing the clone changed its parent's history")
	}
}

// TestMountFiles: a file deleted between two imports is there at the
// first instant and gone at the second; a --rw mount writes a clone and
// never the parent; bad input leaves nothing mounted.
func TestMountFiles(t *testing.T) {
	requireTool(t, "losetup", "mount")
	rw := newRewind(t)
	v1, _ := importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	rw.Serve(serveOptions{})
	dir := t.TempDir()
	for spec, want := range map[string]bool{"db01@2026-11-25T10:00:00Z": true, "db01@latest": false} {
		mnt := filepath.Join(dir, "files")
		os.MkdirAll(mnt, 0o755)
		rw.MustRun("mount", spec, mnt, "--files")
		data, err := os.ReadFile(filepath.Join(mnt, "docs", "deleted.txt"))
		if (err == nil) != want {
			t.Errorf("%s: deleted.txt present=%v, want %v", spec, err == nil, want)
		}
		if want && !strings.Contains(string(data), "deleted between") {
			t.Errorf("%s: deleted.txt reads %q", spec, data)
		}
		if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644); err == nil {
			t.Errorf("%s: the files are writable", spec)
		}
		rw.MustRun("umount", mnt)
		if m := mountsUnder(t, mnt); len(m) != 0 {
			t.Errorf("umount left %v mounted", m)
		}
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("loop devices left behind: %v", l)
	}
	// --rw: a clone, written through its disk.img.
	mnt := filepath.Join(dir, "rw")
	os.MkdirAll(mnt, 0o755)
	rw.MustRun("mount", "db01@2026-11-25T10:00:00Z", mnt, "--rw", "--as", "db01-fix")
	f, err := os.OpenFile(filepath.Join(mnt, "disk.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("written through --rw"), 0)
	f.Sync()
	f.Close()
	rw.MustRun("umount", mnt)
	out := filepath.Join(dir, "out.img")
	rw.MustRun("export", "db01-fix@latest", out)
	b, _ := os.ReadFile(out)
	if !strings.HasPrefix(string(b), "written through --rw") {
		t.Error("the --rw write is not in the clone")
	}
	rw.MustRun("export", "db01@2026-11-25T10:00:00Z", out)
	if sha256File(t, out) != sha256File(t, v1) {
		t.Error("the --rw write changed the parent's history")
	}
	// Bad input: unknown volume, bad WHEN, a non-empty mount point.
	busy := filepath.Join(dir, "busy")
	os.MkdirAll(busy, 0o755)
	os.WriteFile(filepath.Join(busy, "f"), nil, 0o644)
	for _, args := range [][]string{
		{"mount", "nosuch@latest", mnt},
		{"mount", "db01@not-a-label!", mnt, "--files"},
		{"mount", "db01@latest", busy, "--files"},
		{"mount", "db01@1999-01-01T00:00:00Z", mnt},
	} {
		res := rw.Run(args...)
		if res.Code == 0 || strings.Count(strings.TrimSpace(res.Stderr), "\n") > 0 {
			t.Errorf("rewind %v: want one line of error, got %s", args, res)
		}
	}
	if m := mountsUnder(t, dir); len(m) != 0 {
		t.Errorf("bad input left mounts: %v", m)
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("bad input left loop devices: %v", l)
	}
}

// TestMountFilesPartitions: a GPT disk with an ext4 and an xfs partition
// shows p1 and p2 with their files.
func TestMountFilesPartitions(t *testing.T) {
	sgdisk := requireTool(t, "sgdisk", "gdisk")
	requireTool(t, "mkfs.xfs", "xfsprogs")
	dir := t.TempDir()
	disk := filepath.Join(dir, "gpt.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 450<<20)
	mustRunCmd(t, sgdisk, "-n", "1:2048:+100M", "-t", "1:8300", "-n", "2:0:+320M", "-t", "2:8300", disk)
	p1 := makeExt4(t, 100<<20, map[string][]byte{"on-ext4.txt": []byte("ext4 partition\n")})
	// xfs: made in a file, with a file in it, then copied in.
	p2 := filepath.Join(dir, "p2.img")
	os.WriteFile(p2, nil, 0o644)
	os.Truncate(p2, 320<<20)
	mustRunCmd(t, "mkfs.xfs", "-q", p2)
	mnt := filepath.Join(dir, "m")
	os.MkdirAll(mnt, 0o755)
	mustRunCmd(t, "mount", "-o", "loop", p2, mnt)
	os.WriteFile(filepath.Join(mnt, "on-xfs.txt"), []byte("xfs partition\n"), 0o644)
	mustRunCmd(t, "umount", mnt)
	mustRunCmd(t, "dd", "if="+p1, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	mustRunCmd(t, "dd", "if="+p2, "of="+disk, "bs=1M", "seek=101", "conv=notrunc,sparse", "status=none")
	rw := newRewind(t)
	rw.MustRun("import", "gpt", disk)
	rw.Serve(serveOptions{})
	files := filepath.Join(dir, "files")
	os.MkdirAll(files, 0o755)
	rw.MustRun("mount", "gpt", files, "--files")
	defer rw.Run("umount", files)
	for path, want := range map[string]string{"p1/on-ext4.txt": "ext4 partition\n", "p2/on-xfs.txt": "xfs partition\n"} {
		b, err := os.ReadFile(filepath.Join(files, path))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", path, b, err)
		}
	}
}

// TestDaemonCleansUpAfterKill: a daemon killed with -9 leaves mounts and
// loop devices; the next one removes them.
func TestDaemonCleansUpAfterKill(t *testing.T) {
	rw := newRewind(t)
	importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	srv := rw.Serve(serveOptions{})
	mnt := filepath.Join(t.TempDir(), "files")
	os.MkdirAll(mnt, 0o755)
	rw.MustRun("mount", "db01@latest", mnt, "--files")
	if len(loopDevicesOf(t, rw.Data)) == 0 && len(mountsUnder(t, mnt)) == 0 {
		t.Fatal("mount --files made neither a mount nor a loop device")
	}
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.exited
	srv = rw.Serve(serveOptions{})
	if m := mountsUnder(t, mnt); len(m) != 0 {
		t.Errorf("stale mounts after restart: %v", m)
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("stale loop devices after restart: %v", l)
	}
	// And a graceful stop unmounts what is mounted.
	rw.MustRun("mount", "db01@latest", mnt, "--files")
	srv.Stop()
	if m := mountsUnder(t, mnt); len(m) != 0 {
		t.Errorf("SIGTERM left mounts: %v", m)
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("SIGTERM left loop devices: %v", l)
	}
}
