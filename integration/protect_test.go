package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Continuous protection (`rewind protect`): a primary disk served by the
// daemon, every write recorded with its own time.

// whenOf names an instant as a Unix time with nanoseconds.
func whenOf(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// TestProtectHistoryAndCrash writes patterns through a protected export
// at TA, TB and TC, 0.3 s apart, each flushed: each instant reads back as
// it was, the primary holds the newest, and a SIGKILL right after a
// flushed write loses nothing; the restarted daemon serves the
// protection again by itself.
func TestProtectHistoryAndCrash(t *testing.T) {
	rw := newRewind(t)
	const size = 16 << 20
	primary := filepath.Join(t.TempDir(), "prod.img")
	if err := os.WriteFile(primary, randomBytes(21, size), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sha256File(t, primary)
	srv := rw.Serve(serveOptions{})
	out := rw.MustRun("protect", "vol", "--primary", primary)
	t.Logf("protect: %s", strings.TrimSpace(out))
	t0 := time.Now()

	var instants []time.Time
	for i, b := range []byte{0xa1, 0xb2, 0xc3} {
		if i > 0 {
			time.Sleep(300 * time.Millisecond) // the instants the test is about
		}
		qemuIO(t, srv.URI("vol"), fmt.Sprintf("write -P 0x%x 1M 64k", b), fmt.Sprintf("write -P 0x%x %dM 4k", b, 4+i), "flush")
		instants = append(instants, time.Now())
	}
	for i, b := range []byte{0xa1, 0xb2, 0xc3} {
		uri := srv.URI("vol@" + whenOf(instants[i]))
		// 1M holds this instant's pattern (the later ones overwrote it);
		// 4M, 5M, 6M each earlier instant's, which nothing overwrote.
		cmds := []string{fmt.Sprintf("read -P 0x%x 1M 64k", b)}
		for j, e := range []byte{0xa1, 0xb2, 0xc3}[:i+1] {
			cmds = append(cmds, fmt.Sprintf("read -P 0x%x %dM 4k", e, 4+j))
		}
		qemuIOReadOnly(t, uri, cmds...)
	}
	requireFilled(t, primary, 1<<20, 64<<10, 0xc3)
	// protect status: six writes of 68 KiB in all, three FLUSHes at least
	// (qemu-io flushes when it closes too), no error.
	var prot []struct {
		Name    string `json:"name"`
		Primary string `json:"primary"`
		State   string `json:"state"`
		Writes  int64  `json:"writes"`
		Written int64  `json:"written_bytes"`
		Flushes int64  `json:"flushes"`
		Errors  int64  `json:"errors"`
	}
	mustJSON(t, rw.MustRun("--json", "protect", "status"), &prot)
	if len(prot) != 1 || prot[0].Name != "vol" || prot[0].Primary != primary || prot[0].State != "protected" ||
		prot[0].Writes != 6 || prot[0].Written != 3*(64<<10+4<<10) || prot[0].Flushes < 3 || prot[0].Errors != 0 {
		t.Errorf("rewind --json protect status: %+v", prot)
	}
	if out := rw.MustRun("protect", "status", "vol"); !strings.Contains(out, "vol") || !strings.Contains(out, "protected") || !strings.Contains(out, primary) {
		t.Errorf("rewind protect status vol:\n%s", out)
	}
	oneLineError(t, "protect status of a volume not protected", rw.Run("protect", "status", "nosuch"), "not protected")
	requireFilled(t, primary, 6<<20, 4<<10, 0xc3)
	if got := exportSHA(t, srv.URI("vol@latest")); got != sha256File(t, primary) {
		t.Errorf("vol@latest reads sha256 %s, the primary %s", got[:12], sha256File(t, primary)[:12])
	}
	if got := exportSHA(t, srv.URI("vol@"+whenOf(t0))); got != before {
		t.Errorf("vol as of protect reads sha256 %s, the primary held %s", got[:12], before[:12])
	}
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "vol"), &log)
	if len(log) < 4 {
		t.Errorf("rewind log vol: %d versions, want the import and one per write", len(log))
	}

	// A flushed write, then SIGKILL.
	qemuIO(t, srv.URI("vol"), "write -P 0xd4 2M 64k", "flush")
	srv.cmd.Process.Kill()
	<-srv.exited
	requireFilled(t, primary, 2<<20, 64<<10, 0xd4)

	srv = rw.Serve(serveOptions{})
	waitProtected(t, rw, "vol")
	qemuIOReadOnly(t, srv.URI("vol@latest"), "read -P 0xd4 2M 64k", "read -P 0xc3 1M 64k")
	// The comparison at the start found the two in agreement (the write
	// was flushed) and recorded nothing: the log is the writes and the
	// first import.
	var after []struct {
		Kind   string `json:"kind"`
		Blocks int64  `json:"blocks"`
	}
	mustJSON(t, rw.MustRun("--json", "log", "vol"), &after)
	if len(after) != len(log)+1 || after[len(after)-1].Kind != "write" {
		t.Errorf("rewind log vol after the restart: %+v; want the %d versions before and the flushed write", after, len(log))
	}
	// Served again, writable, and still recording.
	qemuIO(t, srv.URI("vol"), "read -P 0xd4 2M 64k", "write -P 0xe5 3M 64k", "flush")
	requireFilled(t, primary, 3<<20, 64<<10, 0xe5)
	qemuIOReadOnly(t, srv.URI("vol@latest"), "read -P 0xe5 3M 64k")
	if got := exportSHA(t, srv.URI("vol@latest")); got != sha256File(t, primary) {
		t.Errorf("after the restart vol@latest reads sha256 %s, the primary %s", got[:12], sha256File(t, primary)[:12])
	}

	// A clean stop and start: served again; unprotect keeps the history
	// and leaves the primary alone.
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d after SIGTERM", code)
	}
	srv = rw.Serve(serveOptions{})
	qemuIO(t, srv.URI("vol"), "read -P 0xe5 3M 64k")
	rw.MustRun("unprotect", "vol")
	qemuIOReadOnly(t, srv.URI("vol@"+whenOf(instants[0])), "read -P 0xa1 1M 64k")
	res := runCmd(t, nil, nil, requireTool(t, "qemu-io", "qemu-utils"), "-f", "raw", "-c", "write -P 0x01 0 4k", srv.URI("vol"))
	if res.Code == 0 && !strings.Contains(res.Stdout+res.Stderr, "failed") {
		t.Errorf("a write to vol after unprotect: %s", res)
	}
}

