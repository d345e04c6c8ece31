package catalog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// import --at in the future, or past the nanosecond clock, is refused in
// one line and leaves the store's clock alone: the next plain import is
// stamped by the clock.
func TestImportAtFutureIsRefused(t *testing.T) {
	now := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	s, err := Open(Options{Dir: filepath.Join(dir, "data"), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, []byte(strings.Repeat("rewind", 100000)), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	for _, at := range []string{"2200-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "2026-11-25T15:01:00.000000001Z", "-0s"} {
		_, err := s.Import(ctx, ImportRequest{Volume: "db01", Source: img, File: src, At: at}, nil)
		if at == "-0s" {
			if err != nil {
				t.Fatalf("--at now: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrBadWhen) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--at %s: %v; want one line of class ErrBadWhen", at, err)
		}
	}
	// A minute ahead is allowed, for clocks a little apart.
	now = now.Add(time.Second)
	if _, err := s.Import(ctx, ImportRequest{Volume: "db01", Source: img, File: src, At: "2026-11-25T15:01:01Z"}, nil); err != nil {
		t.Fatalf("--at a minute ahead: %v", err)
	}
	now = now.Add(2 * time.Minute)
	res, err := s.Import(ctx, ImportRequest{Volume: "db01", Source: img, File: src}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(0, int64(res.Time)).UTC(); !got.Equal(now) {
		t.Fatalf("the next import was stamped %s, want the clock's %s", got, now)
	}
}
