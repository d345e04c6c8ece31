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

// scrubResult is what `rewind --json verify` prints.
type scrubResult struct {
	Packs           int      `json:"packs"`
	WithParity      int      `json:"with_parity"`
	NoParity        []string `json:"no_parity"`
	Repairable      int      `json:"repairable_units"`
	Repaired        int      `json:"repaired_units"`
	ParityMissing   int      `json:"parity_missing"`
	ParityRewritten int      `json:"parity_rewritten"`
	Healed          int      `json:"healed_chunks"`
	LostChunks      int      `json:"lost_chunks"`
	Affected        []struct {
		Volume        string `json:"volume"`
		BlockVersions int    `json:"block_versions"`
	} `json:"affected"`
	OK bool `json:"ok"`
}

// damagePack overwrites n bytes of a pack file at off.
func damagePack(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, n), off); err != nil {
		t.Fatal(err)
	}
}

// waitParity waits until the daemon has written the parity of its
// sealed packs (rewind_parity_pending_packs 0) and pack's sidecar is
// there.
func waitParity(t *testing.T, srv *server, sidecar string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, body := curlStatus(t, nil, "http://"+srv.HTTPAddr+"/metrics")
		if _, err := os.Stat(sidecar); err == nil && strings.Contains(body, "rewind_parity_pending_packs 0") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no parity for %s after 30 s", filepath.Base(sidecar))
}

