package protect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/timeline"
)

const (
	kib  = 1 << 10
	mib  = 1 << 20
	size = 4 * mib
)

// fixture is a data directory with a protection manager, and a primary
// file holding data with holes.
type fixture struct {
	t       *testing.T
	dir     string
	primary string
	data    []byte // what the primary held at first
	svc     *catalog.Service
	m       *Manager
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir()}
	f.data = make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for off := 0; off < size; off += 256 * kib {
		if off/(256*kib)%3 != 2 { // every third 256 KiB stays a hole
			for i := off; i < off+256*kib; i++ {
				f.data[i] = byte(rng.Uint32())
			}
		}
	}
	f.primary = filepath.Join(f.dir, "prod.img")
	if err := os.WriteFile(f.primary, f.data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.open()
	t.Cleanup(f.close)
	return f
}

// open opens the data directory and the manager, as a daemon starts,
// and waits for the comparisons after an unclean stop.
func (f *fixture) open() {
	f.t.Helper()
	f.openNoWait()
	f.m.WaitResumed()
}

// openNoWait opens them as open does, and returns while the
// comparisons run.
func (f *fixture) openNoWait() {
	f.t.Helper()
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(f.dir, "data")})
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := Open(context.Background(), svc, Options{Dir: filepath.Join(f.dir, "data", "protected")})
	if err != nil {
		svc.Close()
		f.t.Fatal(err)
	}
	svc.SetRemoveCheck(m.RemoveCheck)
	svc.SetSettle(m.Settle)
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

// protect protects path as name, opened as the CLI opens it.
func (f *fixture) protect(name, path string, size int64) (*Status, error) {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.m.Protect(context.Background(), Request{Volume: name, Primary: path, File: file, Size: size})
}

// at reads the whole volume as of t.
func (f *fixture) at(name string, t int64) []byte {
	f.t.Helper()
	v := f.volume(name)
	view, err := f.svc.Timeline().ViewAt(v.ID, t)
	if err != nil {
		f.t.Fatal(err)
	}
	defer view.Close()
	buf := make([]byte, view.Size())
	if _, err := view.ReadAt(buf, 0); err != nil {
		f.t.Fatal(err)
	}
	return buf
}

