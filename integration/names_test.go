package integration

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentClonesMakeOneVolume: fifty `rewind clone` calls of one
// name against a running daemon make one volume; the others are refused
// with a one-line error, and the parent can be removed once the clone is.
func TestConcurrentClonesMakeOneVolume(t *testing.T) {
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, randomBytes(7, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "db01", img)
	rw.Serve(serveOptions{})
	const n = 50
	res := make([]cmdResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = rw.Run("clone", "db01@latest", "dup")
		}()
	}
	wg.Wait()
	made := 0
	for _, r := range res {
		msg := strings.TrimSpace(r.Stderr)
		switch {
		case r.Code == 0:
			made++
		case !strings.Contains(msg, "exists") || strings.Contains(msg, "\n"):
			t.Errorf("a refused clone should say in one line that dup exists:\n%s", r)
		}
	}
	if made != 1 {
		t.Errorf("%d clones succeeded, want 1", made)
	}
	var vols []struct{ Name string }
	mustJSON(t, rw.MustRun("--json", "volume", "list"), &vols)
	dups := 0
	for _, v := range vols {
		if v.Name == "dup" {
			dups++
		}
	}
	if dups != 1 || len(vols) != 2 {
		t.Fatalf("volume list after %d clones to one name: %+v", n, vols)
	}
	if r := rw.Run("volume", "rm", "db01"); r.Code == 0 {
		t.Fatalf("removed the parent of a clone:\n%s", r)
	}
	rw.MustRun("volume", "rm", "dup")
	rw.MustRun("volume", "rm", "db01")
	mustJSON(t, rw.MustRun("--json", "volume", "list"), &vols)
	if len(vols) != 0 {
		t.Fatalf("volumes left after removing both: %+v", vols)
	}
}

// TestMissingDataDirectory: a command given a --data that does not exist
// (a mistyped path) says so in one line and makes nothing there; import
// and volume create make it.
func TestMissingDataDirectory(t *testing.T) {
	rw := newRewind(t)
	rw.Data = filepath.Join(t.TempDir(), "no-such-data")
	for _, args := range [][]string{{"volume", "list"}, {"--json", "volume", "list"}, {"log", "db01"}, {"gc"}} {
		oneLineError(t, strings.Join(args, " "), rw.Run(args...), "no data directory at "+rw.Data)
		if _, err := os.Stat(rw.Data); !os.IsNotExist(err) {
			t.Fatalf("after %v: %s is there (%v)", args, rw.Data, err)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, randomBytes(3, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "db01", img)
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "db01") {
		t.Fatalf("volume list after import: %s", out)
	}
	rw.Data = filepath.Join(t.TempDir(), "new-data")
	rw.MustRun("volume", "create", "blank", "--size", "16MiB")
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "blank") {
		t.Fatalf("volume list after volume create: %s", out)
	}
}
