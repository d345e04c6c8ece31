package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPruneByRetention: five versions an hour apart; a retention policy
// that keeps the last hour, a label, and a mount open at another instant.
// Prune removes the other two versions; the label, the mounted instant
// and the newest read back sha256-identical to what was imported, and an
// instant whose version was removed reads the kept version before it.
func TestPruneByRetention(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	now := time.Now().UTC()
	var imgs, whens []string
	for i := range 5 {
		img := filepath.Join(dir, fmt.Sprintf("v%d.img", i))
		if err := os.WriteFile(img, randomBytes(int64(40+i), 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		at := now.Add(time.Duration(i-5) * time.Hour).Add(30 * time.Minute).Format(time.RFC3339)
		rw.MustRun("import", "db", img, "--at", at)
		imgs, whens = append(imgs, img), append(whens, at)
	}
	rw.MustRun("point", "add", "db@"+whens[1], "keepme")
	rw.Serve(serveOptions{})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("mount", "db@"+whens[2], mnt)
	defer rw.Run("umount", mnt)

	oneLineError(t, "prune without a policy", rw.Run("prune", "db"), "no retention policy")
	rw.MustRun("retention", "set", "db", "--keep-all", "1h", "--keep-minutely", "0", "--keep-hourly", "0", "--keep-daily", "0")
	var dry []struct{ Versions, Kept, Removed int }
	mustJSON(t, rw.MustRun("--json", "prune", "--dry-run"), &dry)
	if len(dry) != 1 || dry[0].Versions != 5 || dry[0].Removed != 2 {
		t.Fatalf("dry run: %+v, want 2 of 5 versions to go", dry)
	}
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "db"), &log)
	if len(log) != 5 {
		t.Fatalf("a dry run changed the log: %d versions", len(log))
	}
	var res []struct{ Versions, Kept, Removed int }
	mustJSON(t, rw.MustRun("--json", "prune", "db"), &res)
	if len(res) != 1 || res[0].Kept != 3 || res[0].Removed != 2 {
		t.Fatalf("prune: %+v, want 3 kept and 2 removed", res)
	}
	mustJSON(t, rw.MustRun("--json", "log", "db"), &log)
	if len(log) != 3 {
		t.Fatalf("%d versions after the prune, want 3", len(log))
	}
	check := func(spec, want string) { t.Helper(); requireExportOf(t, rw, spec, want) }
	check("db@keepme", imgs[1])
	check("db@latest", imgs[4])
	check("db@"+whens[3], imgs[2]) // removed: reads the kept version before it
	if sha256File(t, filepath.Join(mnt, "disk.img")) != sha256File(t, imgs[2]) {
		t.Error("the mounted instant reads other bytes after the prune")
	}
	oneLineError(t, "an instant before every kept version", rw.Run("export", "db@"+whens[0], filepath.Join(dir, "x.img")), "no data before")
}

// TestScheduledPrune: the daemon prunes by the retention policies on its
// own (serve --prune-every), and says so in its metrics.
func TestScheduledPrune(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	now := time.Now().UTC()
	for i := range 3 {
		img := filepath.Join(dir, "v.img")
		if err := os.WriteFile(img, randomBytes(int64(60+i), 256<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		rw.MustRun("import", "db", img, "--at", now.Add(time.Duration(i-3)*time.Hour).Format(time.RFC3339))
	}
	rw.MustRun("retention", "set", "db", "--keep-all", "30m", "--keep-minutely", "0", "--keep-hourly", "0", "--keep-daily", "0")
	srv := rw.Serve(serveOptions{HTTP: true, Args: []string{"--prune-every", "200ms"}})
	deadline := time.Now().Add(30 * time.Second)
	var log []struct{ Time string }
	for {
		mustJSON(t, rw.MustRun("--json", "log", "db"), &log)
		if len(log) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(log) != 1 {
		t.Fatalf("%d versions 30 s after the daemon started pruning every 200 ms, want the newest only", len(log))
	}
	// The round counts what it removed once its prune returns, just
	// after the log can see the prune's commit.
	var code, body string
	for {
		code, body = curlStatus(t, nil, "http://"+srv.HTTPAddr+"/metrics")
		if code == "200" && strings.Contains(body, "rewind_prune_removed_versions_total 2") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != "200" || !strings.Contains(body, "rewind_prune_removed_versions_total 2") {
		t.Fatalf("metrics (%s) do not say the scheduled prune removed 2 versions", code)
	}
}

// requireExportOf fails the test unless rewind export of spec writes the
// bytes of the file want.
func requireExportOf(t *testing.T, rw *rewind, spec, want string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.img")
	rw.MustRun("export", spec, out)
	if sha256File(t, out) != sha256File(t, want) {
		t.Errorf("%s does not read back as %s", spec, filepath.Base(want))
	}
}
