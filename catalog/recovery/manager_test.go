package recovery

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

	"github.com/rewind-dev/rewind/catalog"
)

const (
	mib  = 1 << 20
	size = 8 * mib
)

// fixture is a data directory holding volume "db" (data with holes) and
// a recovery manager on it.
type fixture struct {
	t    *testing.T
	dir  string
	svc  *catalog.Service
	m    *Manager
	data []byte // what db holds
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir()}
	f.data = make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += 256 << 10 {
		if off/(256<<10)%3 != 2 { // every third 256 KiB stays a hole
			for i := off; i < off+256<<10; i++ {
				f.data[i] = byte(rng.Uint32())
			}
		}
	}
	img := filepath.Join(f.dir, "db.img")
	if err := os.WriteFile(img, f.data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.open()
	src, err := catalog.OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := f.svc.Import(context.Background(), catalog.ImportRequest{Volume: "db", Source: img, File: src}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close() })
	return f
}

// open opens the data directory and the manager, as a daemon starts.
func (f *fixture) open() {
	f.t.Helper()
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(f.dir, "data")})
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := Open(svc, Options{Dir: filepath.Join(f.dir, "data", "recoveries"), Granularity: 64 << 10, Workers: 4, SaveInterval: time.Hour})
	if err != nil {
		svc.Close()
		f.t.Fatal(err)
	}
	svc.SetRemoveCheck(m.RemoveCheck)
	f.svc, f.m = svc, m
}

// close stops the manager and the data directory, as a daemon stops.
func (f *fixture) close() {
	if f.m == nil {
		return
	}
	if err := errors.Join(f.m.Close(), f.svc.Close()); err != nil {
		f.t.Error(err)
	}
	f.m, f.svc = nil, nil
}

// start recovers db@latest into a new file, as the CLI does.
func (f *fixture) start(name string, limit int64) (string, *Status) {
	f.t.Helper()
	path := filepath.Join(f.dir, name+".target")
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		f.t.Fatal(err)
	}
	st, err := f.m.Start(context.Background(), Request{Spec: "db@latest", Target: path, As: name, Limit: limit, File: file, Created: true})
	if err != nil {
		file.Close()
		f.t.Fatal(err)
	}
	return path, st
}

// disk returns the Disk serving name, failing if there is none.
func (f *fixture) disk(name string) *Disk {
	f.t.Helper()
	d := f.m.Disk(name)
	if d == nil {
		f.t.Fatalf("no Disk serves %s", name)
	}
	return d
}

func (f *fixture) cutover(name string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := f.m.Cutover(ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	if st.State != StateCutOver {
		f.t.Fatalf("state after cutover %q", st.State)
	}
}

// targetHolds fails unless the first len(want) bytes of path are want.
func targetHolds(t *testing.T, path string, want []byte, msg string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
		t.Fatal(msg)
	}
}