// volume is the named volume's metadata, once the writes acknowledged
// on it are recorded (as the catalog reads it: see Manager.Settle; a
// settle that fails is for the test to check).
func (f *fixture) volume(name string) *timeline.Volume {
	f.t.Helper()
	if f.m != nil {
		f.m.Settle(name)
	}
	v, err := f.svc.Timeline().Volume(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// newest is the time of the volume's newest version.
func (f *fixture) newest(name string) int64 {
	f.t.Helper()
	return f.volume(name).Last
}

// versionsSince lists the volume's versions stamped after t0.
func (f *fixture) versionsSince(name string, t0 int64) []timeline.VersionInfo {
	f.t.Helper()
	log, err := f.svc.Timeline().Log(f.volume(name).ID, t0+1, f.newest(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return log
}

// newestIsPrimary says whether the volume's newest version reads as the
// primary file does.
func (f *fixture) newestIsPrimary(name string) bool {
	f.t.Helper()
	return bytes.Equal(f.at(name, f.newest(name)), f.primaryBytes())
}

func (f *fixture) primaryBytes() []byte {
	f.t.Helper()
	b, err := os.ReadFile(f.primary)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestProtectRecordsEveryWrite writes through the Disk at two instants:
// the primary holds the newest, each instant reads back as it was, and a
// zeroing reads as zeroes in both.
func TestProtectRecordsEveryWrite(t *testing.T) {
	f := newFixture(t)
	st, err := f.protect("prod", f.primary, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.State != StateProtected || st.Kind != KindFile {
		t.Fatalf("status %+v", st)
	}
	v, _ := f.svc.Timeline().Volume("prod")
	if v.Kind != timeline.KindProtected {
		t.Fatalf("volume kind %s", v.Kind)
	}
	t0 := f.newest("prod")
	d := f.m.Disk("prod")
	if d == nil || f.m.Disk("prod@latest") != nil {
		t.Fatal("the bare name is not served by a Disk, or an instant is")
	}

	want := bytes.Clone(f.data)
	// A, aligned and not: a partial block, across two blocks.
	write := func(p []byte, off int64) {
		t.Helper()
		if _, err := d.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(fill(0xaa, 64*kib), 0)
	write(fill(0xab, 5000), 64*kib-1000)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	tA, wantA := f.newest("prod"), bytes.Clone(want)

	write(fill(0xbb, 4*kib), 8*kib)
	write(fill(0xbc, 100), 2*mib+7)
	if err := d.WriteZeroes(1*mib, 128*kib); err != nil {
		t.Fatal(err)
	}
	clear(want[1*mib : 1*mib+128*kib])
	if err := d.Trim(3*mib+512, 1000); err != nil {
		t.Fatal(err)
	}
	clear(want[3*mib+512 : 3*mib+1512])
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	tB := f.newest("prod")

	if got := f.primaryBytes(); !bytes.Equal(got, want) {
		t.Error("the primary does not hold the newest writes")
	}
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("reading through the Disk: %v", err)
	}
	if !bytes.Equal(f.at("prod", tB), want) {
		t.Error("prod@latest differs from the primary")
	}
	if !bytes.Equal(f.at("prod", tA), wantA) {
		t.Error("prod as of the first flush does not read the first writes")
	}
	if !bytes.Equal(f.at("prod", t0), f.data) {
		t.Error("prod as of protect does not read the primary as it was")
	}
	if s := f.m.List(); len(s) != 1 || s[0].Writes != 6 || s[0].Flushes != 2 || s[0].Errors != 0 {
		t.Errorf("counters: %+v", s)
	}
	// The volume cannot be removed while protected.
	if err := f.svc.RemoveVolume(context.Background(), "prod", true); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("volume rm of a protected volume: %v", err)
	}
	// History is read-only.
	view, err := f.svc.OpenView("prod@latest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := view.WriteAt([]byte{1}, 0); !errors.Is(err, timeline.ErrReadOnly) {
		t.Errorf("a write to prod@latest: %v", err)
	}
	view.Close()
}

// TestProtectUnrecordedWriteFails: a write the timeline refuses is an
// error and never reaches the primary.
func TestProtectUnrecordedWriteFails(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	d.view.Close() // the store refuses every write now
	if _, err := d.WriteAt(fill(0xee, 4*kib), 0); err == nil {
		t.Fatal("a write the timeline could not record was acknowledged")
	}
	if err := d.WriteZeroes(0, 64*kib); err == nil {
		t.Fatal("a zeroing the timeline could not record was acknowledged")
	}
	if !bytes.Equal(f.primaryBytes(), f.data) {
		t.Error("the unrecorded write reached the primary")
	}
	v, _ := f.svc.Timeline().Volume("prod")
	head, err := f.svc.Timeline().Head(v.ID) // for the clean stop
	if err != nil {
		t.Fatal(err)
	}
	d.view = head
}

// TestProtectResumes: a restarted daemon serves the protection again; a
// clean stop needs no comparison, an unclean one records what the
// primary holds and the timeline does not.
func TestProtectResumes(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	if _, err := d.WriteAt(fill(0x11, 64*kib), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	f.close()
	f.open()
	versions := func() int64 {
		v, _ := f.svc.Timeline().Volume("prod")
		return v.Versions
	}
	before := versions()
	d = f.m.Disk("prod")
	if d == nil {
		t.Fatal("the protection is not served after a restart")
	}
	got := make([]byte, 64*kib)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, fill(0x11, 64*kib)) {
		t.Fatalf("after a restart: %v", err)
	}
	if _, err := d.WriteAt(fill(0x22, 4*kib), 128*kib); err != nil {
		t.Fatal(err)
	}
	f.close()

	// As after a crash: the record says unclean, and the primary took a
	// write the timeline never saw.
	f.unclean("prod")
	f.writePrimary(0x33, 4*kib, 1*mib)
	f.open()
	if f.m.Disk("prod") == nil {
		t.Fatal("not served after an unclean stop")
	}
	if !f.newestIsPrimary("prod") {
		t.Error("after an unclean stop the timeline's newest version differs from the primary")
	}
	t.Logf("versions: %d before, %d after", before, versions())

	// Unprotect keeps the volume and frees the primary.
	if _, err := f.m.Unprotect("prod"); err != nil {
		t.Fatal(err)
	}
	if f.m.Disk("prod") != nil {
		t.Error("served after unprotect")
	}
	if _, err := d.ReadAt(got, 0); !errors.Is(err, ErrEnded) {
		t.Errorf("I/O on an ended protection: %v", err)
	}
	if _, err := f.svc.Timeline().Volume("prod"); err != nil {
		t.Errorf("unprotect removed the volume: %v", err)
	}
	if _, err := f.protect("prod2", f.primary, 0); err != nil {
		t.Errorf("the primary is not free after unprotect: %v", err)
	}
	f.close()
	f.open()
	if s := f.m.List(); len(s) != 1 || s[0].Name != "prod2" || s[0].State != StateProtected {
		t.Errorf("after a restart: %+v, want prod2 protected only", s)
	}
}

// TestProtectBadInput: each refusal leaves nothing behind.
func TestProtectBadInput(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(f.dir, "other.img")
	if err := os.WriteFile(other, fill(0x44, 1*mib), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(f.dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(f.dir, "link.img")
	if err := os.Link(f.primary, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what, name, path string
		size             int64
		want             error
	}{
		{"the primary of a running protection", "b", f.primary, 0, catalog.ErrConflict},
		{"the same primary by another name", "b", link, 0, catalog.ErrConflict},
		{"a protected name", "prod", other, 0, catalog.ErrExists},
		{"a bad name", "a/b", other, 0, catalog.ErrBadName},
		{"an empty file without --size", "b", empty, 0, catalog.ErrInvalid},
	} {
		if _, err := f.protect(c.name, c.path, c.size); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	// A volume that exists, not protected.
	if _, err := f.svc.CreateVolume(context.Background(), catalog.CreateRequest{Volume: "taken", Size: mib}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.protect("taken", other, 0); !errors.Is(err, catalog.ErrExists) {
		t.Errorf("a taken volume name: %v", err)
	}
	if _, err := f.m.Protect(context.Background(), Request{Volume: "b", Primary: other}); !errors.Is(err, catalog.ErrInvalid) {
		t.Errorf("a primary not passed open: %v", err)
	}
	src, err := catalog.OpenSource(other)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := f.svc.Import(context.Background(), catalog.ImportRequest{Volume: "prod", Source: other, File: src}, nil); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("an import into the protected volume: %v", err)
	}
	if _, err := f.m.Unprotect("nosuch"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("unprotect of nothing: %v", err)
	}
	vols, _ := f.svc.Volumes(context.Background())
	if len(vols) != 2 {
		t.Errorf("volumes after the refusals: %+v", vols)
	}
	// The running protection's record and write-intent bitmap, nothing
	// of the refused ones.
	recs, _ := os.ReadDir(filepath.Join(f.dir, "data", "protected"))
	var names []string
	for _, e := range recs {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "prod.intent" || names[1] != "prod.json" {
		t.Errorf("files after the refusals: %v, want prod.intent and prod.json", names)
	}
	if fi, _ := os.Stat(empty); fi.Size() != 0 {
		t.Error("a refused protection changed the empty file")
	}
	if !bytes.Equal(f.primaryBytes(), f.data) {
		t.Error("a refused protection changed the running one's primary")
	}
	// An empty file with --size is grown and protected.
	if st, err := f.protect("grown", empty, 2*mib); err != nil || st.Size != 2*mib {
		t.Fatalf("an empty file with --size: %+v, %v", st, err)
	}
	if fi, _ := os.Stat(empty); fi.Size() != 2*mib {
		t.Errorf("the empty file has %d bytes, want 2 MiB", fi.Size())
	}
}

// TestProtectConcurrentWritesAgree: writers on many connections that
// overlap, partial blocks and zeroing included, leave the primary and
// the timeline's newest version equal.
func TestProtectConcurrentWritesAgree(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	// Widen the window between the timeline and the primary, where an
	// overlapping write could otherwise slip in between.
	d.between = func() { time.Sleep(200 * time.Microsecond) }
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range 100 {
				off := rng.Int64N(512*kib - 80*kib) // all in the first blocks: they collide
				n := 1 + rng.Int64N(80*kib)
				var err error
				if i%10 == 9 {
					err = d.WriteZeroes(off, n)
				} else {
					_, err = d.WriteAt(fill(byte(w*100+i), int(n)), off)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if !f.newestIsPrimary("prod") {
		t.Error("after concurrent writes the timeline's newest version differs from the primary")
	}
}

// TestProtectRecordsWritesTogether: writes that arrive while others are
// being recorded are recorded together (one pack write and one commit),
// and still each as a version of its own, in an order that keeps every
// writer's own: going through the history version by version, each
// changes one writer's range, to that writer's next bytes, and nothing
// else. Writers share blocks two by two (those take turns), and the
// newest version equals the primary.
func TestProtectRecordsWritesTogether(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	// A slow recording lets the writes behind it queue.
	d.rec.beforeRecord = func() { time.Sleep(time.Millisecond) }
	t0 := f.newest("prod")
	const writers, rounds = 12, 12
	// Writer g's 4 KiB in block g%6 (64 KiB blocks): two writers a block.
	rangeOf := func(g int) int64 { return int64(g%6)*64*kib + int64(g/6)*20*kib + 512 }
	payload := func(g, i int) []byte {
		b := make([]byte, 4*kib)
		rng := rand.New(rand.NewPCG(uint64(g), uint64(i)))
		for k := range b {
			b[k] = byte(rng.Uint32())
		}
		return b
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if _, err := d.WriteAt(payload(g, i), rangeOf(g)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if d.rec.grouped.Load() == 0 {
		t.Fatal("no writes were recorded together")
	}
	if s := f.m.List(); len(s) != 1 || s[0].Grouped != d.rec.grouped.Load() || s[0].Writes != writers*rounds {
		t.Errorf("status %+v: want %d grouped writes of %d", s, d.rec.grouped.Load(), writers*rounds)
	}
	if !f.newestIsPrimary("prod") {
		t.Fatal("the newest version differs from the primary")
	}
	log := f.versionsSince("prod", t0)
	if len(log) != writers*rounds {
		t.Fatalf("%d versions for %d writes", len(log), writers*rounds)
	}
	prev, next := f.at("prod", t0), make([]int, writers)
	for _, ver := range log {
		cur := f.at("prod", ver.Time)
		changed := -1
		for g := range writers {
			r := rangeOf(g)
			if !bytes.Equal(cur[r:r+4*kib], prev[r:r+4*kib]) {
				if changed >= 0 {
					t.Fatalf("version %s changed the ranges of writers %d and %d", timeline.FormatTime(ver.Time), changed, g)
				}
				changed = g
			}
		}
		if changed < 0 {
			t.Fatalf("version %s changed no writer's range", timeline.FormatTime(ver.Time))
		}
		r := rangeOf(changed)
		if !bytes.Equal(cur[r:r+4*kib], payload(changed, next[changed])) {
			t.Fatalf("version %s holds writer %d's bytes out of order", timeline.FormatTime(ver.Time), changed)
		}
		outside := bytes.Clone(cur)
		copy(outside[r:r+4*kib], prev[r:r+4*kib])
		if !bytes.Equal(outside, prev) {
			t.Fatalf("version %s changed bytes outside writer %d's range", timeline.FormatTime(ver.Time), changed)
		}
		next[changed]++
		prev = cur
	}
}

// TestProtectWholeBlocksRecordedAlone: writes of whole blocks do not
// wait for a turn in a group (their hashing and compression take a core
// each); each is still a version of its own, on the primary too.
func TestProtectWholeBlocksRecordedAlone(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	d.rec.beforeRecord = func() { time.Sleep(time.Millisecond) }
	t0 := f.newest("prod")
	const writers, rounds = 4, 10
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if _, err := d.WriteAt(fill(byte(10*g+i+1), 64*kib), int64(g)*128*kib); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := d.rec.grouped.Load(); n != 0 {
		t.Errorf("%d whole-block writes were recorded in groups", n)
	}
	if log := f.versionsSince("prod", t0); len(log) != writers*rounds {
		t.Errorf("%d versions for %d writes", len(log), writers*rounds)
	}
	if !f.newestIsPrimary("prod") {
		t.Error("the newest version differs from the primary")
	}
}

// TestProtectRecordingThatFailsIsComparedAtRestart: small writes are
// recorded behind their replies. When the store fails under writes
// queued to be recorded, each writer's next write is an error and never
// reaches the primary, and so is every FLUSH; the protection shows as
// failed, and reads of its history say why. The primary holds every
// acknowledged write, and the next start compares it with the timeline
// and records what the timeline lacks: no acknowledged write is missing
// from history.
func TestProtectRecordingThatFailsIsComparedAtRestart(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	view := d.view
	var once sync.Once
	failed := make(chan struct{})
	// Slow recordings let writes queue; once groups have formed, the
	// store refuses every write while writes wait in the queue.
	d.rec.beforeRecord = func() {
		time.Sleep(time.Millisecond)
		if d.rec.grouped.Load() > 20 {
			once.Do(func() { view.Close(); close(failed) })
		}
	}
	const writers = 8
	acked := make([][]byte, writers) // each writer's last acknowledged bytes
	failures := make([]int, writers)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(g)*64*kib + 4*kib
			for i := 0; ; i++ {
				p := fill(byte(16*g+i%16+1), 4*kib)
				if _, err := d.WriteAt(p, off); err != nil {
					failures[g]++
					select {
					case <-failed:
						return
					default:
						t.Errorf("writer %d: %v before the store failed", g, err)
						return
					}
				}
				acked[g] = p
			}
		}()
	}
	wg.Wait()
	if err := d.Flush(); err == nil {
		t.Error("a FLUSH after the recording failed succeeded")
	}
	if s := f.m.List(); len(s) != 1 || s[0].State != StateFailed || !strings.Contains(s[0].Reason, "restart") {
		t.Errorf("status %+v: want failed, saying to restart", s)
	}
	if _, err := f.svc.OpenView("prod@latest"); err == nil || !strings.Contains(err.Error(), "not complete") {
		t.Errorf("opening prod@latest after the recording failed: %v", err)
	}
	if _, err := f.m.Unprotect("prod"); !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "restart") {
		t.Errorf("unprotect after the recording failed: %v", err)
	}
	primary := f.primaryBytes()
	for g := range writers {
		off := int64(g)*64*kib + 4*kib
		if acked[g] == nil {
			t.Fatalf("writer %d: no write acknowledged before the store failed", g)
		}
		if !bytes.Equal(primary[off:off+4*kib], acked[g]) {
			t.Errorf("writer %d: the primary does not hold the last acknowledged write", g)
		}
		if failures[g] != 1 {
			t.Errorf("writer %d: %d failures", g, failures[g])
		}
	}
	// The stop is unclean (its FLUSH fails too); the next start compares.
	if err := f.m.Close(); err == nil {
		t.Error("the stop after the recording failed reported no error")
	}
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	f.m, f.svc = nil, nil
	f.open()
	if !f.newestIsPrimary("prod") {
		t.Fatal("after the restart, the newest version differs from the primary")
	}
	if s := f.m.List(); len(s) != 1 || s[0].State != StateProtected {
		t.Errorf("status after the restart %+v: want protected", s)
	}
}

// TestProtectRestartChecksPrimary: a restarted daemon reopens the primary
// by its path only if it is still the file protection started with; a
// file put in its place is not served nor written, and the protection
// shows as failed until unprotect.
func TestProtectRestartChecksPrimary(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	f.close()
	other := filepath.Join(f.dir, "other.img")
	otherData := fill(0x77, size)
	if err := os.WriteFile(other, otherData, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, f.primary); err != nil {
		t.Fatal(err)
	}
	f.open()
	if f.m.Disk("prod") != nil {
		t.Fatal("a file put in the primary's place is served")
	}
	s := f.m.List()
	if len(s) != 1 || s[0].State != StateFailed || !bytes.Contains([]byte(s[0].Reason), []byte("no longer")) {
		t.Fatalf("status: %+v, want failed because the primary is no longer the same file", s)
	}
	if !bytes.Equal(f.primaryBytes(), otherData) {
		t.Error("the file put in the primary's place was written")
	}
	if !bytes.Equal(f.at("prod", f.newest("prod")), f.data) {
		t.Error("the volume's history changed")
	}
	if err := f.svc.RemoveVolume(context.Background(), "prod", true); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("volume rm of a failed protection's volume: %v", err)
	}
	if _, err := f.m.Unprotect("prod"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.RemoveVolume(context.Background(), "prod", false); err != nil {
		t.Errorf("volume rm after unprotect: %v", err)
	}
}

// TestProtectComparesMarkedRegionsOnly: after an unclean stop the next
// start compares only the regions the write-intent bitmap marks: those
// with a write not flushed. A region whose writes were all flushed is
// cleared and not read again.
func TestProtectComparesMarkedRegionsOnly(t *testing.T) {
	oldRegion, oldEvery := intentRegion, intentClearEvery
	intentRegion, intentClearEvery = 1*mib, 0
	defer func() { intentRegion, intentClearEvery = oldRegion, oldEvery }()
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	intent := filepath.Join(f.dir, "data", "protected", "prod.intent")
	marked := func() []timeline.Range {
		t.Helper()
		rs, ok, err := loadIntent(intent, size)
		if err != nil || !ok {
			t.Fatalf("the bitmap: ok %v, %v", ok, err)
		}
		return rs
	}
	// Region 1: written and flushed, so cleared.
	if _, err := d.WriteAt(fill(0x11, 4*kib), 1*mib); err != nil {
		t.Fatal(err)
	}
	if got := marked(); len(got) != 1 || got[0] != (timeline.Range{Offset: 1 * mib, Length: 1 * mib}) {
		t.Fatalf("marked after a write at 1 MiB: %v, want that region", got)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(marked()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still marked after a flush: %v", marked())
		}
		if err := d.Flush(); err != nil { // a later flush clears what the first settled
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Region 2: written, not flushed; the daemon dies here.
	if _, err := d.WriteAt(fill(0x22, 4*kib), 2*mib); err != nil {
		t.Fatal(err)
	}
	atCrash, err := os.ReadFile(intent)
	if err != nil {
		t.Fatal(err)
	}
	f.close()
	if err := os.WriteFile(intent, atCrash, 0o600); err != nil {
		t.Fatal(err)
	}
	f.unclean("prod")
	// The primary kept a write in region 2 that the timeline lost, and
	// (outside any write of the daemon, which nothing can see) one in
	// region 3.
	oldRegion3 := f.primaryBytes()[3*mib : 3*mib+4*kib] // as the timeline has it
	f.writePrimary(0x33, 4*kib, 2*mib+8*kib)
	f.writePrimary(0x44, 4*kib, 3*mib)

	f.open()
	if f.m.Disk("prod") == nil {
		t.Fatal("not served after an unclean stop")
	}
	newest := f.at("prod", f.newest("prod"))
	primary := f.primaryBytes()
	if !bytes.Equal(newest[2*mib:3*mib], primary[2*mib:3*mib]) {
		t.Error("the marked region differs from the primary after the comparison")
	}
	if !bytes.Equal(newest[3*mib:3*mib+4*kib], oldRegion3) {
		t.Error("an unmarked region was read: the comparison was not limited to the marked ones")
	}
	if got := marked(); len(got) != 0 {
		t.Errorf("a fresh start's bitmap marks %v", got)
	}
}

// unclean makes the protection's record, which a clean stop wrote, say
// that the daemon stopped uncleanly: the next start compares.
func (f *fixture) unclean(name string) {
	f.t.Helper()
	rec := filepath.Join(f.dir, "data", "protected", name+".json")
	b, err := os.ReadFile(rec)
	if err != nil {
		f.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"clean": true`)) {
		f.t.Fatalf("a clean stop was not recorded: %s", b)
	}
	if err := os.WriteFile(rec, bytes.Replace(b, []byte(`"clean": true`), []byte(`"clean": false`), 1), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// writePrimary writes n bytes of b at off into the primary, behind the
// daemon's back (as a write the timeline lost).
func (f *fixture) writePrimary(b byte, n, off int64) {
	f.t.Helper()
	pf, err := os.OpenFile(f.primary, os.O_RDWR, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer pf.Close()
	if _, err := pf.WriteAt(fill(b, int(n)), off); err != nil {
		f.t.Fatal(err)
	}
}

// TestProtectResumesInBackground: after an unclean stop, the comparison
// of the primary with the timeline runs after Open returns. Meanwhile
// the protection shows as resuming, is not served (not even its newest
// version in the Disk's place), and cannot be ended or removed; once
// the comparison ends it is served, and the history holds what the
// primary kept. A stop during the comparison interrupts it, and the
// next start compares again.
func TestProtectResumesInBackground(t *testing.T) {
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	f.close()
	noBitmap := func() { os.Remove(intentPath(filepath.Join(f.dir, "data", "protected"), "prod")) } // all is compared
	f.unclean("prod")
	noBitmap()
	f.writePrimary(0x5e, 8*kib, 1*mib) // what the primary kept and the timeline lost

	started, release := make(chan struct{}, 1), make(chan struct{})
	beforeCompare = func(ctx context.Context, name string) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	defer func() { beforeCompare = nil }()
	opened := make(chan struct{})
	go func() { f.openNoWait(); close(opened) }()
	select {
	case <-opened:
	case <-time.After(20 * time.Second):
		close(release)
		t.Fatal("Open waits for the comparison")
	}
	<-started
	s := f.m.List()
	if len(s) != 1 || s[0].State != StateResuming || !strings.Contains(s[0].Reason, "unclean stop") {
		t.Errorf("status while comparing: %+v, want resuming after an unclean stop", s)
	}
	if f.m.Disk("prod") != nil {
		t.Error("served before the comparison ended")
	}
	if d, err := f.m.Serve("prod"); d != nil || !errors.Is(err, catalog.ErrConflict) || !strings.Contains(err.Error(), "resuming") {
		t.Errorf("Serve(prod) while comparing: %v, %v; want a conflict that says resuming", d, err)
	}
	if d, err := f.m.Serve("prod@latest"); d != nil || err != nil {
		t.Errorf("Serve(prod@latest): %v, %v; history is not the Disk", d, err)
	}
	if _, err := f.m.Unprotect("prod"); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("unprotect while comparing: %v, want a conflict", err)
	}
	if err := f.svc.RemoveVolume(context.Background(), "prod", true); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("volume rm while comparing: %v, want a conflict", err)
	}
	close(release)
	f.m.WaitResumed()
	if d, err := f.m.Serve("prod"); d == nil || err != nil || f.m.Disk("prod") != d {
		t.Fatalf("not served once the comparison ended: %v, %v", d, err)
	}
	if s := f.m.List(); len(s) != 1 || s[0].State != StateProtected || s[0].CompareBytes != 0 {
		t.Errorf("status after the comparison: %+v", s)
	}
	if !f.newestIsPrimary("prod") {
		t.Error("the newest version differs from the primary after the comparison")
	}

	// A stop during the comparison: it ends, nothing is served or
	// recorded clean, and the next start compares again.
	f.close()
	f.unclean("prod")
	noBitmap()
	f.writePrimary(0x6f, 8*kib, 2*mib)
	release = make(chan struct{}) // never closed: only the stop ends the wait
	f.openNoWait()
	<-started
	closed := make(chan struct{})
	go func() { f.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waits for a comparison to end by itself")
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "data", "protected", "prod.json"))
	if err != nil || !bytes.Contains(b, []byte(`"clean": false`)) || bytes.Contains(b, []byte(StateFailed)) {
		t.Fatalf("the record after a stop during the comparison: %s, %v; want unclean, not failed", b, err)
	}
	beforeCompare = nil
	f.open()
	if f.m.Disk("prod") == nil {
		t.Fatal("not served after the comparison the stop interrupted ran again")
	}
	if !f.newestIsPrimary("prod") {
		t.Error("the newest version differs from the primary after the second comparison")
	}
}

// TestProtectSmallWritesRecordedBehind: a small write is recorded behind
// its reply, at the time it arrived: a version no later than its reply,
// which reading the history (the catalog settles the queue first) and a
// FLUSH find. While the store refuses writes for want of space, the
// writes queued stay queued, every new write, FLUSH and read of the
// history is an error, and none of them reaches the primary; once it
// takes writes again, the queue is recorded at the writes' own times.
func TestProtectSmallWritesRecordedBehind(t *testing.T) {
	old := stallRetry
	stallRetry = 5 * time.Millisecond // the recorder takes it when made
	t.Cleanup(func() { stallRetry = old })
	f := newFixture(t)
	if _, err := f.protect("prod", f.primary, 0); err != nil {
		t.Fatal(err)
	}
	d := f.m.Disk("prod")
	want := bytes.Clone(f.data)
	var replies []int64
	write := func(b byte, off int64) error {
		t.Helper()
		if _, err := d.WriteAt(fill(b, 4*kib), off); err != nil {
			return err
		}
		replies = append(replies, time.Now().UnixNano())
		copy(want[off:], fill(b, 4*kib))
		return nil
	}
	t0 := f.newest("prod")
	if err := write(0x11, 4*kib); err != nil {
		t.Fatal(err)
	}
	view, err := f.svc.OpenView("prod@latest") // settles: no FLUSH needed
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	view.ReadAt(got, 0)
	view.Close()
	if !bytes.Equal(got, want) {
		t.Fatal("prod@latest right after a small write's reply does not read it")
	}
	if log := f.versionsSince("prod", t0); len(log) != 1 || log[0].Time > replies[0] {
		t.Fatalf("versions %+v: want one, stamped before its reply at %d", log, replies[0])
	}

	// The store refuses the recording for want of space. The recording
	// waits until the three writes are queued: a write that comes once
	// the queue waits for space is refused.
	var stalled atomic.Bool
	stalled.Store(true)
	queued := make(chan struct{})
	d.rec.beforeRecord = func() { <-queued }
	attempts := make(chan struct{}, 1000)
	d.rec.record = func(ws []timeline.Write) error {
		if stalled.Load() {
			select {
			case attempts <- struct{}{}:
			default:
			}
			return fmt.Errorf("pack: %w", syscall.ENOSPC)
		}
		return d.view.WriteMany(ws)
	}
	t1 := f.newest("prod")
	for i := range 3 {
		if err := write(byte(0x21+i), int64(i)*64*kib+8*kib); err != nil {
			t.Fatal(err)
		}
	}
	close(queued)
	<-attempts
	<-attempts // tried at least twice: it waits
	before := f.primaryBytes()
	if err := write(0x31, 5*64*kib); err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a write while the queue waits for space: %v, want ENOSPC", err)
	}
	if !bytes.Equal(f.primaryBytes(), before) {
		t.Error("a write refused while the queue waits for space reached the primary")
	}
	if err := d.Flush(); err == nil {
		t.Error("a FLUSH while the queue waits for space succeeded")
	}
	if _, err := f.svc.OpenView("prod@latest"); !errors.Is(err, catalog.ErrNoSpace) {
		t.Errorf("prod@latest while the queue waits for space: %v, want no space", err)
	}
	if s := f.m.List(); len(s) != 1 || !strings.Contains(s[0].Reason, "3 acknowledged writes wait") {
		t.Errorf("status while the queue waits for space: %+v", s)
	}
	if _, err := f.m.Unprotect("prod"); !errors.Is(err, catalog.ErrConflict) || f.m.Disk("prod") == nil {
		t.Errorf("unprotect while acknowledged writes wait to be recorded: %v", err)
	}
	stalled.Store(false)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	log := f.versionsSince("prod", t1)
	if len(log) != 3 {
		t.Fatalf("%d versions after the store took writes again, want 3", len(log))
	}
	for i, v := range log {
		if v.Time > replies[1+i] {
			t.Errorf("version %d stamped at %d, after its reply at %d", i, v.Time, replies[1+i])
		}
	}
	if !f.newestIsPrimary("prod") || !bytes.Equal(f.primaryBytes(), want) {
		t.Error("the newest version, the primary and the acknowledged writes differ")
	}
}
