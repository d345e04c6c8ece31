package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// The test VM: a tiny guest (scripts/vm-initramfs.sh) that boots from its
// disk under TCG in about 8 s, prints a marker on the console, writes
// /written-by-guest on its disk and powers off.

// vmContent is what the guest writes into /written-by-guest on first boot.
const vmContent = "written by the rewind test guest"

// vmBootTimeout bounds one boot; TCG on a busy 2-core runner is slow.
const vmBootTimeout = 3 * time.Minute

var vmMarker = regexp.MustCompile(`REWIND-VM-BOOTED boot=(\d+)`)
var vmFailure = regexp.MustCompile(`REWIND-VM-FAILED: [^\r\n]*`)

// vmFixture is the guest's kernel, initramfs and pristine root disk.
type vmFixture struct {
	Kernel  string
	Initrd  string
	RootImg string // never boot this one: copy it with CopyRoot
}

// buildVMFixture builds the fixture into tmp/vm of the repository, or
// reuses it when the script, kernel and content are unchanged.
func buildVMFixture(t testing.TB) vmFixture {
	t.Helper()
	for tool, pkg := range map[string]string{
		"qemu-system-x86_64": "qemu-system-x86", "cpio": "cpio", "modprobe": "kmod",
		"mkfs.ext4": "e2fsprogs", "busybox": "busybox-static",
	} {
		requireTool(t, tool, pkg)
	}
	root := repoRoot(t)
	dir := filepath.Join(root, "tmp", "vm")
	mustRunCmd(t, filepath.Join(root, "scripts", "vm-initramfs.sh"), dir, vmContent)
	return vmFixture{
		Kernel:  filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd.gz"),
		RootImg: filepath.Join(dir, "root.img"),
	}
}

// CopyRoot returns a writable copy of the root disk in t.TempDir().
func (f vmFixture) CopyRoot(t testing.TB) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root.img")
	src, err := os.Open(f.RootImg)
	if err != nil {
		t.Fatalf("copy VM root: %v", err)
	}
	defer src.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatalf("copy VM root: %v", err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatalf("copy VM root: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("copy VM root: %v", err)
	}
	return dst
}

// vmDrive is the -drive option for a raw disk: a file path or an NBD URI.
func vmDrive(fileOrURI string) string {
	return "file=" + fileOrURI + ",format=raw,if=virtio"
}

// vmBoot is what one boot showed.
type vmBoot struct {
	Boot     int    // N of the guest's "REWIND-VM-BOOTED boot=N"
	Console  string // everything on the serial console
	Duration time.Duration
}

// bootVM boots the guest with drive (see vmDrive) as its root disk and
// more qemu arguments (e.g. --object tls-creds-x509,...), waits for it to
// power off, and fails the test unless it printed its marker.
func bootVM(t testing.TB, f vmFixture, drive string, qemuArgs ...string) vmBoot {
	t.Helper()
	qemu := requireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	args := append([]string{
		"-accel", "tcg", "-nographic", "-no-reboot", "-m", "256", "-smp", "1", "-net", "none",
		"-kernel", f.Kernel, "-initrd", f.Initrd,
		"-append", "console=ttyS0 root=/dev/vda rw init=/init panic=-1 quiet",
		"-drive", drive,
	}, qemuArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), vmBootTimeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, qemu, args...).CombinedOutput()
	boot := vmBoot{Console: string(out), Duration: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("VM still running after %v; console:\n%s", vmBootTimeout, out)
	}
	if err != nil {
		t.Fatalf("qemu-system-x86_64 -drive %s: %v; console:\n%s", drive, err, out)
	}
	if m := vmFailure.FindString(boot.Console); m != "" {
		t.Fatalf("the guest failed: %s; console:\n%s", m, out)
	}
	m := vmMarker.FindStringSubmatch(boot.Console)
	if m == nil {
		t.Fatalf("the guest did not print its marker; console:\n%s", out)
	}
	boot.Boot, _ = strconv.Atoi(m[1])
	return boot
}

// vmWritten returns what the guest should have left in /written-by-guest
// after boot n of the same disk.
func vmWritten(n int) string {
	s := vmContent + "\n"
	for i := 2; i <= n; i++ {
		s += fmt.Sprintf("boot %d\n", i)
	}
	return s
}