// Writes through the Disk while the copy runs reach the target; after
// cutover the Disk reads and writes the target, and the clone's history
// and the source stay as they were.
func TestRecoverWritesReachTargetAndCutover(t *testing.T) {
	f := newFixture(t)
	path, st := f.start("rec", 0)
	if st.Name != "rec" || st.State != StateCopying || st.Total != size {
		t.Fatalf("status after start %+v", st)
	}
	d := f.disk("rec")
	// Writes after the copier caught up reach the target only through
	// the Disk's report of them.
	j, _ := f.m.get("rec")
	if err := j.cp.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(f.data)
	for i, off := range []int64{0, 300 << 10, 5*mib + 7, size - 4096} {
		p := bytes.Repeat([]byte{byte(0xa0 + i)}, 4096)
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if err := d.WriteZeroes(mib, 128<<10); err != nil {
		t.Fatal(err)
	}
	clear(want[mib : mib+128<<10])
	before := f.svc.Timeline().Now().UnixNano()
	f.cutover("rec")
	targetHolds(t, path, want, "after cutover the target differs from what the export held")
	if !d.CutOver() {
		t.Fatal("the Disk still serves the clone after cutover")
	}

	// After cutover: reads and writes go to the target.
	p := bytes.Repeat([]byte{0x5a}, 8192)
	if _, err := d.WriteAt(p, 2*mib); err != nil {
		t.Fatal(err)
	}
	copy(want[2*mib:], p)
	targetHolds(t, path, want, "a write after cutover did not land on the target")
	got := make([]byte, 8192)
	if _, err := d.ReadAt(got, 2*mib); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read after cutover: %v", err)
	}

	// The clone's history up to the cutover, and the source, are intact.
	hist, err := f.svc.OpenView("rec@" + catalog.Time(before).String())
	if err != nil {
		t.Fatal(err)
	}
	defer hist.Close()
	img := make([]byte, size)
	if _, err := hist.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	clear(want[2*mib : 2*mib+8192])
	copy(want[2*mib:], f.data[2*mib:2*mib+8192])
	if !bytes.Equal(img, want) {
		t.Fatal("the clone's history before cutover changed")
	}
	src, err := f.svc.OpenView("db@latest")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.ReadAt(img, 0); err != nil || !bytes.Equal(img, f.data) {
		t.Fatalf("the source volume changed (%v)", err)
	}
}

// A daemon that stops resumes its copy at its next start; a clone write
// the saved progress never heard of (written after the last save, onto
// blocks already copied) is found through the clone's history and copied
// again; a cut-over recovery stays cut over.
func TestRecoverResumesAfterRestart(t *testing.T) {
	f := newFixture(t)
	path, _ := f.start("rec", 0)
	j, _ := f.m.get("rec")
	if err := j.cp.WaitConverged(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.close()

	// A write that lands in the clone while no copier watches.
	f.open()
	view, err := f.svc.OpenView("rec")
	if err != nil {
		t.Fatal(err)
	}
	f.m.Close() // the manager resumed the copy; stop it again first
	p := bytes.Repeat([]byte{0xee}, 64<<10)
	if _, err := view.WriteAt(p, 3*mib); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(view.Flush(), view.Close()); err != nil {
		t.Fatal(err)
	}
	f.svc.Close()
	f.m, f.svc = nil, nil

	f.open()
	all := f.m.List()
	if len(all) != 1 || (all[0].State != StateCopying && all[0].State != StateConverged) {
		t.Fatalf("after restart: %+v, want one recovery copying", all)
	}
	want := bytes.Clone(f.data)
	copy(want[3*mib:], p)
	f.cutover("rec")
	targetHolds(t, path, want, "the resumed copy missed a write made while no copier ran")
	f.close()

	f.open()
	if all := f.m.List(); len(all) != 1 || all[0].State != StateCutOver {
		t.Fatalf("after another restart: %+v, want cut over", all)
	}
	q := bytes.Repeat([]byte{0x11}, 4096)
	if _, err := f.disk("rec").WriteAt(q, 0); err != nil {
		t.Fatal(err)
	}
	copy(want, q)
	targetHolds(t, path, want, "a cut-over recovery no longer serves its target after a restart")
}

// Bad input changes nothing: no clone, no record, no recovery.
func TestRecoverRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	busy, _ := f.start("first", 1)
	small := filepath.Join(f.dir, "small")
	if err := os.WriteFile(small, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.dir, "new")
	for _, c := range []struct {
		name   string
		req    Request
		path   string // opened into req.File
		create bool
		class  error
	}{
		{"too small", Request{Spec: "db@latest", As: "a"}, small, false, catalog.ErrInvalid},
		{"target in use", Request{Spec: "db@latest", As: "b"}, busy, false, catalog.ErrConflict},
		{"no instant", Request{Spec: "db", As: "c"}, tmp, true, catalog.ErrBadWhen},
		{"no volume", Request{Spec: "nope@latest", As: "d"}, tmp, true, catalog.ErrNotFound},
		{"bad name", Request{Spec: "db@latest", As: "-x"}, tmp, true, catalog.ErrBadName},
		{"name taken", Request{Spec: "db@latest", As: "first"}, tmp, true, catalog.ErrExists},
		{"unreachable", Request{Spec: "db@latest", As: "e", Target: "nbd://127.0.0.1:1/x"}, "", false, catalog.ErrInvalid},
		{"path without file", Request{Spec: "db@latest", As: "g", Target: "/etc/passwd"}, "", false, catalog.ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			if c.path != "" {
				flags := os.O_RDWR
				if c.create {
					flags |= os.O_CREATE | os.O_TRUNC
				}
				file, err := os.OpenFile(c.path, flags, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				defer file.Close()
				req.File, req.Target, req.Created = file, c.path, c.create
			}
			_, err := f.m.Start(context.Background(), req)
			if !errors.Is(err, c.class) {
				t.Fatalf("Start = %v, want class %v", err, c.class)
			}
			if all := f.m.List(); len(all) != 1 {
				t.Fatalf("recoveries after a refused start: %+v", all)
			}
			vols, _ := f.svc.Volumes(context.Background())
			if len(vols) != 2 {
				t.Fatalf("volumes after a refused start: %d, want db and first", len(vols))
			}
		})
	}
	// Once the first recovery is cancelled, its target is free again.
	if _, err := f.m.Cancel("first"); err != nil {
		t.Fatal(err)
	}
	file, err := os.OpenFile(busy, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Start(context.Background(), Request{Spec: "db@latest", Target: busy, As: "again", File: file}); err != nil {
		file.Close()
		t.Fatalf("a cancelled recovery's target stays locked: %v", err)
	}
}

// A volume whose copy runs cannot be removed, even with force; once the
// copy is cancelled, removing it ends the recovery.
func TestRecoverRemoveVolume(t *testing.T) {
	f := newFixture(t)
	f.start("rec", 1)
	ctx := context.Background()
	if err := f.svc.RemoveVolume(ctx, "rec", true); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("remove a volume being recovered: %v, want a conflict", err)
	}
	if err := f.svc.RemoveVolume(ctx, "db", true); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("remove (with force) the parent of a volume being recovered: %v, want a conflict", err)
	}
	if _, err := f.m.Cancel("rec"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.RemoveVolume(ctx, "rec", true); err != nil {
		t.Fatal(err)
	}
	if all := f.m.List(); len(all) != 0 {
		t.Fatalf("recoveries after removing the volume: %+v", all)
	}
	if _, err := os.Stat(f.m.recordPath("rec")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the record of a removed recovery stays: %v", err)
	}
}

