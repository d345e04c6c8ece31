package catalog

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/remote"
)

func TestWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 6, h, m, 0, 0, time.Local) }
	w, err := ParseWindow("22:00-06:00")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		h, m int
		open bool
	}{{22, 0, true}, {23, 59, true}, {0, 0, true}, {5, 59, true}, {6, 0, false}, {12, 0, false}, {21, 59, false}} {
		if got := w.Open(at(c.h, c.m)); got != c.open {
			t.Errorf("22:00-06:00 at %02d:%02d: open %v, want %v", c.h, c.m, got, c.open)
		}
	}
	if got := w.Next(at(12, 30)); !got.Equal(at(22, 0)) {
		t.Errorf("next opening after 12:30: %v", got)
	}
	day, _ := ParseWindow("01:00-05:00")
	if got := day.Next(at(6, 0)); !got.Equal(at(1, 0).AddDate(0, 0, 1)) {
		t.Errorf("01:00-05:00 after 06:00 opens %v, want tomorrow 01:00", got)
	}
	if got := day.Next(at(2, 0)); !got.Equal(at(2, 0)) {
		t.Errorf("an open window's next opening is now: %v", got)
	}
	for _, bad := range []string{"22-06", "25:00-01:00", "10:00-10:00", "10:00-11:00x", "10:60-11:00"} {
		if _, err := ParseWindow(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("window %q: %v, want ErrInvalid", bad, err)
		}
	}
	if none, _ := ParseWindow(""); !none.Open(at(12, 0)) || none.IsSet() {
		t.Error("no window is not always open")
	}
}

func importBytes(t *testing.T, s *Service, vol string, data []byte) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := s.Import(context.Background(), ImportRequest{Volume: vol, Source: img, File: src}, nil); err != nil {
		t.Fatal(err)
	}
}

func exportBytes(t *testing.T, s *Service, spec string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := s.Export(context.Background(), ExportRequest{Spec: spec, Dest: "-"}, &b, nil); err != nil {
		t.Fatalf("export %s: %v", spec, err)
	}
	return b.Bytes()
}

// A replication of some volumes makes a repository that a data directory
// given it as --store serves: the volumes asked for, their clones'
// parents and their labels, each instant as at the source; the others
// are not there. The replicated volumes take no writes there; a clone of
// one does.
func TestReplicateVolumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(Options{Dir: filepath.Join(dir, "src")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v1, v2 := make([]byte, 1<<20), make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range v1 {
		v1[i], v2[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	importBytes(t, s, "vm", v1)
	if _, err := s.AddPoint(ctx, "vm", "before"); err != nil {
		t.Fatal(err)
	}
	importBytes(t, s, "vm", v2)
	importBytes(t, s, "other", bytes.Repeat([]byte("other"), 10000))
	if _, err := s.Clone(ctx, "vm@before", "test"); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	res, err := s.Replicate(ctx, ReplicateRequest{To: target, Volumes: []string{"test"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete || strings.Join(res.Volumes, ",") != "test,vm" || res.BytesSent == 0 {
		t.Fatalf("replicate: %+v", res)
	}
	// Nothing changed: the packs do not go again (the index does, what of
	// it the snapshot wrote itself).
	again, err := s.Replicate(ctx, ReplicateRequest{To: target, Volumes: []string{"test"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.PartsSkipped == 0 || again.BytesSent > 64<<10 {
		t.Fatalf("a second run sent %d bytes of %d again (%+v)", again.BytesSent, res.BytesSent, again)
	}

	r, err := Open(Options{Dir: filepath.Join(dir, "site2"), Store: target})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	vols, _ := r.Volumes(ctx)
	if len(vols) != 2 || vols[0].Name != "test" || vols[1].Name != "vm" || vols[1].Replica == nil || vols[1].Replica.Snapshot != again.Snapshot {
		t.Fatalf("the target serves %+v, want test and vm, replicas as of %s", vols, again.Snapshot)
	}
	if !bytes.Equal(exportBytes(t, r, "vm@before"), v1) || !bytes.Equal(exportBytes(t, r, "vm"), v2) || !bytes.Equal(exportBytes(t, r, "test"), v1) {
		t.Fatal("an instant reads differently on the target")
	}
	img := filepath.Join(dir, "img")
	os.WriteFile(img, v1, 0o644)
	src, _ := OpenSource(img)
	defer src.Close()
	_, err = r.Import(ctx, ImportRequest{Volume: "vm", Source: img, File: src}, nil)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "replica of another site") {
		t.Fatalf("import into a replica: %v", err)
	}
	if _, err := r.AddPoint(ctx, "vm", "x"); !errors.Is(err, ErrConflict) {
		t.Fatalf("label a replica: %v", err)
	}
	if view, err := r.OpenView("test"); err != nil || view.Writable() {
		t.Fatalf("the head of a replicated clone: %v, writable %v", err, view != nil && view.Writable())
	}
	if _, err := r.Clone(ctx, "vm@before", "mine"); err != nil {
		t.Fatalf("clone of a replica: %v", err)
	}
	if view, err := r.OpenView("mine"); err != nil || !view.Writable() {
		t.Fatalf("a clone of a replica is not writable: %v", err)
	}
}

// A run that reaches its window's end stops between parts, ends well
// and says so; the target keeps no index of it. The next run, inside the
// window, sends the rest only.
func TestReplicateWindowEnds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	inside := time.Date(2026, 12, 6, 10, 30, 0, 0, time.Local)
	closeAfterPart := true
	// The window closes once the first part has arrived.
	now := func() time.Time {
		if parts, _ := filepath.Glob(filepath.Join(target, "packseg", "*", "*")); closeAfterPart && len(parts) > 0 {
			return inside.Add(time.Hour)
		}
		return inside
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "src"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Seven parts: the parts already on their way when the window closes
	// arrive (up to parallelParts, and the one whose check came before
	// the first of them began to land), the rest wait for the next run.
	data := make([]byte, 6*remote.PartSize+1<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	importBytes(t, s, "vm", data)
	req := ReplicateRequest{To: target, Window: "10:00-11:00"}
	res, err := s.Replicate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Stopped == "" || res.PartsSent < 1 || res.PartsSent > 5 || res.LagSeconds != -1 {
		t.Fatalf("a run past its window: %+v; want it stopped after one to five parts", res)
	}
	if idx, _ := filepath.Glob(filepath.Join(target, "index", "*")); len(idx) != 0 {
		t.Fatalf("a stopped run sent index files: %v", idx)
	}
	closeAfterPart = false
	again, err := s.Replicate(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Complete || again.PartsSkipped != res.PartsSent || again.BytesSent > int64(len(data)) {
		t.Fatalf("the next run: %+v; want it complete, the first part not sent again", again)
	}
	r, err := Open(Options{Dir: filepath.Join(dir, "site2"), Store: target, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !bytes.Equal(exportBytes(t, r, "vm"), data) {
		t.Fatal("vm reads differently on the target")
	}
	// Outside its window, a run is refused at once.
	closeAfterPart = true
	if _, err := s.Replicate(ctx, req, nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "opens at 10:00") {
		t.Fatalf("a run outside its window: %v", err)
	}
}
