package api

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// TestRoundTrip drives a catalog through the socket: every call answers as
// the service does in-process, errors keep their class, and streamed
// imports and exports carry progress and bytes.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	sock := filepath.Join(dir, "rewind.sock")
	s, err := ListenSocket(sock, Handler(svc, ServerInfo{}))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("rewind socket test "), 1<<16)[:1<<20]
	os.WriteFile(img, data, 0o644)
	src, err := catalog.OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var progressed bool
	res, err := c.Import(ctx, catalog.ImportRequest{Volume: "v", Source: img, File: src, At: "2026-11-25T10:00:00Z"},
		func(done, total int64) { progressed = total == 1<<20 })
	if err != nil || !res.Created || res.Size != 1<<20 || !progressed {
		t.Fatalf("import: %+v, %v, progress %v", res, err, progressed)
	}
	if _, err := c.Import(ctx, catalog.ImportRequest{Volume: "v", Source: img, File: src, At: "2026-11-25T09:00:00Z"}, nil); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("an older --at: %v", err)
	}
	vols, err := c.Volumes(ctx)
	if err != nil || len(vols) != 1 || vols[0].Name != "v" {
		t.Fatalf("volumes: %+v, %v", vols, err)
	}
	if _, err := c.AddPoint(ctx, "v@latest", "p1"); err != nil {
		t.Fatal(err)
	}
	if ps, err := c.Points(ctx, "v"); err != nil || len(ps) != 1 {
		t.Fatalf("points: %+v, %v", ps, err)
	}
	var out bytes.Buffer
	if _, err := c.Export(ctx, catalog.ExportRequest{Spec: "v@p1", Dest: "-"}, &out, nil); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("export to a stream: %d bytes, %v", out.Len(), err)
	}
	dest := filepath.Join(dir, "out.img")
	os.WriteFile(dest, bytes.Repeat([]byte{1}, 3<<20), 0o644) // longer, and not zero: emptied first
	f, created, err := catalog.OpenDest(dest)
	if err != nil || created {
		t.Fatalf("open an existing destination: created %v, %v", created, err)
	}
	defer f.Close()
	if _, err := c.Export(ctx, catalog.ExportRequest{Spec: "v@latest", Dest: dest, File: f}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, data) {
		t.Fatal("export to a file differs")
	}
	if _, err := c.Export(ctx, catalog.ExportRequest{Spec: "nosuch@latest", Dest: "-"}, &out, nil); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("export of an unknown volume: %v", err)
	}
	if _, err := c.Clone(ctx, "v@p1", "c"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVolume(ctx, "v", false); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("removing a parent of a clone: %v", err)
	}
	if _, err := c.Diff(ctx, "v@latest", "v@p1"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stats(ctx); err != nil || st.Volumes != 2 {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	if _, err := c.Log(ctx, catalog.LogRequest{Volume: "nosuch"}); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("log of an unknown volume: %v", err)
	}
	if log, err := c.Log(ctx, catalog.LogRequest{Volume: "v", Since: "2026-11-25T10:00:00Z", Limit: 1}); err != nil || len(log) != 1 {
		t.Fatalf("log with a limit: %+v, %v", log, err)
	}
	if a, err := c.Activity(ctx, catalog.ActivityRequest{Volume: "v", Buckets: 3}); err != nil || a.Versions != 1 || len(a.Buckets) != 1 {
		t.Fatalf("activity: %+v, %v", a, err)
	}
	if at, err := c.Instant(ctx, "v@p1"); err != nil || at.Spec != "v@20261125T100000Z" {
		t.Fatalf("instant: %+v, %v", at, err)
	}
	if _, err := c.Instant(ctx, "v@2026-11-25T99:00:00Z"); !errors.Is(err, catalog.ErrInvalid) {
		t.Fatalf("instant of a bad WHEN: %v", err)
	}
	if err := c.RemovePoint(ctx, "v", "p1"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePoint(ctx, "v", "p1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("removing a removed point: %v", err)
	}
	if _, err := c.SetRetention(ctx, catalog.Retention{Volume: "v", KeepAll: catalog.Span(48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Retention(ctx, "v"); err != nil || r.KeepAll != catalog.Span(48*time.Hour) {
		t.Fatalf("retention: %+v, %v", r, err)
	}
	if err := c.RemoveVolume(ctx, "c", false); err != nil {
		t.Fatal(err)
	}
}
