package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// replicateResult is what `rewind --json replicate` prints.
type replicateResult struct {
	Volumes      []string `json:"volumes"`
	Complete     bool     `json:"complete"`
	BytesSent    int64    `json:"bytes_sent"`
	PartsSent    int64    `json:"parts_sent"`
	PartsSkipped int64    `json:"parts_skipped"`
	Packs        int      `json:"packs"`
	LagSeconds   float64  `json:"lag_seconds"`
}

// journalled returns the pack bytes the journals in DATA/replicate say
// were sent, and in how many parts.
func journalled(t *testing.T, data string) (bytes int64, parts int) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(data, "replicate", "*.journal"))
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var name, sum string
			var size int64
			if k, _ := fmt.Sscan(sc.Text(), &name, &size, &sum); k == 3 && strings.HasPrefix(name, "packseg/") {
				bytes += size
				parts++
			}
		}
		f.Close()
	}
	return bytes, parts
}

// TestReplicate: two versions and a label replicated to a directory, the
// first run killed part way under --bwlimit; the second sends about the
// rest only. A new data directory on the target then exports every
// instant sha256-identical, and refuses writes to the replicated volume
// in one line. Through a running daemon, replicate goes through its
// socket, and serve --replicate-to replicates on its own schedule.
func TestReplicate(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "v1.img"), filepath.Join(dir, "v2.img")
	first := randomBytes(161, 6<<20)
	second := append(append([]byte{}, first[:2<<20]...), randomBytes(162, 6<<20)...)
	if err := os.WriteFile(v1, first, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(v2, second, 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "vm", v1)
	rw.MustRun("point", "add", "vm", "before")
	rw.MustRun("import", "vm", v2)
	rw.MustRun("import", "other", v1)
	target := filepath.Join(dir, "site2")

	// Killed once the journal says a part arrived.
	cmd := exec.Command(rw.Bin, "--data", rw.Data, "replicate", "--to", target, "--bwlimit", "1MiB/s", "vm")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "a first part journalled", func() error {
		if _, parts := journalled(t, rw.Data); parts == 0 {
			return os.ErrNotExist
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	sentBefore, partsBefore := journalled(t, rw.Data)
	packs := packBytes(t, rw.Data)
	if sentBefore >= packs {
		t.Fatalf("the killed run sent everything (%d of %d bytes) before it was killed: %s", sentBefore, packs, out.String())
	}

	var res replicateResult
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "replicate", "--to", target, "vm")), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Complete || res.PartsSkipped < int64(partsBefore) || strings.Join(res.Volumes, ",") != "vm" {
		t.Fatalf("second run: %+v; want complete, %d parts skipped", res, partsBefore)
	}
	t.Logf("killed run: %d of %d pack bytes in %d parts; second run: %+v", sentBefore, packs, partsBefore, res)
	// The rest of the packs, and the index (well under 1 MiB here).
	if rest := packs - sentBefore; res.BytesSent < rest || res.BytesSent > rest+1<<20 {
		t.Fatalf("second run sent %d bytes; the first had sent %d of %d pack bytes", res.BytesSent, sentBefore, packs)
	}

	site2 := newRewind(t)
	want := map[string]string{"vm@before": sha256Bytes(first), "vm": sha256Bytes(second), "vm@latest": sha256Bytes(second)}
	for spec, sum := range want {
		if got := sha256Bytes([]byte(site2.MustRun("--store", target, "export", spec, "-"))); got != sum {
			t.Fatalf("%s on the target: sha256 %s, want %s", spec, got, sum)
		}
	}
	if out := site2.MustRun("volume", "list"); strings.Contains(out, "other") {
		t.Fatalf("a volume not asked for was replicated:\n%s", out)
	}
	for _, args := range [][]string{{"import", "vm", v1}, {"point", "add", "vm", "x"}} {
		r := site2.Run(args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, "replica of another site") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
			t.Fatalf("rewind %s on the target: %s; want a one-line refusal", strings.Join(args, " "), r)
		}
	}
	site2.MustRun("clone", "vm@before", "mine")

	// A daemon serving the target for writing holds it: a run is refused
	// in one line and changes nothing there.
	writer := site2.Serve(serveOptions{})
	r := rw.Run("replicate", "--to", target)
	if r.Code == 0 || !strings.Contains(r.Stderr, "--read-only") || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 0 {
		t.Fatalf("replicate to a target a daemon writes: %s", r)
	}
	writer.Stop()

	// Through the daemon, by its socket; the daemon replicates on its own too.
	srv := rw.Serve(serveOptions{HTTP: true, Args: []string{"--replicate-to", filepath.Join(dir, "site3"), "--replicate-every", "200ms"}})
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "replicate", "--to", target)), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Complete || strings.Join(res.Volumes, ",") != "other,vm" || res.LagSeconds < 0 {
		t.Fatalf("replicate through the daemon: %+v", res)
	}
	waitUntil(t, 30*time.Second, "a scheduled replication", func() error {
		if m := metrics(t, srv); !strings.Contains(m, "\nrewind_replicate_runs_total ") || strings.Contains(m, "\nrewind_replicate_runs_total 0\n") {
			return os.ErrNotExist
		}
		return nil
	})
	m := metrics(t, srv)
	for _, name := range []string{"rewind_replicate_bytes_sent_total", "rewind_replicate_lag_seconds", "rewind_replicate_failures_total 0", "rewind_replicate_last_run_timestamp_seconds"} {
		if !strings.Contains(m, name) {
			t.Fatalf("/metrics has no %s", name)
		}
	}
	// A reader: the daemon goes on replicating there every 200 ms, and
	// holds the target's lease while it does.
	site3 := newRewind(t)
	if got := sha256Bytes([]byte(site3.MustRun("--store", filepath.Join(dir, "site3"), "--read-only", "export", "other", "-"))); got != sha256Bytes(first) {
		t.Fatal("the scheduled replication's target reads differently")
	}
}
