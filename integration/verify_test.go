package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// verifyResult is what rewind --json verify --fsck/--boot prints.
type verifyResult struct {
	Spec string
	Pass bool
	Fsck *struct {
		Pass        bool
		Filesystems []struct {
			Partition, Type, Result, Checker, Note string
			Output                                 []string
		}
	}
	Boot *struct {
		Pass            bool
		Matched, Reason string
		Console         []string
	}
}

// verify runs rewind --json verify ARGS and decodes its report; wantPass
// is the exit status expected (0 or not).
func verify(t *testing.T, rw *rewind, wantPass bool, args ...string) verifyResult {
	t.Helper()
	res := rw.Run(append([]string{"--json", "verify"}, args...)...)
	var v verifyResult
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil {
		t.Fatalf("verify %v: not one JSON document (%v): %s", args, err, res)
	}
	if (res.Code == 0) != wantPass || v.Pass != wantPass {
		t.Fatalf("verify %v: exit %d, pass %v; want pass %v: %s", args, res.Code, v.Pass, wantPass, res)
	}
	if !wantPass && (strings.Count(strings.TrimSpace(res.Stderr), "\n") > 0 || !strings.Contains(res.Stderr, v.Spec)) {
		t.Errorf("verify %v: want one line on stderr naming %s, got %q", args, v.Spec, res.Stderr)
	}
	return v
}

// fsckResults maps partition to "type result" of a --fsck report.
func fsckResults(t *testing.T, v verifyResult) map[string]string {
	t.Helper()
	if v.Fsck == nil {
		t.Fatalf("no fsck in %+v", v)
	}
	m := map[string]string{}
	for _, fs := range v.Fsck.Filesystems {
		m[fs.Partition] = fs.Type + " " + fs.Result
	}
	return m
}

// makeXFS returns an xfs image of size bytes (xfs needs about 300 MiB)
// holding one file, written through a loop mount.
func makeXFS(t *testing.T, size int64) string {
	t.Helper()
	requireTool(t, "mkfs.xfs", "xfsprogs")
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, size)
	mustRunCmd(t, "mkfs.xfs", "-q", img)
	mnt := filepath.Join(dir, "m")
	os.Mkdir(mnt, 0o755)
	mustRunCmd(t, "mount", "-o", "loop", img, mnt)
	werr := os.WriteFile(filepath.Join(mnt, "on-xfs.txt"), []byte("xfs\n"), 0o644)
	mustRunCmd(t, "umount", mnt)
	if werr != nil {
		t.Fatal(werr)
	}
	return img
}

// TestVerifyFsck: --fsck passes clean ext4 and xfs recovery points, fails
// one whose ext4 was damaged before import (with e2fsck's lines), checks
// each partition of a GPT disk and reports swap as not checked, and
// leaves no mount or loop device behind.
func TestVerifyFsck(t *testing.T) {
	sgdisk := requireTool(t, "sgdisk", "gdisk")
	mkswap := requireTool(t, "mkswap", "util-linux")
	requireTool(t, "e2fsck", "e2fsprogs")
	requireTool(t, "xfs_repair", "xfsprogs")
	rw := newRewind(t)
	clean := makeExt4(t, 32<<20, map[string][]byte{"hello.txt": []byte("hello\n")})
	damaged := makeExt4(t, 32<<20, map[string][]byte{"hello.txt": []byte("hello\n")})
	// A wrong link count: the kernel mounts it, e2fsck -n finds it.
	debugfs(t, damaged, true, "sif /hello.txt links_count 7")
	xfs := makeXFS(t, 320<<20)

	dir := t.TempDir()
	disk := filepath.Join(dir, "gpt.img")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 400<<20)
	mustRunCmd(t, sgdisk, "-n", "1:2048:+32M", "-t", "1:8300", "-n", "2:0:+320M", "-t", "2:8300",
		"-n", "3:0:+8M", "-t", "3:8200", disk)
	mustRunCmd(t, "dd", "if="+clean, "of="+disk, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
	mustRunCmd(t, "dd", "if="+xfs, "of="+disk, "bs=1M", "seek=33", "conv=notrunc,sparse", "status=none")
	swap := filepath.Join(dir, "swap.img")
	os.WriteFile(swap, nil, 0o644)
	os.Truncate(swap, 8<<20)
	mustRunCmd(t, mkswap, "-q", swap)
	mustRunCmd(t, "dd", "if="+swap, "of="+disk, "bs=1M", "seek=353", "conv=notrunc,sparse", "status=none")

	for name, img := range map[string]string{"clean": clean, "damaged": damaged, "xfs": xfs, "gpt": disk} {
		rw.MustRun("import", name, img)
	}
	rw.Serve(serveOptions{})

	if got := fsckResults(t, verify(t, rw, true, "clean", "--fsck")); got["disk"] != "ext4 pass" || len(got) != 1 {
		t.Errorf("clean ext4: %v", got)
	}
	if got := fsckResults(t, verify(t, rw, true, "xfs@latest", "--fsck")); got["disk"] != "xfs pass" || len(got) != 1 {
		t.Errorf("clean xfs: %v", got)
	}
	v := verify(t, rw, false, "damaged", "--fsck")
	if got := fsckResults(t, v); got["disk"] != "ext4 fail" {
		t.Errorf("damaged ext4: %v", got)
	}
	if out := strings.Join(v.Fsck.Filesystems[0].Output, "\n"); !strings.Contains(out, "ref count is 7") {
		t.Errorf("damaged ext4: want e2fsck's finding in the output, got %q", out)
	}
	got := fsckResults(t, verify(t, rw, true, "gpt", "--fsck"))
	if got["p1"] != "ext4 pass" || got["p2"] != "xfs pass" || got["p3"] != " not checked" || len(got) != 3 {
		t.Errorf("GPT disk: %v", got)
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("verify left loop devices: %v", l)
	}
	if m := mountsUnder(t, rw.Data); len(m) != 0 {
		t.Errorf("verify left mounts: %v", m)
	}

	// Bad input: one line, nothing started.
	for want, args := range map[string][]string{
		`no volume "nosuch"`:           {"verify", "nosuch", "--fsck"},
		"bad time":                     {"verify", "clean@yesterday!", "--fsck"},
		"has no data before":           {"verify", "clean@1999-01-01T00:00:00Z", "--fsck"},
		"--repair goes with the scrub": {"verify", "clean", "--fsck", "--repair"},
	} {
		oneLineError(t, strings.Join(args, " "), rw.Run(args...), want)
	}
}

