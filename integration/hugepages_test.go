package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeHugePageAdvice: the daemon asks for transparent huge pages for
// its read buffers and chunk cache unless `serve --no-huge-pages` says not
// to (for hosts where a huge page's first touch is slow). The kernel's
// flags of the daemon's mappings (VmFlags "hg" in /proc/PID/smaps) show
// the advice whatever the system's own huge page setting.
func TestServeHugePageAdvice(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, randomBytes(7, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "disk", img)
	for _, off := range []bool{false, true} {
		var args []string
		if off {
			args = []string{"--no-huge-pages"}
		}
		srv := rw.Serve(serveOptions{Args: args})
		mustRunCmd(t, nbdcopy, srv.URI("disk@latest"), "null:")
		advised := advisedMappings(t, srv.cmd.Process.Pid)
		if off && advised > 0 {
			t.Errorf("serve --no-huge-pages: %d mappings advised for huge pages", advised)
		}
		if !off && advised == 0 {
			t.Error("serve: no mapping advised for huge pages after a read")
		}
		srv.Stop()
	}
}

// advisedMappings counts the mappings of process pid advised for
// transparent huge pages.
func advisedMappings(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "VmFlags:" && strings.Contains(" "+strings.Join(f[1:], " ")+" ", " hg ") {
			n++
		}
	}
	return n
}
