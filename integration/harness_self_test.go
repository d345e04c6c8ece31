package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Tests of the harness itself. None needs bin/rewind, so they show that a
// failure elsewhere is rewind's and not the harness's.

func TestHarnessRunCmd(t *testing.T) {
	res := runCmd(t, []byte("in"), []string{"HARNESS=env"}, "/bin/sh", "-c", `cat; echo " $HARNESS"; echo err >&2; exit 3`)
	if res.Code != 3 || res.Stdout != "in env\n" || res.Stderr != "err\n" {
		t.Fatalf("got %+v", res)
	}
}

func TestHarnessSha256File(t *testing.T) {
	p := filepath.Join(t.TempDir(), "abc")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := sha256File(t, p); got != want {
		t.Fatalf("sha256File = %s, want %s", got, want)
	}
}

func TestHarnessExt4AndDebugfs(t *testing.T) {
	data := make([]byte, 300<<10)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	img := makeExt4(t, 32<<20, map[string][]byte{
		"hello.txt":         []byte("hello\n"),
		"dir/sub/data.bin":  data,
		"dir/sub/empty.txt": nil,
	})
	fsckClean(t, img)
	if got := debugfsCat(t, img, "/dir/sub/data.bin"); !bytes.Equal(got, data) {
		t.Fatalf("data.bin read back %d bytes, not the %d written", len(got), len(data))
	}
	if got := debugfsLs(t, img, "/dir/sub"); !slices.Equal(sortedCopy(got), []string{"data.bin", "empty.txt"}) {
		t.Fatalf("ls /dir/sub = %q", got)
	}

	debugfsRm(t, img, "/hello.txt")
	if debugfsExists(t, img, "/hello.txt") {
		t.Fatal("/hello.txt still exists after debugfsRm")
	}
	debugfsMkdir(t, img, "/new")
	debugfsWriteBytes(t, img, "/new/written.txt", []byte("written\n"))
	if got := string(debugfsCat(t, img, "/new/written.txt")); got != "written\n" {
		t.Fatalf("written.txt = %q", got)
	}
	if _, err := debugfsErr(t, img, true, "write /nonexistent-source /new/x"); err == nil {
		t.Fatal("debugfs write of a missing source did not report an error")
	}
	fsckClean(t, img)
}

func TestHarnessDaemon(t *testing.T) {
	// qemu-nbd stands in for rewind serve: the same readiness and SIGTERM.
	qemuNBD := requireTool(t, "qemu-nbd", "qemu-utils")
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	img := makeExt4(t, 16<<20, map[string][]byte{"a": []byte("a")})
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startDaemon(t, daemonSpec{
		Path:     qemuNBD,
		Args:     []string{"--read-only", "--format=raw", "--persistent", "--bind=127.0.0.1", "--port=" + addr[len("127.0.0.1:"):], "--export-name=disk", img},
		ReadyTCP: []string{addr},
	})
	out := mustRunCmd(t, nbdinfo, "--size", "nbd://"+addr+"/disk")
	if out != fmt.Sprintln(16<<20) {
		t.Fatalf("nbdinfo --size = %q", out)
	}
	d.Stop()
	if d.Running() {
		t.Fatal("daemon still running after Stop")
	}
	if dialable("tcp", addr) == nil {
		t.Fatalf("%s still accepts after Stop", addr)
	}
}

func TestHarnessVMBootsFromRawFile(t *testing.T) {
	fx := buildVMFixture(t)
	root := fx.CopyRoot(t)
	boot := bootVM(t, fx, vmDrive(root))
	if boot.Boot != 1 {
		t.Fatalf("first boot printed boot=%d", boot.Boot)
	}
	if got := string(debugfsCat(t, root, "/written-by-guest")); got != vmWritten(1) {
		t.Fatalf("/written-by-guest = %q, want %q", got, vmWritten(1))
	}
	fsckClean(t, root)
	t.Logf("boot took %v", boot.Duration)
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