// TestVerifyRepairsLightDamage: bytes overwritten in the middle of a
// sealed pack, in two stripes, and a parity file deleted: verify says
// what parity rebuilds, --repair rewrites it, exports read back
// sha256-identical, a read rebuilds fresh damage on its own, and a
// second verify finds nothing.
func TestVerifyRepairsLightDamage(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	var imgs []string
	for i := range 2 { // two imports, two packs
		img := filepath.Join(dir, fmt.Sprintf("v%d.img", i))
		if err := os.WriteFile(img, randomBytes(int64(110+i), 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		rw.MustRun("import", fmt.Sprintf("db%d", i), img)
		imgs = append(imgs, img)
	}
	srv := rw.Serve(serveOptions{HTTP: true, Args: []string{"--verify-every", "0"}})
	packs := filepath.Join(rw.Data, "packs")
	pack1, par2 := filepath.Join(packs, "00000001.pack"), filepath.Join(packs, "00000002.par")
	waitParity(t, srv, par2)

	damagePack(t, pack1, 1<<20+1000, 200)  // stripe 1
	damagePack(t, pack1, 3<<20+40000, 100) // stripe 3
	if err := os.Remove(par2); err != nil {
		t.Fatal(err)
	}
	var res scrubResult
	mustJSON(t, rw.MustRun("--json", "verify"), &res)
	if !res.OK || res.Repairable != 2 || res.ParityMissing != 1 || res.Repaired != 0 {
		t.Fatalf("verify: %+v; want 2 repairable units and 1 missing parity file, nothing lost", res)
	}
	mustJSON(t, rw.MustRun("--json", "verify", "--repair"), &res)
	if !res.OK || res.Repaired != 2 || res.ParityRewritten != 1 {
		t.Fatalf("verify --repair: %+v; want 2 units and 1 parity file rewritten", res)
	}
	if _, err := os.Stat(par2); err != nil {
		t.Fatalf("the deleted parity file was not written again: %v", err)
	}
	for i, img := range imgs {
		if got := exportSHA(t, srv.URI(fmt.Sprintf("db%d", i))); got != sha256File(t, img) {
			t.Errorf("db%d reads sha256 %.12s after repair, want %.12s", i, got, sha256File(t, img))
		}
	}

	// Fresh damage, found by a read: rebuilt and rewritten on the spot.
	damagePack(t, pack1, 5<<20+7, 64)
	if got := exportSHA(t, srv.URI("db0")); got != sha256File(t, imgs[0]) {
		t.Errorf("db0 reads sha256 %.12s with fresh damage, want %.12s", got, sha256File(t, imgs[0]))
	}
	if _, body := curlStatus(t, nil, "http://"+srv.HTTPAddr+"/metrics"); !strings.Contains(body, "rewind_parity_repaired_units_total 3") {
		t.Errorf("metrics do not count 3 rebuilt units")
	}
	mustJSON(t, rw.MustRun("--json", "verify"), &res)
	if !res.OK || res.Repairable != 0 || res.ParityMissing != 0 || res.WithParity != 2 {
		t.Fatalf("a second verify: %+v; want nothing found", res)
	}
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "last verify: ") || !strings.Contains(out, ", ok,") {
		t.Errorf("volume list does not show the last verify:\n%s", out)
	}
}

// TestVerifyHeavyDamageAndHealing: damage beyond what parity rebuilds
// makes reads of the blocks in it fail with EIO over NBD while the rest
// reads; verify exits non-zero naming both volumes that share the lost
// chunks; importing the original image again heals every instant.
func TestVerifyHeavyDamageAndHealing(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "v.img")
	if err := os.WriteFile(img, randomBytes(120, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "db", img)
	rw.MustRun("import", "copy", img) // the same chunks
	var log []struct{ Time string }
	mustJSON(t, rw.MustRun("--json", "log", "copy"), &log)
	srv := rw.Serve(serveOptions{HTTP: true, Args: []string{"--verify-every", "0"}})
	packs := filepath.Join(rw.Data, "packs")
	waitParity(t, srv, filepath.Join(packs, "00000001.par"))

	// The whole 1 MiB stripe that holds block 33's bytes (the import
	// writes its segments in the order they finish): 16 units, where
	// parity rebuilds 2.
	pack := filepath.Join(packs, "00000001.pack")
	raw, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(img)
	at := func(block int) int64 {
		i := bytes.Index(raw, data[block<<16:block<<16+64])
		if i < 0 {
			t.Fatalf("block %d is not stored raw in the pack", block)
		}
		return int64(i)
	}
	stripe := at(33) &^ (1<<20 - 1)
	damagePack(t, pack, stripe, int(min(1<<20, int64(len(raw))-stripe)))
	intact := -1
	for b := range 128 {
		if o := at(b); o >= stripe+1<<20+64<<10 || o+64<<10 < stripe-64<<10 {
			intact = b
			break
		}
	}
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	res := runCmd(t, nil, nil, qemuIO, "-f", "raw", "-r", "-c", fmt.Sprintf("read %d 64k", 33<<16), srv.URI("db"))
	if out := res.Stdout + res.Stderr; !strings.Contains(out, "Input/output error") {
		t.Fatalf("a read of a lost block: %s", res)
	}
	if intact < 0 {
		t.Fatal("no block lies outside the damaged stripe")
	}
	qemuIOReadOnly(t, srv.URI("db"), fmt.Sprintf("read %d 64k", intact<<16))
	if got := runCmd(t, nil, nil, qemuIO, "-f", "raw", "-r", "-c", fmt.Sprintf("read -v %d 16", intact<<16), srv.URI("db")); !strings.Contains(got.Stdout, fmt.Sprintf("%02x %02x", data[intact<<16], data[intact<<16+1])) {
		t.Fatalf("block %d, outside the damage, reads other bytes: %s", intact, got)
	}

	r := rw.Run("--json", "verify")
	if r.Code == 0 {
		t.Fatalf("verify exited 0 with chunks lost: %s", r)
	}
	var vr scrubResult
	mustJSON(t, r.Stdout, &vr)
	names := map[string]bool{}
	for _, a := range vr.Affected {
		names[a.Volume] = true
	}
	if vr.OK || vr.LostChunks == 0 || !names["db"] || !names["copy"] {
		t.Fatalf("verify: %+v; want lost chunks naming db and copy", vr)
	}
	if !strings.Contains(r.Stderr, "db") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Errorf("verify's error is not one line naming db: %q", r.Stderr)
	}

	// The original again: the lost chunks are stored anew, and both
	// volumes, at every instant, read back whole.
	rw.MustRun("import", "db", img)
	for _, spec := range []string{"db@latest", "copy@latest", "copy@" + log[0].Time} {
		if got := exportSHA(t, srv.URI(spec)); got != sha256File(t, img) {
			t.Errorf("%s reads sha256 %.12s after the re-import, want %.12s", spec, got, sha256File(t, img))
		}
	}
	mustJSON(t, rw.MustRun("--json", "verify"), &vr)
	if !vr.OK || vr.Healed == 0 {
		t.Fatalf("verify after healing: %+v", vr)
	}
}
