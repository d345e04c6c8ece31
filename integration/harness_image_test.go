package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Disk images for the tests: ext4 filesystems made from a map of files with
// `mkfs.ext4 -d`, and changed or read with debugfs, all without mounting.

// makeExt4 returns a new ext4 image of size bytes in t.TempDir() holding
// files (path relative to the root, e.g. "etc/hostname" -> contents).
func makeExt4(t testing.TB, size int64, files map[string][]byte) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	writeExt4(t, img, size, files)
	return img
}

// writeExt4 creates or replaces img with an ext4 filesystem of size bytes
// (4 KiB blocks) holding files.
func writeExt4(t testing.TB, img string, size int64, files map[string][]byte) {
	t.Helper()
	mkfs := requireTool(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(name, "/")))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("makeExt4: %v", err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatalf("makeExt4: %v", err)
		}
	}
	if err := os.Remove(img); err != nil && !os.IsNotExist(err) {
		t.Fatalf("makeExt4: %v", err)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatalf("makeExt4: %v", err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatalf("makeExt4: %v", err)
	}
	mustRunCmd(t, mkfs, "-F", "-q", "-b", "4096", "-E", "root_owner=0:0", "-d", dir, img)
}

// debugfs runs one debugfs request on an unmounted image, writable when
// write is set, and returns its standard output. debugfs exits 0 even when
// the request fails, so anything on stderr but its banner and the inode
// numbers that `write` and `mkdir` report fails the test.
func debugfs(t testing.TB, img string, write bool, request string) string {
	t.Helper()
	out, err := debugfsErr(t, img, write, request)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// debugfsErr is debugfs returning the failure instead of failing the test.
func debugfsErr(t testing.TB, img string, write bool, request string) (string, error) {
	t.Helper()
	args := []string{"-R", request, img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	res := runCmd(t, nil, nil, requireTool(t, "debugfs", "e2fsprogs"), args...)
	var errs []string
	for _, line := range strings.Split(res.Stderr, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") || strings.HasPrefix(line, "Allocated inode:") {
			continue
		}
		errs = append(errs, line)
	}
	if res.Code != 0 || len(errs) > 0 {
		return res.Stdout, fmt.Errorf("debugfs %s %q: exit status %d: %s", img, request, res.Code, strings.Join(errs, "; "))
	}
	return res.Stdout, nil
}

// debugfsCat returns the contents of the file at path in img.
func debugfsCat(t testing.TB, img, path string) []byte {
	t.Helper()
	return []byte(debugfs(t, img, false, "cat "+path))
}

// debugfsExists reports whether path names anything in img.
func debugfsExists(t testing.TB, img, path string) bool {
	t.Helper()
	_, err := debugfsErr(t, img, false, "stat "+path)
	return err == nil
}

// debugfsRm removes the file at path from img (`debugfs -w -R 'rm PATH'`).
func debugfsRm(t testing.TB, img, path string) {
	t.Helper()
	debugfs(t, img, true, "rm "+path)
}

// debugfsMkdir makes a directory at path in img; the parent must exist.
func debugfsMkdir(t testing.TB, img, path string) {
	t.Helper()
	debugfs(t, img, true, "mkdir "+path)
}

// debugfsWrite copies the host file src to a new file dst in img
// (`debugfs -w -R 'write SRC /dst'`). dst must not exist yet: remove it
// first with debugfsRm to replace it.
func debugfsWrite(t testing.TB, img, src, dst string) {
	t.Helper()
	debugfs(t, img, true, "write "+src+" "+dst)
}

// debugfsWriteBytes writes data to a new file dst in img.
func debugfsWriteBytes(t testing.TB, img, dst string, data []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatalf("debugfsWriteBytes: %v", err)
	}
	debugfsWrite(t, img, src, dst)
}

// debugfsLs returns the names in directory dir of img, without . and ..
func debugfsLs(t testing.TB, img, dir string) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(debugfs(t, img, false, "ls -p "+dir), "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(line, "/")
		if len(f) == 8 && f[5] != "." && f[5] != ".." {
			names = append(names, f[5])
		}
	}
	return names
}

// fsckClean fails the test unless img is a consistent ext2/3/4 filesystem
// (`e2fsck -fn`, which changes nothing).
func fsckClean(t testing.TB, img string) {
	t.Helper()
	res := runCmd(t, nil, nil, requireTool(t, "e2fsck", "e2fsprogs"), "-fn", img)
	if res.Code != 0 {
		t.Fatalf("e2fsck -fn %s: %s", img, res)
	}
}
