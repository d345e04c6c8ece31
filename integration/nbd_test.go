package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// servedTwice imports an ext4 image at two instants and serves the data
// directory.
func servedTwice(t *testing.T) (*rewind, *server, string, string) {
	rw := newRewind(t)
	v1, v2 := importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	rw.MustRun("point", "add", "db01@2026-11-25T10:30:00Z", "before-patch")
	return rw, rw.Serve(serveOptions{HTTP: true}), v1, v2
}

// TestNBDClients: nbdinfo, nbdcopy and qemu-img see every instant as the
// image that was imported then.
func TestNBDClients(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	rw, srv, v1, v2 := servedTwice(t)

	list := mustRunCmd(t, nbdinfo, "--list", "nbd://"+srv.NBDAddr)
	for _, want := range []string{`export="db01"`, `export="db01@before-patch"`} {
		if !strings.Contains(list, want) {
			t.Errorf("nbdinfo --list lacks %s:\n%s", want, list)
		}
	}
	if out := mustRunCmd(t, nbdinfo, "--can", "multi-conn", srv.URI("db01@before-patch")); out != "" {
		t.Logf("%s", out)
	}
	if res := runCmd(t, nil, nil, nbdinfo, "--is", "read-only", srv.URI("db01@latest")); res.Code != 0 {
		t.Errorf("db01@latest is not read-only: %s", res)
	}
	// Block status reports the holes of the image.
	m := mustRunCmd(t, nbdinfo, "--map", srv.URI("db01@latest"))
	if !strings.Contains(m, "hole,zero") || !strings.Contains(m, "data") {
		t.Errorf("nbdinfo --map shows no holes and data:\n%s", m)
	}
	want1, want2 := sha256File(t, v1), sha256File(t, v2)
	for spec, want := range map[string]string{
		"db01@2026-11-25T10:00:00Z": want1, "db01@20261125T103000Z": want1, fmt.Sprintf("db01@%d", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Unix()): want1,
		"db01@before-patch": want1, "db01@latest": want2, "db01": want2, "db01@-1s": want2,
	} {
		out := filepath.Join(t.TempDir(), "copy.img")
		mustRunCmd(t, nbdcopy, srv.URI(spec), out)
		if got := sha256File(t, out); got != want {
			t.Errorf("nbdcopy %s: sha256 %s, want %s", spec, got[:12], want[:12])
		}
	}
	mustRunCmd(t, qemuImg, "compare", "-f", "raw", "-F", "raw", srv.URI("db01@before-patch"), v1)
	conv := filepath.Join(t.TempDir(), "conv.img")
	mustRunCmd(t, qemuImg, "convert", "-f", "raw", "-O", "raw", srv.URI("db01@latest"), conv)
	if sha256File(t, conv) != want2 {
		t.Error("qemu-img convert of db01@latest differs from the image")
	}
	qmap := mustRunCmd(t, qemuImg, "map", "-f", "raw", "--output=json", srv.URI("db01@latest"))
	if !strings.Contains(qmap, `"zero": true`) || !strings.Contains(qmap, `"data": true`) {
		t.Errorf("qemu-img map:\n%s", qmap)
	}
	// Unknown exports are refused with a reason.
	if res := runCmd(t, nil, nil, nbdinfo, srv.URI("nosuch@latest")); res.Code == 0 || !strings.Contains(res.Stderr, "nosuch") {
		t.Errorf("nbdinfo of an unknown volume: %s", res)
	}
	// Prometheus metrics count the traffic, by volume whatever the name.
	metrics := mustRunCmd(t, "curl", "-sf", "http://"+srv.HTTPAddr+"/metrics")
	if !strings.Contains(metrics, "rewind_volumes 1") ||
		!strings.Contains(metrics, `rewind_nbd_requests_total{cmd="read",export="db01",result="ok"}`) ||
		strings.Contains(metrics, `export="db01@`) {
		t.Errorf("metrics lack NBD reads:\n%.2000s", metrics)
	}
	_ = rw
}

