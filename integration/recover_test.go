package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Instant recovery (`rewind recover`): a workload runs from an instant
// served at once while a copier hydrates the target, then cuts over.

// cutoverTimeout bounds a cutover once the bandwidth limit is lifted, in
// seconds: what is left to copy is a few MiB.
const cutoverTimeout = "120"

// recoveryStatus is one row of `rewind --json recover status`.
type recoveryStatus struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Target string `json:"target"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Total  int64  `json:"total_bytes"`
	Done   int64  `json:"done_bytes"`
	Copied int64  `json:"copied_bytes"`
	Limit  int64  `json:"bwlimit"`
}

// recoveries lists every recovery of the daemon on rw's data directory.
func recoveries(t *testing.T, rw *rewind) []recoveryStatus {
	t.Helper()
	var all []recoveryStatus
	mustJSON(t, rw.MustRun("--json", "recover", "status"), &all)
	return all
}

// recoveryOf returns the status of the recovery of volume name.
func recoveryOf(t *testing.T, rw *rewind, name string) recoveryStatus {
	t.Helper()
	var all []recoveryStatus
	mustJSON(t, rw.MustRun("--json", "recover", "status", name), &all)
	if len(all) != 1 || all[0].Name != name {
		t.Fatalf("recover status %s: %+v", name, all)
	}
	return all[0]
}

// cutOver reads a recovery's export while no workload writes it,
// lifts the bandwidth limit and cuts over. It returns the status and the
// sha256 of what the export held: the target must hold exactly that
// (after cutover the export reads the target itself, so it proves
// nothing). The clone's history must still read it as NAME@latest.
func cutOver(t *testing.T, rw *rewind, srv *server, name string) (recoveryStatus, string) {
	t.Helper()
	want := exportSHA(t, srv.URI(name))
	rw.MustRun("recover", "bwlimit", name, "0")
	runCutover(t, rw, name)
	st := recoveryOf(t, rw, name)
	if st.State != "cut over" || st.Done != st.Total {
		t.Fatalf("after cutover: %+v", st)
	}
	if got := exportSHA(t, srv.URI(name+"@latest")); got != want {
		t.Errorf("after cutover %s@latest reads sha256 %s, want the clone as it was, %s", name, got[:12], want[:12])
	}
	return st, want
}

// runCutover runs `rewind recover cutover NAME`. A cutover that never
// comes (a write never finished) fails here rather than at the test
// binary's deadline.
func runCutover(t *testing.T, rw *rewind, name string) {
	t.Helper()
	res := runCmd(t, nil, rw.Env, requireTool(t, "timeout", "coreutils"),
		append([]string{cutoverTimeout, rw.Bin}, rw.args([]string{"recover", "cutover", name})...)...)
	if res.Code != 0 {
		t.Fatalf("rewind recover cutover %s (at most %s s): %s", name, cutoverTimeout, res)
	}
}

// exportSHA returns the sha256 of an NBD export, read with nbdcopy.
func exportSHA(t *testing.T, uri string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "export.img")
	mustRunCmd(t, requireTool(t, "nbdcopy", "libnbd-bin"), uri, out)
	return sha256File(t, out)
}

// sha256Prefix returns the sha256 of the first n bytes of a file, failing
// the test when it is shorter.
func sha256Prefix(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if got, err := io.CopyN(h, f, n); err != nil {
		t.Fatalf("sha256 of the first %d bytes of %s: %d read: %v", n, path, got, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// requireFilled fails the test unless path holds n bytes of b at off.
func requireFilled(t *testing.T, path string, off, n int64, b byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, n)
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{b}, int(n))) {
		t.Errorf("%s at %d+%d does not hold 0x%02x (first bytes % x)", path, off, n, b, got[:16])
	}
}

// qemuIO runs qemu-io commands on an NBD export and fails the test on
// any failure, a failed pattern check included.
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	res := runCmd(t, nil, nil, requireTool(t, "qemu-io", "qemu-utils"), append(args, uri)...)
	if res.Code != 0 || strings.Contains(res.Stdout, "Pattern verification failed") || strings.Contains(res.Stdout+res.Stderr, "failed") {
		t.Fatalf("qemu-io %v on %s: %s", cmds, uri, res)
	}
}

// TestRecoverVMDuringHydration boots a VM from a recovering export while
// a bandwidth-limited copy runs, cuts over, and finds on the target
// exactly what the export holds, the guest's writes and a write after
// cutover included; the source's history is unchanged.
func TestRecoverVMDuringHydration(t *testing.T) {
	fx := buildVMFixture(t)
	rw := newRewind(t)
	root := fx.CopyRoot(t)
	const at = "2026-11-25T12:00:00Z"
	rw.MustRun("import", "vm", root, "--at", at)
	srv := rw.Serve(serveOptions{})
	target := filepath.Join(t.TempDir(), "prod.img")
	// The image holds several MiB of data: at 16 KiB/s the copy lasts
	// minutes, longer than any boot that vmBootTimeout lets pass.
	rw.MustRun("recover", "vm@"+at, "--to", target, "--as", "vm-rec", "--bwlimit", "16KiB")

	boot := bootVM(t, fx, vmDrive(srv.URI("vm-rec")))
	if boot.Boot != 1 {
		t.Fatalf("first boot printed boot=%d", boot.Boot)
	}
	st := recoveryOf(t, rw, "vm-rec")
	if st.State != "copying" || st.Done >= st.Total {
		t.Fatalf("the copy did not overlap the boot (%v): %+v", boot.Duration, st)
	}
	t.Logf("booted in %v while the copy was at %d of %d bytes", boot.Duration, st.Done, st.Total)

	st, want := cutOver(t, rw, srv, "vm-rec")
	if fi, err := os.Stat(target); err != nil || fi.Size() != st.Total {
		t.Fatalf("target: %v, %v; want %d bytes", fi, err, st.Total)
	}
	if got := sha256Prefix(t, target, st.Total); got != want {
		t.Fatalf("target sha256 %s, export %s", got[:12], want[:12])
	}
	if got := string(debugfsCat(t, target, "/written-by-guest")); got != vmWritten(1) {
		t.Fatalf("the target holds %q, want the guest's write %q", got, vmWritten(1))
	}
	fsckClean(t, target)

	// After cutover the export writes the target directly.
	qemuIO(t, srv.URI("vm-rec"), "write -P 0x5a 63M 64k", "flush")
	requireFilled(t, target, 63<<20, 64<<10, 0x5a)

	// The source's history never changed.
	for _, spec := range []string{"vm@" + at, "vm@latest"} {
		if exportSHA(t, srv.URI(spec)) != sha256File(t, root) {
			t.Errorf("%s differs from the imported image", spec)
		}
	}
}

// TestRecoverPostgres: PostgreSQL starts from a recovering export of an
// instant taken while it ran, has every row committed before it, takes
// a new row; after cutover the target alone starts PostgreSQL with the
// new row too.
func TestRecoverPostgres(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil { // postgres walks into it
			t.Fatal(err)
		}
	}
	rw := newRewind(t)
	img := makeExt4(t, 256<<20, map[string][]byte{"README": []byte("a disk for PostgreSQL\n")})
	rw.MustRun("import", "db", img)
	rw.MustRun("clone", "db@latest", "db-live")
	srv := rw.Serve(serveOptions{})

	// PostgreSQL runs on the clone; the instant is taken after a commit,
	// while it runs.
	mnt := filepath.Join(base, "live")
	live := attachExport(t, srv.URI("db-live"), mnt)
	mustRunCmd(t, "install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", filepath.Join(mnt, "pg"))
	pg := newPostgres(t, base, filepath.Join(mnt, "pg", "data"))
	pg.initdb()
	pg.start()
	pg.sql("CREATE TABLE t (id int PRIMARY KEY, note text NOT NULL)")
	pg.sql("INSERT INTO t SELECT g, 'committed' FROM generate_series(1, 1000) g")
	instant := time.Now().UTC().Format(time.RFC3339Nano)
	pg.sql("INSERT INTO t VALUES (1001, 'after the instant')")
	pg.stop()
	live.detach()

	target := filepath.Join(base, "prod.img")
	// PostgreSQL's files are tens of MiB: at 1 MiB/s the copy runs while
	// PostgreSQL starts from the export.
	rw.MustRun("recover", "db-live@"+instant, "--to", target, "--as", "db-rec", "--bwlimit", "1MiB")
	mnt = filepath.Join(base, "rec")
	rec := attachExport(t, srv.URI("db-rec"), mnt)
	pg = newPostgres(t, base, filepath.Join(mnt, "pg", "data"))
	pg.start()
	if got := pg.sql("SELECT count(*), count(*) FILTER (WHERE note = 'committed'), max(id) FROM t"); got != "1000|1000|1000" {
		t.Fatalf("from the recovering export: count, committed, max id = %s, want 1000|1000|1000", got)
	}
	if st := recoveryOf(t, rw, "db-rec"); st.State != "copying" {
		t.Fatalf("the copy was over before PostgreSQL ran from the export: %+v", st)
	} else {
		t.Logf("PostgreSQL ran from the export while the copy was at %d of %d bytes", st.Done, st.Total)
	}
	pg.sql("INSERT INTO t VALUES (2000, 'written during the recovery')")
	pg.stop()
	rec.detach()

	if _, want := cutOver(t, rw, srv, "db-rec"); sha256File(t, target) != want {
		t.Fatal("the target differs from the export")
	}
	fsckClean(t, target)
	mnt = filepath.Join(base, "prod")
	prod := attachFile(t, target, mnt)
	pg = newPostgres(t, base, filepath.Join(mnt, "pg", "data"))
	pg.start()
	if got := pg.sql("SELECT count(*), count(*) FILTER (WHERE note = 'committed'), string_agg(id::text, ',') FILTER (WHERE id > 1000) FROM t"); got != "1001|1000|2000" {
		t.Fatalf("from the target alone: count, committed, ids above 1000 = %s, want 1001|1000|2000", got)
	}
	pg.stop()
	prod.detach()
}

// TestRecoverResumesAfterKill: a daemon killed with SIGKILL in the
// middle of a copy resumes it from its saved progress after a restart;
// a write flushed before the kill reaches the target.
func TestRecoverResumesAfterKill(t *testing.T) {
	rw := newRewind(t)
	const size = 32 << 20
	importRandom(t, rw, 7, size)
	srv := rw.Serve(serveOptions{})
	target := filepath.Join(t.TempDir(), "prod.img")
	rw.MustRun("recover", "v@latest", "--to", target, "--as", "rec", "--bwlimit", "1MiB")

	// Some way into the copy:
	waitUntil(t, time.Minute, "4 MiB copied", func() error {
		if st := recoveryOf(t, rw, "rec"); st.Done < 4<<20 {
			return fmt.Errorf("%d bytes done", st.Done)
		}
		return nil
	})
	// A write over copied blocks, flushed: the next save of progress
	// must keep it dirty. The write after it moves the saved watermark
	// past it, so that a restart does not find it again in the clone's
	// history: only the saved bitmap can tell.
	qemuIO(t, srv.URI("rec"), "write -P 0xcd 0 64k", "flush", "write -P 0xcc 2M 64k", "flush")
	progress := filepath.Join(rw.Data, "recoveries", "rec.progress")
	saved, err := os.ReadFile(progress)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Minute, "a save of progress", func() error {
		if now, err := os.ReadFile(progress); err != nil || bytes.Equal(now, saved) {
			return fmt.Errorf("unchanged (%v)", err)
		}
		return nil
	})
	// Writes after that save, over copied blocks and ahead of the copy,
	// flushed; then SIGKILL.
	qemuIO(t, srv.URI("rec"), "write -P 0xce 1M 64k", "write -P 0xcf 30M 64k", "flush")
	srv.cmd.Process.Kill()
	<-srv.exited

	srv = rw.Serve(serveOptions{})
	st := recoveryOf(t, rw, "rec")
	if st.State != "copying" || st.Done == 0 || st.Done >= st.Total || st.Limit != 1<<20 {
		t.Fatalf("after the restart, want the copy resumed from its saved progress at 1 MiB/s: %+v", st)
	}
	t.Logf("after the restart: %d of %d bytes done", st.Done, st.Total)
	qemuIO(t, srv.URI("rec"), "read -P 0xcd 0 64k", "read -P 0xce 1M 64k", "read -P 0xcc 2M 64k", "read -P 0xcf 30M 64k")
	st, want := cutOver(t, rw, srv, "rec")
	t.Logf("the restarted daemon copied %d bytes", st.Copied)
	if st.Copied >= st.Total {
		t.Errorf("the restarted daemon copied %d bytes of %d: it started over", st.Copied, st.Total)
	}
	if got := sha256Prefix(t, target, size); got != want {
		t.Fatalf("target sha256 %s, export %s", got[:12], want[:12])
	}
	requireFilled(t, target, 0, 64<<10, 0xcd)
	requireFilled(t, target, 1<<20, 64<<10, 0xce)
	requireFilled(t, target, 2<<20, 64<<10, 0xcc)
	requireFilled(t, target, 30<<20, 64<<10, 0xcf)

	// A daemon restarted after the cutover serves the target again.
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d after SIGTERM", code)
	}
	srv = rw.Serve(serveOptions{})
	if st := recoveryOf(t, rw, "rec"); st.State != "cut over" {
		t.Fatalf("after a restart: %+v, want cut over", st)
	}
	qemuIO(t, srv.URI("rec"), "read -P 0xcf 30M 64k", "write -P 0x77 31M 64k", "flush")
	requireFilled(t, target, 31<<20, 64<<10, 0x77)
}

// TestRecoverToNBDTarget hydrates a file that qemu-nbd serves, full of
// 0xff: the volume's holes must be written as zeroes there.
func TestRecoverToNBDTarget(t *testing.T) {
	qemuNBD := requireTool(t, "qemu-nbd", "qemu-utils")
	rw := newRewind(t)
	const size = 16 << 20
	img := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, size) // data in the first and third quarters, holes elsewhere
	copy(data, randomBytes(8, size/4))
	copy(data[size/2:], randomBytes(9, size/4))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "v", img)
	requireTool(t, "fusermount3", "fuse3")
	tree := filepath.Join(t.TempDir(), "tree")
	srv := rw.Serve(serveOptions{HTTP: true, Mount: tree})

	file := filepath.Join(t.TempDir(), "prod.img")
	if err := os.WriteFile(file, bytes.Repeat([]byte{0xff}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startDaemon(t, daemonSpec{Path: qemuNBD, Args: []string{"-f", "raw", "-t", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-x", "prod", file},
		ReadyTCP: []string{fmt.Sprintf("127.0.0.1:%d", port)}})
	rw.MustRun("recover", "v@latest", "--to", fmt.Sprintf("nbd://127.0.0.1:%d/prod", port), "--as", "rec")
	qemuIO(t, srv.URI("rec"), "write -P 0x11 12M 64k", "flush") // in a hole, during the copy
	// The FUSE tree serves the recovering volume too, writable.
	image := filepath.Join(tree, "rec", "disk.img")
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x44}, 64<<10), 14<<20); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(metrics(t, srv), `rewind_recovery_size_bytes{volume="rec"}`); v != size {
		t.Errorf("rewind_recovery_size_bytes of rec: %v, want %d", v, size)
	}
	_, want := cutOver(t, rw, srv, "rec")
	page := metrics(t, srv)
	for series, want := range map[string]float64{
		`rewind_recovery_state{state="cut over",volume="rec"}`: 1,
		`rewind_recovery_state{state="copying",volume="rec"}`:  0,
		`rewind_recovery_done_bytes{volume="rec"}`:             size,
	} {
		if v := metricValue(page, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	if got := sha256File(t, file); got != want {
		t.Fatalf("target sha256 %s, export before cutover %s", got[:12], want[:12])
	}
	qemuIO(t, srv.URI("rec"), "write -P 0x22 13M 64k", "flush") // after cutover, on the target
	requireFilled(t, file, 4<<20, 64<<10, 0)                    // a hole of the volume
	requireFilled(t, file, 12<<20, 64<<10, 0x11)
	requireFilled(t, file, 13<<20, 64<<10, 0x22)
	requireFilled(t, file, 14<<20, 64<<10, 0x44)
	if sha256File(t, image) != sha256File(t, file) {
		t.Error("after cutover the FUSE image differs from the target")
	}
	// Every copy has settled: --watch prints one line and ends.
	if out := rw.MustRun("--json", "recover", "status", "--watch"); strings.Count(out, "\n") != 1 || !strings.Contains(out, `"cut over"`) {
		t.Errorf("recover status --watch after cutover:\n%s", out)
	}
	if exportSHA(t, srv.URI("v@latest")) != sha256File(t, img) {
		t.Error("the source changed")
	}
}

// slowNBDTarget serves file as the export "prod" on 127.0.0.1:port with
// qemu-nbd, taking writes at 4 MiB/s: a recovery's copy into it lasts
// long enough to watch or interrupt.
func slowNBDTarget(t *testing.T, qemuNBD, file string, port int) *daemon {
	t.Helper()
	return startDaemon(t, daemonSpec{Path: qemuNBD, Args: []string{
		"--object", "throttle-group,id=slow,x-bps-write=" + fmt.Sprint(4<<20),
		"--image-opts", "driver=throttle,throttle-group=slow,file.driver=raw,file.file.driver=file,file.file.filename=" + file,
		"-t", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-x", "prod"},
		ReadyTCP: []string{fmt.Sprintf("127.0.0.1:%d", port)}})
}

// TestRecoverTargetRestarts: the NBD server of the target is killed
// part way through the copy and started again on the same port: the
// recovery says the target is out of reach, dials it again, and the
// target ends up holding exactly what the export held, a write made
// during the outage included.
func TestRecoverTargetRestarts(t *testing.T) {
	qemuNBD := requireTool(t, "qemu-nbd", "qemu-utils")
	rw := newRewind(t)
	const size = 32 << 20
	importRandom(t, rw, 21, size)
	srv := rw.Serve(serveOptions{})
	file := filepath.Join(t.TempDir(), "prod.img")
	if err := os.WriteFile(file, bytes.Repeat([]byte{0xff}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	// qemu-nbd takes writes at 4 MiB/s, so that the copy lasts ~8 s.
	target := func() *daemon { return slowNBDTarget(t, qemuNBD, file, port) }
	q := target()
	rw.MustRun("recover", "v@latest", "--to", fmt.Sprintf("nbd://127.0.0.1:%d/prod", port), "--as", "rec")
	waitUntil(t, 30*time.Second, "a quarter copied", func() error {
		if st := recoveryOf(t, rw, "rec"); st.Done < size/4 {
			return fmt.Errorf("%d of %d bytes done", st.Done, st.Total)
		}
		return nil
	})
	q.cmd.Process.Kill()
	<-q.exited
	waitUntil(t, 30*time.Second, "the status to say the target is out of reach", func() error {
		if st := recoveryOf(t, rw, "rec"); st.State != "copying" || !strings.Contains(st.Reason, "out of reach") {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	qemuIO(t, srv.URI("rec"), "write -P 0x5a 20M 64k", "flush") // the guest goes on
	q = target()

	// The daemon restarts while the target is away: the copy waits for it.
	waitUntil(t, 30*time.Second, "the copy going on", func() error {
		if st := recoveryOf(t, rw, "rec"); st.Reason != "" || st.Done <= size/2 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	q.cmd.Process.Kill()
	<-q.exited
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d", code)
	}
	srv = rw.Serve(serveOptions{})
	if st := recoveryOf(t, rw, "rec"); st.State != "copying" || !strings.Contains(st.Reason, "out of reach") {
		t.Fatalf("after a restart with the target away: %+v, want copying, out of reach", st)
	}
	q = target()
	_, want := cutOver(t, rw, srv, "rec")
	if got := sha256File(t, file); got != want {
		t.Fatalf("target sha256 %s after its server restarted, export before cutover %s", got[:12], want[:12])
	}
	requireFilled(t, file, 20<<20, 64<<10, 0x5a)
	if st := recoveryOf(t, rw, "rec"); st.Reason != "" {
		t.Errorf("after cutover the status still says %q", st.Reason)
	}

	// After cutover only the target has the newest writes: a daemon that
	// restarts while it is away serves the target once it is back, never
	// the clone.
	qemuIO(t, srv.URI("rec"), "write -P 0x66 21M 64k", "flush")
	q.cmd.Process.Kill()
	<-q.exited
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d", code)
	}
	srv = rw.Serve(serveOptions{})
	back := make(chan struct{})
	go func() {
		time.Sleep(time.Second)
		target()
		close(back)
	}()
	qemuIOReadOnly(t, srv.URI("rec"), "read -P 0x66 21M 64k")
	<-back
}

// TestRecoverBadInput: each refused recovery exits 1 with one line,
// starts nothing, makes no clone and leaves no file; over --http a path
// target is refused and nothing works without the token; another user
// cannot use the socket.
func TestRecoverBadInput(t *testing.T) {
	requireTool(t, "curl", "curl")
	rw, base := accessRewind(t)
	img := filepath.Join(base, "disk.img")
	if err := os.WriteFile(img, randomBytes(10, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "v", img)
	srv := rw.Serve(serveOptions{HTTP: true})
	busy := filepath.Join(base, "busy.img")
	rw.MustRun("recover", "v@latest", "--to", busy, "--as", "running", "--bwlimit", "1KiB")

	small := filepath.Join(base, "small.img")
	if err := os.WriteFile(small, randomBytes(11, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	smallSHA := sha256File(t, small)
	fresh := filepath.Join(base, "fresh.img")
	busyLink := filepath.Join(base, "busy-link.img") // the same file by another name
	if err := os.Link(busy, busyLink); err != nil {
		t.Fatal(err)
	}
	unreachable := fmt.Sprintf("nbd://127.0.0.1:%d/x", freePort(t))
	for _, c := range []struct {
		what string
		args []string
		want string
	}{
		{"a target smaller than the volume", []string{"v@latest", "--to", small, "--as", "bad"}, "needs 4194304"},
		{"the target of a running recovery", []string{"v@latest", "--to", busy, "--as", "bad"}, "in use"},
		{"the target of a running recovery by another name", []string{"v@latest", "--to", busyLink, "--as", "bad"}, "in use"},
		{"an unreachable nbd:// target", []string{"v@latest", "--to", unreachable, "--as", "bad"}, "127.0.0.1"},
		{"a volume without @WHEN", []string{"v", "--to", fresh, "--as", "bad"}, "v@latest"},
		{"a missing volume", []string{"nosuch@latest", "--to", fresh, "--as", "bad"}, "nosuch"},
		{"a name that is taken", []string{"v@latest", "--to", fresh, "--as", "v"}, `volume "v" exists`},
	} {
		res := rw.Run(append([]string{"recover"}, c.args...)...)
		oneLineError(t, c.what, res, c.want)
		t.Logf("%s: %s", c.what, strings.TrimSpace(res.Stderr))
		if res.Code != 1 {
			t.Errorf("%s: exit status %d, want 1", c.what, res.Code)
		}
	}
	if _, err := os.Lstat(fresh); !os.IsNotExist(err) {
		t.Errorf("a refused recovery left %s (%v)", fresh, err)
	}
	for _, sub := range []string{"cutover", "cancel", "retry"} {
		oneLineError(t, sub+" of no recovery", rw.Run("recover", sub, "nosuch"), "no recovery of a volume named nosuch")
	}
	oneLineError(t, "retry of a copy that runs", rw.Run("recover", "retry", "running"), "still running")
	if sha256File(t, small) != smallSHA {
		t.Error("a refused recovery changed the small target")
	}
	if fi, err := os.Stat(busy); err != nil || fi.Size() != 4<<20 {
		t.Errorf("the running recovery's target: %v, %v", fi, err)
	}

	// Once cancelled, a recovery frees its target for another.
	rw.MustRun("recover", "cancel", "running")
	if st := recoveryOf(t, rw, "running"); st.State != "cancelled" {
		t.Fatalf("after cancel: %+v", st)
	}
	rw.MustRun("recover", "v@latest", "--to", busyLink, "--as", "again", "--bwlimit", "1KiB")
	// Nor can a retry take it back while that one copies into it.
	oneLineError(t, "retry into the target of a running recovery", rw.Run("recover", "retry", "running"), "in use")
	if st := recoveryOf(t, rw, "running"); st.State != "cancelled" || st.Target != busy {
		t.Fatalf("a refused retry changed the recovery: %+v", st)
	}

	// Over --http: with the token, a path is refused (the daemon opens no
	// path for a caller); without it, every recovery call is 401.
	bearer := "Authorization: Bearer " + srv.APIToken(t)
	remote := filepath.Join(base, "remote.img")
	api := "http://" + srv.HTTPAddr + "/v1/"
	body := fmt.Sprintf(`{"from":"v@latest","target":%q,"as":"bad"}`, remote)
	code, answer := curlStatus(t, nil, "-X", "POST", "-H", "Content-Type: application/json", "-H", bearer, "-d", body, api+"recoveries")
	if code != "400" || !strings.Contains(answer, "nbd://") {
		t.Errorf("recover of a path over --http: %s %s", code, answer)
	}
	code, answer = curlStatus(t, nil, "-X", "POST", "-H", "Content-Type: application/json", "-H", bearer, "-d",
		fmt.Sprintf(`{"target":%q}`, remote), api+"recoveries/running/retry")
	if code != "400" || !strings.Contains(answer, "nbd://") {
		t.Errorf("retry into a path over --http: %s %s", code, answer)
	}
	if _, err := os.Lstat(remote); !os.IsNotExist(err) {
		t.Errorf("the daemon made %s for a caller (%v)", remote, err)
	}
	// Nor does it connect to a Unix socket a caller names.
	body = fmt.Sprintf(`{"from":"v@latest","target":"nbd+unix:///x?socket=%s","as":"bad"}`, rw.Socket())
	code, answer = curlStatus(t, nil, "-X", "POST", "-H", "Content-Type: application/json", "-H", bearer, "-d", body, api+"recoveries")
	if code != "400" || !strings.Contains(answer, "unix") {
		t.Errorf("recover into a Unix socket over --http: %s %s", code, answer)
	}
	for _, call := range []string{"POST recoveries", "GET recoveries", "GET recoveries/running", "PATCH recoveries/running",
		"POST recoveries/running/cutover", "POST recoveries/running/retry", "DELETE recoveries/running"} {
		method, path, _ := strings.Cut(call, " ")
		code, answer := curlStatus(t, nil, "-X", method, "-H", "Content-Type: application/json", "-d", `{"from":"v@latest","bwlimit":1}`, api+path)
		if code != "401" {
			t.Errorf("%s /v1/%s without the token: %s %s", method, path, code, answer)
		}
	}

	// Another user cannot use the socket.
	oneLineError(t, "recover as another user", rw.runAsNobody("recover", "v@latest", "--to", filepath.Join(base, "nobody.img"), "--as", "bad"),
		"serves root and the owner")
	oneLineError(t, "recover cancel as another user", rw.runAsNobody("recover", "cancel", "running"), "serves root and the owner")
	oneLineError(t, "recover retry as another user", rw.runAsNobody("recover", "retry", "running", "--to", unreachable), "serves root and the owner")

	// Nothing else runs: the cancelled recovery and the one copying; no
	// other clone.
	all := recoveries(t, rw)
	if len(all) != 2 || all[0].Name != "again" || all[0].State != "copying" || all[1].Name != "running" || all[1].State != "cancelled" {
		t.Errorf("recoveries after the refusals: %+v", all)
	}
	names := volumeNames(t, rw)
	sort.Strings(names)
	if strings.Join(names, ",") != "again,running,v" {
		t.Errorf("volumes after the refusals: %v, want again, running and v", names)
	}
	data, _ := json.Marshal(all)
	t.Logf("status: %s", data)

	// The cancelled copy, retried into a new file without its limit of
	// 1 KiB/s, hydrates it whole.
	second := filepath.Join(base, "second.img")
	rw.MustRun("recover", "retry", "running", "--to", second, "--bwlimit", "0")
	rw.MustRun("recover", "cutover", "running")
	if sha256File(t, second) != sha256File(t, img) || exportSHA(t, srv.URI("running")) != sha256File(t, img) {
		t.Error("after retry and cutover the target or the export differs from the volume")
	}
}

// TestRecoverRestartChecksTarget: a restarted daemon reopens a file
// target by its path only if it is still the file the caller passed; a
// file put in its place is not written, and the export keeps serving the
// clone, whose copy a retry into another file then completes.
func TestRecoverRestartChecksTarget(t *testing.T) {
	rw := newRewind(t)
	importRandom(t, rw, 12, 4<<20)
	srv := rw.Serve(serveOptions{})
	dir := t.TempDir()
	target := filepath.Join(dir, "prod.img")
	rw.MustRun("recover", "v@latest", "--to", target, "--as", "rec", "--bwlimit", "1KiB")
	qemuIO(t, srv.URI("rec"), "write -P 0x3c 1M 64k", "flush")
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d after SIGTERM", code)
	}
	other := filepath.Join(dir, "other.img")
	otherData := randomBytes(13, 4<<20)
	if err := os.WriteFile(other, otherData, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, target); err != nil {
		t.Fatal(err)
	}

	srv = rw.Serve(serveOptions{})
	st := recoveryOf(t, rw, "rec")
	if st.State != "failed" || !strings.Contains(st.Reason, "no longer") {
		t.Fatalf("after the target was replaced: %+v, want failed because it is no longer the same file", st)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, otherData) {
		t.Error("the daemon wrote the file put in the target's place")
	}
	qemuIO(t, srv.URI("rec"), "read -P 0x3c 1M 64k") // served from the clone
	res := rw.Run("recover", "cutover", "rec")
	oneLineError(t, "cutover of a failed recovery", res, "failed")

	// Going on where the copy stopped needs the copy's own target: the
	// file in its place is refused, and not written.
	oneLineError(t, "resume into the file put in the target's place", rw.Run("recover", "retry", "rec", "--resume"), "--resume goes on copying")
	if got, _ := os.ReadFile(target); !bytes.Equal(got, otherData) {
		t.Error("a refused resume wrote the file put in the target's place")
	}
	// Retried into a new file, with a write since the restart: the target
	// ends up holding both writes, and the export serves it.
	qemuIO(t, srv.URI("rec"), "write -P 0x3d 2M 64k", "flush")
	fresh := filepath.Join(dir, "fresh.img")
	rw.MustRun("recover", "retry", "rec", "--to", fresh, "--bwlimit", "0")
	rw.MustRun("recover", "cutover", "rec")
	qemuIO(t, srv.URI("rec"), "read -P 0x3c 1M 64k", "read -P 0x3d 2M 64k")
	if exportSHA(t, srv.URI("rec")) != sha256File(t, fresh) {
		t.Error("after the retry's cutover the export does not serve the new target")
	}
}

// TestRecoverCutoverUnderWrites cuts over while fio writes through the
// export; fio's verify pass, which reads every block back from the
// target after the cutover, finds each write.
func TestRecoverCutoverUnderWrites(t *testing.T) {
	rw := newRewind(t)
	importRandom(t, rw, 14, 32<<20)
	srv := rw.Serve(serveOptions{HTTP: true})
	target := filepath.Join(t.TempDir(), "prod.img")
	rw.MustRun("recover", "v@latest", "--to", target, "--as", "rec", "--bwlimit", "4MiB")

	w := startVerifyingWriter(t, srv, "rec")
	if !w.Running() {
		t.Fatalf("fio ended before the cutover: %s", w.Logs())
	}
	rw.MustRun("recover", "bwlimit", "rec", "0")
	runCutover(t, rw, "rec")
	t.Logf("cut over; fio still writing: %v", w.Running())
	waitVerifyingWriter(t, w, "the cutover")
	if st := recoveryOf(t, rw, "rec"); st.State != "cut over" {
		t.Fatalf("after cutover: %+v", st)
	}
}

// TestRecoverRetryUnderWrites cancels a copy while fio writes through
// the export and retries it into another file, then cuts over: the
// client stays connected across the retry, and fio's verify pass, which
// reads every block back from the new target after the cutover, finds
// each write.
func TestRecoverRetryUnderWrites(t *testing.T) {
	rw := newRewind(t)
	importRandom(t, rw, 15, 32<<20)
	srv := rw.Serve(serveOptions{HTTP: true})
	dir := t.TempDir()
	rw.MustRun("recover", "v@latest", "--to", filepath.Join(dir, "first.img"), "--as", "rec", "--bwlimit", "4MiB")

	w := startVerifyingWriter(t, srv, "rec")
	rw.MustRun("recover", "cancel", "rec")
	second := filepath.Join(dir, "second.img")
	rw.MustRun("recover", "retry", "rec", "--to", second, "--bwlimit", "0")
	if !w.Running() {
		t.Fatalf("fio ended before the retry: %s", w.Logs())
	}
	runCutover(t, rw, "rec")
	waitVerifyingWriter(t, w, "the retry or the cutover")
	if st := recoveryOf(t, rw, "rec"); st.State != "cut over" || st.Target != second {
		t.Fatalf("after cutover: %+v", st)
	}
	if exportSHA(t, srv.URI("rec")) != sha256File(t, second) {
		t.Error("the export does not serve the retried target")
	}
}

// importRandom imports size random bytes (from seed) as volume "v" and
// returns the image's path.
func importRandom(t *testing.T, rw *rewind, seed int64, size int) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, randomBytes(seed, size), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "v", img)
	return img
}

// startVerifyingWriter starts fio writing 16 MiB of 4 KiB random writes
// at 2 MiB/s (about 8 s) through export, then verifying all of it, and
// returns once the daemon has taken its first writes.
func startVerifyingWriter(t *testing.T, srv *server, export string) *daemon {
	t.Helper()
	fio := requireTool(t, "fio", "fio")
	w := startDaemon(t, daemonSpec{Path: fio, Args: []string{"--name=w", "--ioengine=nbd", "--uri=" + srv.URI(export),
		"--rw=randwrite", "--bs=4k", "--size=16M", "--iodepth=8", "--rate=2m", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0"}})
	waitUntil(t, time.Minute, "fio's first writes", func() error {
		if v := metricValue(metrics(t, srv), fmt.Sprintf(`rewind_nbd_requests_total{cmd="write",export=%q,result="ok"}`, export)); v <= 0 {
			return fmt.Errorf("%v writes", v)
		}
		return nil
	})
	return w
}

// waitVerifyingWriter waits for fio to end and fails the test unless its
// verify pass found every write, across what names.
func waitVerifyingWriter(t *testing.T, w *daemon, across string) {
	t.Helper()
	select {
	case <-w.exited:
	case <-time.After(cmdTimeout):
		t.Fatal("fio still runs")
	}
	if w.code != 0 {
		t.Fatalf("fio exited %d: a write was lost across %s\n%s", w.code, across, w.Logs())
	}
}
