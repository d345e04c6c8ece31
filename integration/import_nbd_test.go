package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// A running VM's disk pulled over NBD, as libvirt and Proxmox hand it out:
// qemu-nbd serves a qcow2 image with a persistent dirty bitmap. The first
// import reads the allocated data; the next, with --dirty-bitmap, reads
// only what the VM wrote since; both versions read back as the image was.
// Over the daemon's socket the daemon dials the URI.
func TestImportPullsFromQemuNBDWithDirtyBitmap(t *testing.T) {
	requireTool(t, "qemu-nbd", "qemu-utils")
	rw := newRewind(t)
	srv := rw.Serve(serveOptions{})
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	mustRunCmd(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	mustRunCmd(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 8M", "-c", "write -P 7 20M 1M", img)
	mustRunCmd(t, "qemu-img", "bitmap", "--add", img, "b0")

	pull := func(wantRead int64, extra ...string) {
		t.Helper()
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		host, port, _ := strings.Cut(addr, ":")
		q := startDaemon(t, daemonSpec{Path: "qemu-nbd", ReadyTCP: []string{addr},
			Args: []string{"--persistent", "-r", "-b", host, "-p", port, "-x", "vm", "-f", "qcow2", "-B", "b0", img}})
		out := rw.MustRun(append([]string{"--json", "import", "vm", "nbd://" + addr + "/vm"}, extra...)...)
		q.Stop()
		var res struct {
			Time string `json:"time"`
			Read int64  `json:"read"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("import --json: %v: %s", err, out)
		}
		if res.Read != wantRead {
			t.Fatalf("import read %d bytes from qemu-nbd, want %d", res.Read, wantRead)
		}
		raw := filepath.Join(dir, "vm.raw")
		mustRunCmd(t, "qemu-img", "convert", "-O", "raw", img, raw)
		got := filepath.Join(dir, "got.raw")
		mustRunCmd(t, "nbdcopy", srv.URI("vm@"+res.Time), got)
		if sha256File(t, got) != sha256File(t, raw) {
			t.Fatalf("vm@%s differs from the image it was pulled from", res.Time)
		}
	}
	pull(9 << 20)
	mustRunCmd(t, "qemu-io", "-f", "qcow2", "-c", "write -P 9 4M 128k", "-c", "write -z 20M 1M", "-c", "write -P 3 40M 64k", img)
	pull(192<<10, "--dirty-bitmap", "b0")

	res := rw.Run("import", "vm", "/dev/null", "--dirty-bitmap", "b0")
	if res.Code != 1 || !strings.Contains(res.Stderr, "reads from an nbd:// source") || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Fatalf("--dirty-bitmap with a file source: %s", res)
	}
}
