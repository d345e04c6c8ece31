package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopFS mounts a new ext4 filesystem of size bytes, an image file
// attached with mount -o loop, and returns its mount point. It is
// unmounted when the test ends.
func loopFS(t *testing.T, size int64) string {
	t.Helper()
	mkfs := requireTool(t, "mkfs.ext4", "e2fsprogs")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, mkfs, "-q", "-F", "-m", "0", img)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mustRunCmd(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// usedBytes is how much of the filesystem at dir is in use.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

func availBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// imageFile writes an image of size bytes whose first dataBytes are
// random (they do not compress) and the rest a hole.
func imageFile(t *testing.T, path string, seed int64, size, dataBytes int64) string {
	t.Helper()
	if err := os.WriteFile(path, randomBytes(seed, int(dataBytes)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFullDisk: on a small filesystem, an import that does not fit fails
// within a minute with one line that says so and leaves nothing behind; one
// that fits succeeds right after. NBD writes to a clone until the disk is
// full get ENOSPC while reads go on, the daemon stops on SIGTERM without a
// panic, and once space is freed, every write flushed before reads back.
func TestFullDisk(t *testing.T) {
	requireTool(t, "nbdsh", "python3-libnbd")
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	mnt := loopFS(t, 128<<20)
	rw := newRewind(t)
	rw.Data = filepath.Join(mnt, "data")
	src := t.TempDir()
	if err := os.Mkdir(rw.Data, 0o750); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("volume", "list") // makes the store in it
	start := usedBytes(t, mnt)

	// An import three times the size of the disk fails fast, in one line.
	big := imageFile(t, filepath.Join(src, "big.img"), 1, 384<<20, 384<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rw.Bin, rw.args([]string{"import", "big", big})...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("an import into a full disk still ran after 60 s; stderr so far:\n%.2000s", stderr.String())
	}
	if err == nil {
		t.Fatalf("an import larger than the disk succeeded:\n%s", stdout.String())
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "no space left on "+rw.Data) {
		t.Fatalf("an import into a full disk said, on stderr:\n%.4000s\nwant one line naming the lack of space on %s", msg, rw.Data)
	}
	t.Logf("the import said: %s", msg)
	var vols []map[string]any
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "volume", "list")), &vols); err != nil || len(vols) != 0 {
		t.Fatalf("after a failed import: volumes %v (%v)", vols, err)
	}
	if used := usedBytes(t, mnt); used > start+2<<20 {
		t.Fatalf("the failed import left %d KiB behind", (used-start)>>10)
	}

	// An import that fits succeeds right after.
	small := imageFile(t, filepath.Join(src, "small.img"), 2, 64<<20, 8<<20)
	rw.MustRun("import", "db", small)
	rw.MustRun("clone", "db@latest", "c")

	// Leave about 24 MiB free, less than the clone can take.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, availBytes(t, mnt)-24<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()

	srv := rw.Serve(serveOptions{HTTP: true})
	expected := filepath.Join(src, "expected")
	script := filepath.Join(repoRoot(t), "integration", "testdata", "fill.py")
	res := runCmd(t, nil, []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "NBD_ADDR=" + srv.NBDAddr, "EXPORT=c", "EXPECTED=" + expected},
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
		t.Fatalf("filling the disk through NBD: want ENOSPC after some flushed writes, and reads after it:\n%s", res)
	}
	t.Logf("%d MiB flushed before the disk filled", flushed>>20)
	// The daemon still answers, and says whether it takes writes.
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "db") {
		t.Fatalf("volume list on a full disk: %s", out)
	}
	resp, err := http.Get("http://" + srv.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if metrics := string(body); !strings.Contains(metrics, "rewind_store_writable ") {
		t.Fatalf("no rewind_store_writable in /metrics:\n%.3000s", metrics)
	}
	code := srv.Stop()
	t.Logf("rewind serve exited %d on SIGTERM; its log:\n%s", code, srv.Logs())
	if strings.Contains(srv.Logs(), "panic") {
		t.Fatalf("the daemon panicked on a full disk:\n%s", srv.Logs())
	}

	want, err := os.ReadFile(expected)
	if err != nil {
		t.Fatal(err)
	}
	readsBack := func(srv *server, when string) {
		t.Helper()
		out := filepath.Join(src, "clone.img")
		os.Remove(out)
		mustRunCmd(t, nbdcopy, srv.URI("c"), out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) != flushed || !bytes.Equal(got[:flushed], want) {
			t.Fatalf("%s: the %d MiB flushed before the disk filled do not read back", when, flushed>>20)
		}
	}

	// Still full: the store opens read-only at once (its log cannot be
	// flushed there) rather than wait for room, and serves what it holds.
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "c ") {
		t.Fatalf("volume list on a full disk:\n%s", out)
	}
	srv = rw.Serve(serveOptions{})
	readsBack(srv, "restarted on the full disk")
	srv.Stop()

	// Space comes back: the daemon starts with every flushed write.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	srv = rw.Serve(serveOptions{})
	readsBack(srv, "restarted with space")
	// And it takes writes again.
	if res := runCmd(t, nil, nil, qemuIO, "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "flush", "-c", "read -P 0x5a 0 1M", srv.URI("c")); res.Code != 0 ||
		strings.Contains(res.Stdout+res.Stderr, "failed") {
		t.Fatalf("a write after space came back: %s", res)
	}
}