func qemuArgs(cmds []string) []string {
	var args []string
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return args
}

// qemuIOReadOnly is qemuIO on a read-only export.
func qemuIOReadOnly(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := append([]string{"-f", "raw", "-r"}, qemuArgs(cmds)...)
	res := runCmd(t, nil, nil, requireTool(t, "qemu-io", "qemu-utils"), append(args, uri)...)
	if res.Code != 0 || strings.Contains(res.Stdout+res.Stderr, "failed") {
		t.Fatalf("qemu-io -r %v on %s: %s", cmds, uri, res)
	}
}

// TestProtectBadInput: a missing primary, one in use, a taken name, a
// path over --http, and a caller who is not the owner are each refused
// with one line, and nothing starts.
func TestProtectBadInput(t *testing.T) {
	requireTool(t, "curl", "curl")
	rw, base := accessRewind(t)
	img := filepath.Join(base, "disk.img")
	if err := os.WriteFile(img, randomBytes(22, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "v", img)
	srv := rw.Serve(serveOptions{HTTP: true})
	primary := filepath.Join(base, "prod.img")
	if err := os.WriteFile(primary, randomBytes(23, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("protect", "running", "--primary", primary)
	other := filepath.Join(base, "other.img")
	if err := os.WriteFile(other, randomBytes(24, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	otherSHA := sha256File(t, other)
	link := filepath.Join(base, "prod-link.img")
	if err := os.Link(primary, link); err != nil {
		t.Fatal(err)
	}
	// A disk image QEMU holds open: it locks it.
	held := filepath.Join(base, "held.img")
	if err := os.WriteFile(held, randomBytes(25, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	qemuNBD := requireTool(t, "qemu-nbd", "qemu-utils")
	startDaemon(t, daemonSpec{Path: qemuNBD, Args: []string{"-f", "raw", "-k", filepath.Join(base, "held.sock"), held},
		ReadyUnix: []string{filepath.Join(base, "held.sock")}})

	for _, c := range []struct {
		what string
		args []string
		want string
	}{
		{"a missing primary", []string{"bad", "--primary", filepath.Join(base, "nosuch.img")}, "does not exist"},
		{"the primary of a running protection", []string{"bad", "--primary", primary}, "in use"},
		{"the same primary by another name", []string{"bad", "--primary", link}, "in use"},
		{"a disk QEMU holds", []string{"bad", "--primary", held}, "in use"},
		{"a volume name that is taken", []string{"v", "--primary", other}, `volume "v" exists`},
		{"a protected name", []string{"running", "--primary", other}, "protected already"},
		{"a directory", []string{"bad", "--primary", base}, "neither a file nor a block device"},
	} {
		res := rw.Run(append([]string{"protect"}, c.args...)...)
		oneLineError(t, c.what, res, c.want)
		t.Logf("%s: %s", c.what, strings.TrimSpace(res.Stderr))
	}
	oneLineError(t, "unprotect of nothing", rw.Run("unprotect", "nosuch"), "nosuch is not protected")
	// QEMU does not open a protected primary behind the daemon's back.
	res := runCmd(t, nil, nil, requireTool(t, "qemu-io", "qemu-utils"), "-f", "raw", "-c", "write -P 0x66 0 4k", primary)
	if res.Code == 0 || !strings.Contains(res.Stderr, "lock") {
		t.Errorf("qemu-io opened the protected primary: %s", res)
	}
	if sha256File(t, other) != otherSHA {
		t.Error("a refused protection changed its primary")
	}

	// Over --http: with the token, a path is refused (the daemon opens no
	// path for a caller); without it, every protection call is 401.
	bearer := "Authorization: Bearer " + srv.APIToken(t)
	api := "http://" + srv.HTTPAddr + "/v1/"
	body := fmt.Sprintf(`{"volume":"bad","primary":%q}`, other)
	code, answer := curlStatus(t, nil, "-X", "POST", "-H", "Content-Type: application/json", "-H", bearer, "-d", body, api+"protections")
	if code != "400" || !strings.Contains(answer, "not passed open") {
		t.Errorf("protect of a path over --http: %s %s", code, answer)
	}
	for _, call := range []string{"POST protections", "GET protections", "GET protections/running", "DELETE protections/running"} {
		method, path, _ := strings.Cut(call, " ")
		code, answer := curlStatus(t, nil, "-X", method, "-H", "Content-Type: application/json", "-d", `{"volume":"running"}`, api+path)
		if code != "401" {
			t.Errorf("%s /v1/%s without the token: %s %s", method, path, code, answer)
		}
	}
	// Prometheus sees the protection.
	code, metrics := curlStatus(t, nil, "http://"+srv.HTTPAddr+"/metrics")
	if code != "200" || !strings.Contains(metrics, `rewind_protect_up{volume="running"} 1`) {
		t.Errorf("/metrics: %s, want rewind_protect_up of running", code)
	}
	// Another user cannot use the socket.
	oneLineError(t, "protect as another user", rw.runAsNobody("protect", "bad", "--primary", other), "serves root and the owner")
	oneLineError(t, "unprotect as another user", rw.runAsNobody("unprotect", "running"), "serves root and the owner")
	oneLineError(t, "protect status as another user", rw.runAsNobody("protect", "status"), "serves root and the owner")

	names := volumeNames(t, rw)
	sort.Strings(names)
	if strings.Join(names, ",") != "running,v" {
		t.Errorf("volumes after the refusals: %v, want running and v", names)
	}
	// The running protection still serves and records.
	qemuIO(t, srv.URI("running"), "write -P 0x5a 0 64k", "flush")
	requireFilled(t, primary, 0, 64<<10, 0x5a)
	oneLineError(t, "volume rm of a protected volume", rw.Run("volume", "rm", "running", "--force"), "unprotect")
}

// TestProtectLiveFilesystem mounts the ext4 of a protected export
// (nbdfuse and a loop device), deletes a file on the live filesystem,
// and finds it again with `rewind mount VOLUME@<one second before>
// --files`, and gone at latest.
func TestProtectLiveFilesystem(t *testing.T) {
	rw := newRewind(t)
	primary := makeExt4(t, 64<<20, map[string][]byte{"keep.txt": []byte("kept\n")})
	srv := rw.Serve(serveOptions{})
	rw.MustRun("protect", "fsvol", "--primary", primary)
	dir := t.TempDir()
	live := attachExport(t, srv.URI("fsvol"), filepath.Join(dir, "live"))
	report := bytes.Repeat([]byte("quarterly report, written on the live filesystem\n"), 2000)
	path := filepath.Join(live.mnt, "report.txt")
	if err := os.WriteFile(path, report, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, "sync", "-f", path)
	time.Sleep(1500 * time.Millisecond) // the second before the deletion holds the file
	deleted := time.Now()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, "sync", "-f", live.mnt)
	live.detach()

	files := filepath.Join(dir, "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("mount", "fsvol@"+whenOf(deleted.Add(-time.Second)), files, "--files")
	got, err := os.ReadFile(filepath.Join(files, "report.txt"))
	if err != nil || !bytes.Equal(got, report) {
		t.Errorf("report.txt one second before its deletion: %d bytes, %v", len(got), err)
	}
	rw.MustRun("umount", files)
	rw.MustRun("mount", "fsvol@latest", files, "--files")
	if _, err := os.Stat(filepath.Join(files, "report.txt")); !os.IsNotExist(err) {
		t.Errorf("report.txt at latest: %v, want deleted", err)
	}
	if b, err := os.ReadFile(filepath.Join(files, "keep.txt")); err != nil || string(b) != "kept\n" {
		t.Errorf("keep.txt at latest: %q, %v", b, err)
	}
	rw.MustRun("umount", files)
}

// TestProtectFullDisk: when the timeline's disk fills, writes through the
// protected export fail with ENOSPC rather than go unrecorded, reads go
// on, and once space is back the restarted daemon serves the protection
// with the timeline's newest version equal to the primary, every flushed
// write in both.
func TestProtectFullDisk(t *testing.T) {
	requireTool(t, "nbdsh", "python3-libnbd")
	mnt := loopFS(t, 128<<20)
	rw := newRewind(t)
	rw.Data = filepath.Join(mnt, "data")
	if err := os.Mkdir(rw.Data, 0o750); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("volume", "list") // makes the store in it
	primary := filepath.Join(t.TempDir(), "prod.img")
	if err := os.WriteFile(primary, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := rw.Serve(serveOptions{})
	rw.MustRun("protect", "vol", "--primary", primary, "--size", "96MiB")

	// Leave about 24 MiB free, less than the writes take.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, availBytes(t, mnt)-24<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	expected := filepath.Join(t.TempDir(), "expected")
	script := filepath.Join(repoRoot(t), "integration", "testdata", "fill.py")
	res := runCmd(t, nil, []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "NBD_ADDR=" + srv.NBDAddr, "EXPORT=vol", "EXPECTED=" + expected},
		"/usr/bin/python3", script)
	if res.Code != 0 {
		t.Fatalf("fill.py: %s", res)
	}
	var flushed int64
	for _, line := range strings.Split(res.Stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "FLUSHED "); ok {
			flushed, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if !strings.Contains(res.Stdout, "ERRNO ENOSPC") || flushed == 0 || !strings.Contains(res.Stdout, "READ OK") {
		t.Fatalf("filling the timeline's disk through a protected export: want ENOSPC after some flushed writes, and reads after it:\n%s", res)
	}
	t.Logf("%d MiB flushed before the disk filled", flushed>>20)
	srv.Stop()
	if strings.Contains(srv.Logs(), "panic") {
		t.Fatalf("the daemon panicked on a full disk:\n%s", srv.Logs())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	srv = rw.Serve(serveOptions{})
	waitProtected(t, rw, "vol")
	want, err := os.ReadFile(expected)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(want)) != flushed || sha256Prefix(t, primary, flushed) != sha256Bytes(want) {
		t.Errorf("the primary does not hold the %d MiB flushed before the disk filled", flushed>>20)
	}
	if got := exportSHA(t, srv.URI("vol@latest")); got != sha256File(t, primary) {
		t.Errorf("after the restart vol@latest reads sha256 %s, the primary %s", got[:12], sha256File(t, primary)[:12])
	}
	qemuIO(t, srv.URI("vol"), "write -P 0x5a 0 1M", "flush", "read -P 0x5a 0 1M")
	qemuIOReadOnly(t, srv.URI("vol@latest"), "read -P 0x5a 0 1M")
}

// TestProtectBlockDevice protects a loop device: writes, WRITE_ZEROES and
// TRIM reach the device and the timeline alike, a restarted daemon
// reopens the device, and a device held open exclusively is in use.
func TestProtectBlockDevice(t *testing.T) {
	losetup := requireTool(t, "losetup", "mount")
	backing := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(backing, randomBytes(31, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(mustRunCmd(t, losetup, "-f", "--show", backing))
	t.Cleanup(func() { runCmd(t, nil, nil, losetup, "-d", dev) })
	rw := newRewind(t)
	srv := rw.Serve(serveOptions{})
	rw.MustRun("protect", "dev", "--primary", dev)
	qemuIO(t, srv.URI("dev"), "write -P 0x61 0 64k", "write -z 1M 128k", "discard 2M 64k", "write -P 0x62 3M 4k", "flush")
	// What the device holds, read past the page cache.
	devSHA := func() string {
		out := filepath.Join(t.TempDir(), "dev.img")
		mustRunCmd(t, "dd", "if="+dev, "of="+out, "bs=1M", "iflag=direct", "status=none")
		return sha256File(t, out)
	}
	if got, want := exportSHA(t, srv.URI("dev@latest")), devSHA(); got != want {
		t.Errorf("dev@latest reads sha256 %s, the device %s", got[:12], want[:12])
	}
	qemuIOReadOnly(t, srv.URI("dev@latest"), "read -P 0x61 0 64k", "read -P 0 1M 128k", "read -P 0 2M 64k", "read -P 0x62 3M 4k")
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d after SIGTERM", code)
	}
	srv = rw.Serve(serveOptions{})
	qemuIO(t, srv.URI("dev"), "read -P 0x62 3M 4k", "write -P 0x63 4M 4k", "flush")
	if got, want := exportSHA(t, srv.URI("dev@latest")), devSHA(); got != want {
		t.Errorf("after a restart dev@latest reads sha256 %s, the device %s", got[:12], want[:12])
	}
	rw.MustRun("unprotect", "dev")
	// A device mounted or held exclusively is in use.
	held, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	oneLineError(t, "a device held exclusively", rw.Run("protect", "dev2", "--primary", dev), "in use")
}

// waitProtected waits until the daemon serves name's protection: after
// an unclean stop it is resuming while the start compares the primary
// with the timeline, and the daemon answers meanwhile.
func waitProtected(t *testing.T, rw *rewind, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var all []struct {
			State  string `json:"state"`
			Reason string `json:"reason"`
		}
		mustJSON(t, rw.MustRun("--json", "protect", "status", name), &all)
		if len(all) != 1 {
			t.Fatalf("rewind protect status %s: %+v", name, all)
		}
		st := all[0]
		switch {
		case st.State == "protected":
			return
		case st.State != "resuming":
			t.Fatalf("protection of %s after the restart: %s (%s)", name, st.State, st.Reason)
		case time.Now().After(deadline):
			t.Fatalf("protection of %s still resuming after 2 minutes: %s", name, st.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProtectResumeServesOthers: after a SIGKILL, the start compares the
// primary with the timeline (all of it here: the write-intent bitmap is
// gone) while the daemon serves everything else. Meanwhile the
// protection shows as resuming, its export and FUSE image are refused
// with a message that says so (never its newest version in the
// primary's place), unprotect is refused, and its history is served;
// then it is served again, writable.
func TestProtectResumeServesOthers(t *testing.T) {
	rw := newRewind(t)
	const size = 1 << 30
	dir := t.TempDir()
	primary := filepath.Join(dir, "prod.img")
	f, err := os.Create(primary)
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(41, 4<<20)
	for off := 0; off < size; off += len(chunk) {
		chunk[0], chunk[1] = byte(off>>22), byte(off>>30) // no two chunks alike
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	srv := rw.Serve(serveOptions{})
	rw.MustRun("protect", "vol", "--primary", primary)
	// Random 4 KiB writes all over it: each leaves a patch that the
	// comparison puts together with its block, which makes it take
	// seconds.
	mustRunCmd(t, requireTool(t, "fio", "fio"), "--name=w", "--ioengine=nbd", "--uri="+srv.URI("vol"), "--rw=randwrite",
		"--bs=4k", "--iodepth=32", "--runtime=3", "--time_based", fmt.Sprintf("--size=%d", size), "--output=/dev/null")
	qemuIO(t, srv.URI("vol"), "write -P 0x3c 5M 64k", "flush")
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "vol"), &log)
	srv.cmd.Process.Kill()
	<-srv.exited
	// No bitmap: the start compares all of the primary, read from the
	// disk rather than the page cache.
	if err := os.Remove(filepath.Join(rw.Data, "protected", "vol.intent")); err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(primary)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // only clean pages can be dropped
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	f.Close()

	srv = rw.Serve(serveOptions{})
	restarted := time.Now()
	var st []struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	mustJSON(t, rw.MustRun("--json", "protect", "status", "vol"), &st)
	if len(st) != 1 || st[0].State != "resuming" {
		t.Fatalf("protect status right after the restart: %+v; want resuming (the comparison of 1 GiB ended before the test could see it)", st)
	}
	res := runCmd(t, nil, nil, requireTool(t, "qemu-io", "qemu-utils"), "-f", "raw", "-c", "read 0 4k", srv.URI("vol"))
	if res.Code == 0 || !strings.Contains(res.Stderr, "resuming its protection") {
		t.Errorf("qemu-io on vol while it resumes: %s; want refused, saying it is resuming", res)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	oneLineError(t, "mount of vol while it resumes", rw.Run("mount", "vol", mnt), "resuming its protection")
	oneLineError(t, "unprotect of vol while it resumes", rw.Run("unprotect", "vol"), "resuming its protection")
	mustJSON(t, rw.MustRun("--json", "protect", "status", "vol"), &st)
	if len(st) != 1 || st[0].State != "resuming" {
		t.Fatalf("protect status after the refusals: %+v; the comparison ended before they were all checked", st)
	}
	checked := time.Since(restarted)
	// History is served meanwhile.
	qemuIOReadOnly(t, srv.URI("vol@"+log[len(log)-1].Time), "read -P 0x3c 5M 64k")

	waitProtected(t, rw, "vol")
	t.Logf("the refusals were checked %v after the restart; the protection resumed after %v", checked.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	qemuIO(t, srv.URI("vol"), "read -P 0x3c 5M 64k", "write -P 0x4d 6M 64k", "flush")
	requireFilled(t, primary, 6<<20, 64<<10, 0x4d)
	qemuIOReadOnly(t, srv.URI("vol@latest"), "read -P 0x4d 6M 64k")
}