// TestVerifyBoot: --boot passes for the small Linux the NBD tests boot,
// on a throwaway view (the volume's bytes stay as imported, though the
// guest writes to its disk), and fails for a zero-filled disk once the
// timeout passes. Bad input starts nothing.
func TestVerifyBoot(t *testing.T) {
	f := buildVMFixture(t)
	rw := newRewind(t)
	rw.MustRun("import", "vm", f.RootImg)
	zero := filepath.Join(t.TempDir(), "zero.img")
	os.WriteFile(zero, nil, 0o644)
	os.Truncate(zero, 16<<20)
	rw.MustRun("import", "zero", zero)
	rw.Serve(serveOptions{})
	tmp := t.TempDir()
	rw.Env = []string{"TMPDIR=" + tmp}

	boot := []string{"--boot", "--kernel", f.Kernel, "--initrd", f.Initrd,
		"--append", "console=ttyS0 root=/dev/vda rw init=/init panic=-1 quiet", "--timeout", vmBootTimeout.String()}
	v := verify(t, rw, true, append([]string{"vm", "--expect", `REWIND-VM-BOOTED boot=1\b`}, boot...)...)
	if !strings.Contains(v.Boot.Matched, "REWIND-VM-BOOTED boot=1") {
		t.Errorf("matched %q", v.Boot.Matched)
	}
	out := filepath.Join(t.TempDir(), "after.img")
	rw.MustRun("export", "vm@latest", out)
	if sha256File(t, out) != sha256File(t, f.RootImg) {
		t.Error("booting the recovery point changed its history")
	}

	v = verify(t, rw, false, "zero", "--boot", "--expect", "login:", "--timeout", "5s")
	if !strings.Contains(v.Boot.Reason, "within 5s") {
		t.Errorf("zero disk: reason %q, want the timeout", v.Boot.Reason)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("verify --boot left %v in TMPDIR", ents)
	}

	for want, args := range map[string][]string{
		"--boot needs --expect":          {"verify", "vm", "--boot"},
		"not a regular expression":       {"verify", "vm", "--boot", "--expect", "("},
		"go with --kernel":               {"verify", "vm", "--boot", "--expect", "x", "--initrd", f.Initrd},
		"give a file this user can read": {"verify", "vm", "--boot", "--expect", "x", "--kernel", filepath.Join(tmp, "nosuch")},
		`no volume "nosuch"`:             {"verify", "nosuch", "--boot", "--expect", "x"},
	} {
		oneLineError(t, strings.Join(args, " "), rw.Run(args...), want)
	}
	// Without qemu on PATH: one line saying what to install.
	rw.Env = []string{"PATH=" + t.TempDir()}
	oneLineError(t, "verify --boot without qemu", rw.Run("verify", "vm", "--boot", "--expect", "x"), "install the Debian package qemu-system-x86")
}

// TestVerifyAccess: verify --fsck and --boot are the daemon's, on its
// socket: a user who is neither root nor the data directory's owner is
// refused with one line, through the socket's mode and through the peer
// check, and nothing is attached for them.
func TestVerifyAccess(t *testing.T) {
	rw, base := accessRewind(t)
	img := filepath.Join(base, "disk.img")
	mustRunCmd(t, "cp", makeExt4(t, 16<<20, nil), img)
	rw.MustRun("import", "v", img)
	srv := rw.Serve(serveOptions{HTTP: true})
	oneLineError(t, "verify --fsck through a 0600 socket", rw.runAsNobody("verify", "v", "--fsck"), "serves root and the owner")
	if err := os.Chmod(rw.Socket(), 0o666); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, "verify --fsck through a 0666 socket", rw.runAsNobody("verify", "v", "--fsck"), "not uid 65534")
	for _, call := range []string{"verify/fsck", "verify/nbd", "verify/resolve"} {
		if got := rw.rawAsNobody(base, call, `{"spec":"v"}`); !strings.HasPrefix(got, "403 ") {
			t.Errorf("raw %s as %d: %s, want 403", call, nobody, got)
		}
	}
	// The HTTP API, even with the token, does not run them.
	for _, call := range []string{"verify/fsck", "verify/nbd"} {
		req, err := http.NewRequest("POST", "http://"+srv.HTTPAddr+"/v1/"+call, strings.NewReader(`{"spec":"v"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+srv.APIToken(t))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "local socket only") {
			t.Errorf("%s over HTTP: %s %s, want 403 local socket only", call, resp.Status, b)
		}
	}
	if l := loopDevicesOf(t, rw.Data); len(l) != 0 {
		t.Errorf("refused calls attached loop devices: %v", l)
	}
	// Root is served.
	if got := fsckResults(t, verify(t, rw, true, "v", "--fsck")); got["disk"] != "ext4 pass" {
		t.Errorf("root's verify: %v", got)
	}
}