// TestNBDCloneWrites: qemu-io writes patterns to a clone; they read back,
// survive a SIGKILL of the daemon after the flush and a graceful restart,
// and never reach the parent.
func TestNBDCloneWrites(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	rw := newRewind(t)
	v1, _ := importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	rw.MustRun("clone", "db01@2026-11-25T10:00:00Z", "test")
	srv := rw.Serve(serveOptions{})
	io := func(uri string, cmds ...string) string {
		args := []string{"-f", "raw"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		res := runCmd(t, nil, nil, qemuIO, append(args, uri)...)
		if res.Code != 0 || strings.Contains(res.Stdout, "Pattern verification failed") || strings.Contains(res.Stderr, "failed") {
			t.Fatalf("qemu-io %v: %s", cmds, res)
		}
		return res.Stdout
	}
	io(srv.URI("test"), "write -P 0x55 0 1M", "read -P 0x55 0 1M", "write -z 1M 1M", "write -P 0x66 2M 4k",
		"write -P 0x77 3M 1000", "discard 4M 1M", "flush")
	// Kill the daemon without a word: the flushed writes must be there.
	srv.cmd.Process.Kill()
	<-srv.exited
	srv = rw.Serve(serveOptions{})
	io(srv.URI("test"), "read -P 0x55 0 1M", "read -P 0 1M 1M", "read -P 0x66 2M 4k", "read -P 0x77 3M 1000", "read -P 0 4M 1M")
	// A graceful restart keeps them too.
	if code := srv.Stop(); code != 0 {
		t.Fatalf("rewind serve exited %d after SIGTERM", code)
	}
	srv = rw.Serve(serveOptions{})
	io(srv.URI("test"), "read -P 0x55 0 1M", "read -P 0x66 2M 4k")
	// The parent's history never changed.
	mustRunCmd(t, qemuImg, "compare", "-f", "raw", "-F", "raw", srv.URI("db01@2026-11-25T10:00:00Z"), v1)
	// History itself refuses writes.
	res := runCmd(t, nil, nil, qemuIO, "-f", "raw", "-c", "write -P 0x11 0 4k", srv.URI("db01@latest"))
	if res.Code == 0 && !strings.Contains(res.Stdout+res.Stderr, "denied") && !strings.Contains(res.Stdout+res.Stderr, "read-only") {
		t.Errorf("a write to history was accepted: %s", res)
	}
	mustRunCmd(t, qemuImg, "compare", "-f", "raw", "-F", "raw", srv.URI("db01@2026-11-25T10:00:00Z"), v1)
	// The clone has its own history: the instant before the writes is
	// still the parent's image.
	var log []struct{ Time, Kind string }
	mustJSON(t, rw.MustRun("--json", "log", "test"), &log)
	if len(log) < 5 || log[0].Kind != "clone" {
		t.Fatalf("clone log: %+v", log)
	}
	mustRunCmd(t, qemuImg, "compare", "-f", "raw", "-F", "raw", srv.URI("test@"+log[0].Time), v1)
}

// TestNBDFuseLoopMount attaches exports with nbdfuse and mounts the ext4
// inside at two instants: the deleted file is in the first only.
func TestNBDFuseLoopMount(t *testing.T) {
	nbdfuse := requireTool(t, "nbdfuse", "libnbd-bin")
	requireTool(t, "fusermount3", "fuse3")
	_, srv, _, _ := servedTwice(t)
	for spec, wantDeleted := range map[string]bool{"db01@2026-11-25T10:00:00Z": true, "db01@latest": false} {
		dir := t.TempDir()
		fuseDir, mnt := filepath.Join(dir, "fuse"), filepath.Join(dir, "mnt")
		os.MkdirAll(fuseDir, 0o755)
		os.MkdirAll(mnt, 0o755)
		d := startDaemon(t, daemonSpec{Path: nbdfuse, Args: []string{"-r", fuseDir, srv.URI(spec)}, ReadyMount: []string{fuseDir}})
		mustRunCmd(t, "mount", "-o", "ro,loop,noload", filepath.Join(fuseDir, "nbd"), mnt)
		_, err := os.Stat(filepath.Join(mnt, "docs", "deleted.txt"))
		report, rerr := os.ReadFile(filepath.Join(mnt, "docs", "report.txt"))
		mustRunCmd(t, "umount", mnt)
		mustRunCmd(t, "fusermount3", "-u", fuseDir)
		<-d.exited
		if (err == nil) != wantDeleted {
			t.Errorf("%s: deleted.txt present=%v, want %v", spec, err == nil, wantDeleted)
		}
		if rerr != nil || !bytes.HasPrefix(report, []byte("the quick brown fox")) {
			t.Errorf("%s: report.txt unreadable through the loop mount: %v", spec, rerr)
		}
	}
}

// TestNBDProtocolWithNbdsh drives the server with libnbd's scriptable
// client: option negotiation, handshake variants, bad requests answered
// without losing the connection, block status, multi-conn flush.
func TestNBDProtocolWithNbdsh(t *testing.T) {
	requireTool(t, "nbdsh", "python3-libnbd")
	rw := newRewind(t)
	importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	rw.MustRun("point", "add", "db01@2026-11-25T10:30:00Z", "before-patch")
	rw.MustRun("clone", "db01@latest", "scratch")
	srv := rw.Serve(serveOptions{})
	script := filepath.Join(repoRoot(t), "integration", "testdata", "protocol.py")
	res := runCmd(t, nil, []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "NBD_ADDR=" + srv.NBDAddr}, "/usr/bin/python3", script)
	if res.Code != 0 {
		t.Fatalf("nbdsh protocol checks failed: %s", res)
	}
	if !strings.Contains(res.Stdout, "ALL CHECKS PASSED") {
		t.Fatalf("the protocol script did not finish: %s", res)
	}
	t.Log(res.Stdout)
}

