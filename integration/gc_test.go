package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// gcResult is what `rewind --json gc` prints.
type gcResult struct {
	Chunks          int64   `json:"chunks"`
	Referenced      int64   `json:"referenced"`
	Removed         int64   `json:"removed_chunks"`
	Seconds         float64 `json:"seconds"`
	PacksRemoved    int     `json:"packs_removed"`
	FreedBytes      int64   `json:"freed_bytes"`
	PackBytesBefore int64   `json:"pack_bytes_before"`
	PackBytesAfter  int64   `json:"pack_bytes_after"`
}

// packBytes is the size of the pack files of a data directory.
func packBytes(t *testing.T, data string) int64 {
	t.Helper()
	var n int64
	entries, err := os.ReadDir(filepath.Join(data, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".pack") {
			n += fi.Size()
		}
	}
	return n
}

// TestGCAfterPrune: after prune and gc the version count and the bytes
// on disk drop, the label and the newest version read back
// sha256-identical, volume list and the metrics say what gc freed, and a
// dry run and a second gc change nothing.
func TestGCAfterPrune(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	now := time.Now().UTC()
	var imgs, whens []string
	for i := range 4 {
		img := filepath.Join(dir, fmt.Sprintf("v%d.img", i))
		if err := os.WriteFile(img, randomBytes(int64(80+i), 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		at := now.Add(time.Duration(i-4) * time.Hour).Format(time.RFC3339)
		rw.MustRun("import", "db", img, "--at", at)
		imgs, whens = append(imgs, img), append(whens, at)
	}
	rw.MustRun("point", "add", "db@"+whens[1], "keepme")
	srv := rw.Serve(serveOptions{HTTP: true})
	rw.MustRun("retention", "set", "db", "--keep-all", "30m", "--keep-minutely", "0", "--keep-hourly", "0", "--keep-daily", "0")
	rw.MustRun("prune", "db")
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "db"), &log)
	if len(log) != 2 {
		t.Fatalf("%d versions after the prune, want the label's and the newest", len(log))
	}
	before := packBytes(t, rw.Data)

	var dry gcResult
	mustJSON(t, rw.MustRun("--json", "gc", "--dry-run"), &dry)
	if dry.Removed == 0 || packBytes(t, rw.Data) != before {
		t.Fatalf("dry run: %+v; packs %d -> %d bytes", dry, before, packBytes(t, rw.Data))
	}
	var res gcResult
	mustJSON(t, rw.MustRun("--json", "gc"), &res)
	after := packBytes(t, rw.Data)
	t.Logf("gc: %+v; packs %d -> %d bytes", res, before, after)
	if res.Removed != dry.Removed || res.FreedBytes < 12<<20 || after > before-12<<20 {
		t.Fatalf("gc freed too little: %+v; packs %d -> %d bytes (two 8 MiB versions went)", res, before, after)
	}
	check := func(spec, want string) { t.Helper(); requireExportOf(t, rw, spec, want) }
	check("db@keepme", imgs[1])
	check("db@latest", imgs[3])

	var vols []struct {
		Name      string
		LastPrune *struct {
			Removed int `json:"removed_versions"`
		} `json:"last_prune"`
		LastGC *struct {
			Removed    int64 `json:"removed_chunks"`
			FreedBytes int64 `json:"freed_bytes"`
		} `json:"last_gc"`
	}
	mustJSON(t, rw.MustRun("--json", "volume", "list"), &vols)
	if len(vols) != 1 || vols[0].LastPrune == nil || vols[0].LastPrune.Removed != 2 ||
		vols[0].LastGC == nil || vols[0].LastGC.FreedBytes != res.FreedBytes {
		t.Fatalf("volume list does not say what prune and gc did: %+v", vols)
	}
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "last gc: ") || !strings.Contains(out, "last prune of db: ") {
		t.Errorf("volume list:\n%s", out)
	}
	code, body := curlStatus(t, nil, "http://"+srv.HTTPAddr+"/metrics")
	if code != "200" || !strings.Contains(body, fmt.Sprintf("rewind_gc_last_removed_chunks %d", res.Removed)) {
		t.Errorf("metrics (%s) do not say what the last gc removed", code)
	}

	var again gcResult
	mustJSON(t, rw.MustRun("--json", "gc"), &again)
	if again.Removed != 0 {
		t.Errorf("a second gc removed %d chunks", again.Removed)
	}
	check("db@keepme", imgs[1])
}