// A cut-over recovery whose target cannot be opened at the next start
// fails its export's I/O: the clone, which the target's later writes
// left behind, is never served in its place.
func TestRecoverCutOverTargetGone(t *testing.T) {
	f := newFixture(t)
	path, _ := f.start("rec", 0)
	f.cutover("rec")
	if _, err := f.disk("rec").WriteAt(bytes.Repeat([]byte{0x77}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.close()
	if err := os.Rename(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	f.open()
	st := f.m.List()
	if len(st) != 1 || st[0].State != StateCutOver || !strings.Contains(st[0].Reason, "fails every request") {
		t.Fatalf("after a restart without the target: %+v, want cut over, saying the export fails", st)
	}
	d := f.disk("rec")
	if d == nil {
		t.Fatal("no Disk for the cut-over recovery: the export would serve the clone")
	}
	buf := make([]byte, 4096)
	if _, err := d.ReadAt(buf, 0); err == nil {
		t.Fatalf("a read with the target gone succeeded (%x...): the clone was served", buf[:4])
	}
	if _, err := d.WriteAt(buf, 0); err == nil {
		t.Fatal("a write with the target gone succeeded")
	}
	f.close()
	if err := os.Rename(path+".away", path); err != nil {
		t.Fatal(err)
	}
	f.open()
	if _, err := f.disk("rec").ReadAt(buf, 0); err != nil || buf[0] != 0x77 {
		t.Fatalf("with the target back: %v, %x; want the target's write", err, buf[:4])
	}
}
