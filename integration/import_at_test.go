package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImportAtFutureIsRefused: import --at in 2200 (in the future) and in
// 2999 (past the nanosecond clock) are refused in one line, and the next
// plain import is stamped now, not after the refused time.
func TestImportAtFutureIsRefused(t *testing.T) {
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, randomBytes(8, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ at, want string }{
		{"2200-01-01T00:00:00Z", "in the future"},
		{"2999-01-01T00:00:00Z", "latest time rewind can store is 2262-04-11T23:47:16.854775807Z"},
	} {
		res := rw.Run("import", "db01", img, "--at", c.at)
		msg := strings.TrimSpace(res.Stderr)
		if res.Code == 0 || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("import --at %s: want one line containing %q, got:\n%s", c.at, c.want, res)
		}
	}
	before := time.Now()
	rw.MustRun("import", "db01", img)
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "db01"), &log)
	if len(log) != 1 {
		t.Fatalf("log after two refused imports and one plain one: %+v", log)
	}
	stamp, err := time.Parse(time.RFC3339Nano, log[0].Time)
	if err != nil {
		t.Fatal(err)
	}
	if d := stamp.Sub(before); d < -time.Minute || d > time.Minute {
		t.Fatalf("the import was stamped %s, not within a minute of %s", stamp, before.UTC())
	}
}
