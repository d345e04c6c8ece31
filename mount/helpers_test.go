package mount

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireTools fails (never skips) when a program a test needs is
// missing, naming the Debian package that brings it.
func requireTools(t testing.TB, tools map[string]string) {
	t.Helper()
	for bin, pkg := range tools {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: install the Debian package %s (apt-get install -y %s)", bin, pkg, pkg)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatalf("these tests mount filesystems and attach loop devices: run them as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container the device")
	}
}

var fuseTools = map[string]string{"fusermount3": "fuse3"}

// emptyDir returns a new empty directory under the test's temp dir.
func emptyDir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// unmountOnCleanup unmounts m when the test ends, in case it failed early.
func unmountOnCleanup(t testing.TB, m *Mount) {
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
}

func sha(t testing.TB, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func shaBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func shaFile(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return sha(t, f)
}

// assertNoLeftovers fails if any mount or loop device refers to a path
// under one of roots: what /proc/mounts and losetup -a would show.
func assertNoLeftovers(t testing.TB, roots ...string) {
	t.Helper()
	under := func(p string) bool {
		for _, r := range roots {
			if p == r || strings.HasPrefix(p, r+"/") {
				return true
			}
		}
		return false
	}
	ms, err := mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ms {
		if under(e.Point) {
			t.Errorf("mount left behind: %s on %s (%s)", e.Source, e.Point, e.FSType)
		}
	}
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --list: %v: %s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && under(strings.TrimSuffix(f[1], " (deleted)")) {
			t.Errorf("loop device left behind: %s", line)
		}
	}
}