// TestGCUnderLoad: a gc runs while four nbdcopy readers read old
// instants of a protected volume over and over and a writer keeps
// writing to it; every read, and every kept instant after, is
// sha256-identical to what was written.
func TestGCUnderLoad(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy", "libnbd-bin")
	rw := newRewind(t)
	dir := t.TempDir()
	const size = 16 << 20
	primary := filepath.Join(dir, "prod.img")
	if err := os.WriteFile(primary, randomBytes(90, size), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := rw.Serve(serveOptions{})
	rw.MustRun("protect", "vol", "--primary", primary)
	// Six generations of the whole disk; the second and the fourth are
	// labelled, the rest goes to prune.
	want := map[string]string{}
	for i := range 6 {
		img := filepath.Join(dir, fmt.Sprintf("g%d.img", i))
		if err := os.WriteFile(img, randomBytes(int64(91+i), size), 0o644); err != nil {
			t.Fatal(err)
		}
		mustRunCmd(t, nbdcopy, img, srv.URI("vol"))
		if i == 1 || i == 3 {
			label := fmt.Sprintf("gen%d", i)
			rw.MustRun("point", "add", "vol@latest", label)
			want[label] = sha256File(t, img)
		}
	}
	rw.MustRun("retention", "set", "vol", "--keep-all", "0", "--keep-minutely", "0", "--keep-hourly", "0", "--keep-daily", "0")
	rw.MustRun("prune", "vol")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	reads := make([]int, 4)
	var warm sync.WaitGroup // each reader has read once: gc starts amid their next reads
	warm.Add(4)
	for r := range 4 {
		label := []string{"gen1", "gen3"}[r%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := filepath.Join(dir, fmt.Sprintf("read%d.img", r))
			defer func() {
				if reads[r] == 0 {
					warm.Done()
				}
			}()
			for ctx.Err() == nil {
				os.Remove(out)
				if b, err := exec.Command(nbdcopy, srv.URI("vol@"+label), out).CombinedOutput(); err != nil {
					errs <- fmt.Errorf("nbdcopy of vol@%s during gc: %v: %s", label, err, b)
					return
				}
				if got := fileSHA(out); got != want[label] {
					errs <- fmt.Errorf("vol@%s read during gc has sha256 %.12s, want %.12s", label, got, want[label])
					return
				}
				if reads[r]++; reads[r] == 1 {
					warm.Done()
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the protected writer
		defer wg.Done()
		qemuIO := requireTool(t, "qemu-io", "qemu-utils")
		for i := 0; ctx.Err() == nil; i++ {
			cmd := exec.Command(qemuIO, "-f", "raw", "-c", fmt.Sprintf("write -P 0x%x %dk 64k", 0x10+i%200, (i*64)%(size>>10)), "-c", "flush", srv.URI("vol"))
			if b, err := cmd.CombinedOutput(); err != nil || bytes.Contains(b, []byte("failed")) {
				errs <- fmt.Errorf("write to the protected volume during gc: %v: %s", err, b)
				return
			}
		}
	}()
	warm.Wait()
	var res gcResult
	mustJSON(t, rw.MustRun("--json", "gc"), &res)
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("gc: %+v; reads during it: %v", res, reads)
	if res.Removed == 0 || res.PacksRemoved == 0 {
		t.Errorf("gc removed no chunk or no pack: %+v", res)
	}
	for label, sum := range want {
		if got := exportSHA(t, srv.URI("vol@"+label)); got != sum {
			t.Errorf("vol@%s reads sha256 %.12s after gc, want %.12s", label, got, sum)
		}
	}
	if got := exportSHA(t, srv.URI("vol@latest")); got != sha256File(t, primary) {
		t.Errorf("vol@latest reads sha256 %.12s after gc, the primary %.12s", got, sha256File(t, primary))
	}
}

func fileSHA(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

// TestGCReclaimsKilledImport: an import whose client is killed halfway,
// after another import wrote between its chunks (so that its bytes could
// not be cut off at once), leaves its chunks unreferenced; gc gives
// their space back, and the other volume reads back whole.
func TestGCReclaimsKilledImport(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	srv := rw.Serve(serveOptions{HTTP: true})
	pr, pw := io.Pipe()
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+srv.HTTPAddr+"/v1/imports?volume=big", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 64 << 20 // it never gets there
	req.Header.Set("Authorization", "Bearer "+srv.APIToken(t))
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("the killed import answered %s: %s", resp.Status, b)
		}
		done <- err
	}()
	send := func(seed int64, n int) {
		t.Helper()
		if _, err := pw.Write(randomBytes(seed, n)); err != nil {
			t.Fatal(err)
		}
	}
	send(100, 24<<20)
	// Wait for its chunks to reach the packs.
	deadline := time.Now().Add(30 * time.Second)
	for packBytes(t, rw.Data) < 16<<20 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	other := filepath.Join(dir, "other.img")
	if err := os.WriteFile(other, randomBytes(101, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "other", other)
	send(102, 8<<20)
	kill()
	pw.CloseWithError(fmt.Errorf("killed"))
	if err := <-done; err == nil {
		t.Fatal("the killed import succeeded")
	}
	// The import is undone once the daemon sees the request end.
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && strings.Contains(rw.MustRun("volume", "list"), "big") {
		time.Sleep(100 * time.Millisecond)
	}
	if out := rw.MustRun("volume", "list"); strings.Contains(out, "big") {
		t.Fatalf("the killed import left its volume:\n%s", out)
	}
	before := packBytes(t, rw.Data)
	var res gcResult
	mustJSON(t, rw.MustRun("--json", "gc"), &res)
	after := packBytes(t, rw.Data)
	t.Logf("gc: %+v; packs %d -> %d bytes", res, before, after)
	if before < 20<<20 || after > 8<<20 {
		t.Errorf("packs hold %d bytes before gc and %d after; want the killed import's 20+ MiB back", before, after)
	}
	out := filepath.Join(dir, "out.img")
	rw.MustRun("export", "other", out)
	if sha256File(t, out) != sha256File(t, other) {
		t.Error("the other volume does not read back whole after gc")
	}
}