// TestVMBootsFromClone boots a Linux guest whose root disk is a clone of
// an imported volume; the guest's write lands in the clone, not in the
// parent, and a second boot sees it.
func TestVMBootsFromClone(t *testing.T) {
	fx := buildVMFixture(t)
	rw := newRewind(t)
	root := fx.CopyRoot(t)
	rw.MustRun("import", "vm", root, "--at", "2026-11-25T12:00:00Z")
	rw.MustRun("clone", "vm@latest", "vm-test")
	srv := rw.Serve(serveOptions{})
	boot := bootVM(t, fx, vmDrive(srv.URI("vm-test")))
	if boot.Boot != 1 {
		t.Fatalf("first boot printed boot=%d", boot.Boot)
	}
	t.Logf("boot from the export took %v", boot.Duration)
	out := filepath.Join(t.TempDir(), "clone.img")
	rw.MustRun("export", "vm-test@latest", out)
	if got := string(debugfsCat(t, out, "/written-by-guest")); got != vmWritten(1) {
		t.Fatalf("the clone holds %q, want %q", got, vmWritten(1))
	}
	parent := filepath.Join(t.TempDir(), "parent.img")
	rw.MustRun("export", "vm@latest", parent)
	if sha256File(t, parent) != sha256File(t, root) {
		t.Fatal("the parent changed when the guest wrote to its clone")
	}
	if boot := bootVM(t, fx, vmDrive(srv.URI("vm-test"))); boot.Boot != 2 {
		t.Fatalf("second boot printed boot=%d; the first boot's write was lost", boot.Boot)
	}
	rw.MustRun("export", "vm-test@latest", out)
	if got := string(debugfsCat(t, out, "/written-by-guest")); got != vmWritten(2) {
		t.Fatalf("after two boots the clone holds %q, want %q", got, vmWritten(2))
	}
	fsckClean(t, out)
}
