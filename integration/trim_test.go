package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNBDDiscardOfClone: qemu-io discards the whole of a clone through
// NBD. The clone reads as zeroes and block status reports one hole; the
// log shows the discard as trim versions covering every block, and a
// second discard of the same holes records nothing; the instant before
// still reads the image.
func TestNBDDiscardOfClone(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	qemuImg := requireTool(t, "qemu-img", "qemu-utils")
	nbdinfo := requireTool(t, "nbdinfo", "libnbd-bin")
	const size = 64 << 20
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(img, randomBytes(5, size), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "db01", img, "--at", "2026-11-25T10:00:00Z")
	rw.MustRun("clone", "db01@latest", "test")
	srv := rw.Serve(serveOptions{})
	io := func(cmds ...string) {
		t.Helper()
		args := []string{"-f", "raw"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		res := runCmd(t, nil, nil, qemuIO, append(args, srv.URI("test"))...)
		if res.Code != 0 || strings.Contains(res.Stdout, "Pattern verification failed") || strings.Contains(res.Stderr, "failed") {
			t.Fatalf("qemu-io %v: %s", cmds, res)
		}
	}
	type version struct {
		Time, Kind string
		Blocks     int64
	}
	logOf := func() []version {
		t.Helper()
		var log []version
		mustJSON(t, rw.MustRun("--json", "log", "test"), &log)
		return log
	}
	before := logOf()
	io("discard 0 64M", "flush")
	io("read -P 0 0 64M")
	after := logOf()
	var trimmed int64
	for _, v := range after[len(before):] {
		if v.Kind != "trim" {
			t.Fatalf("the discard recorded a %s version: %+v", v.Kind, after)
		}
		trimmed += v.Blocks
	}
	if len(after) == len(before) || trimmed != size/(64<<10) {
		t.Fatalf("the discard recorded versions of %d blocks in all, want every block once: %+v", trimmed, after)
	}
	t.Logf("the discard of 64 MiB recorded %d versions", len(after)-len(before))
	m := mustRunCmd(t, nbdinfo, "--map", srv.URI("test"))
	if lines := strings.Split(strings.TrimSpace(m), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "hole,zero") {
		t.Errorf("nbdinfo --map of the discarded clone, want one hole:\n%s", m)
	}
	io("discard 0 64M", "write -z 8M 8M", "flush")
	if again := logOf(); len(again) != len(after) {
		t.Errorf("discarding holes again recorded %d versions", len(again)-len(after))
	}
	mustRunCmd(t, qemuImg, "compare", "-f", "raw", "-F", "raw", srv.URI("test@"+before[len(before)-1].Time), img)
}
