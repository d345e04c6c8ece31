package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// randomBytes returns n bytes from a seeded generator.
func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// sampleFiles is a small mixed file set: random, text and a duplicate.
func sampleFiles() map[string][]byte {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 20000)
	r := randomBytes(1, 3<<20)
	return map[string][]byte{
		"random.bin":        r,
		"docs/report.txt":   text,
		"docs/deleted.txt":  []byte("this file is deleted between the two imports\n"),
		"copy/random.bin":   r,
		"var/log/app.log":   bytes.Repeat([]byte("2026-11-25T14:03:10Z INFO request served in 3ms\n"), 5000),
		"etc/hostname":      []byte("db01\n"),
		"docs/changing.txt": []byte("version one\n"),
	}
}

// importedTwice builds an ext4 image, imports it at t1, changes files in
// it, and imports it again at t2. It returns the two images.
func importedTwice(t *testing.T, rw *rewind, t1, t2 string) (string, string) {
	img := makeExt4(t, 64<<20, sampleFiles())
	v1 := filepath.Join(t.TempDir(), "v1.img")
	mustRunCmd(t, "cp", "--sparse=always", img, v1)
	rw.MustRun("import", "db01", img, "--at", t1)
	debugfsRm(t, img, "/docs/deleted.txt")
	debugfsRm(t, img, "/docs/changing.txt")
	debugfsWriteBytes(t, img, "/docs/changing.txt", []byte("version two, longer than the first\n"))
	debugfsWriteBytes(t, img, "/new.bin", randomBytes(2, 1<<20))
	fsckClean(t, img)
	rw.MustRun("import", "db01", img, "--at", t2)
	return v1, img
}

// TestEveryInstantExportsBitForBit: every WHEN form names the right
// version, and its export is identical to the image imported then.
func TestEveryInstantExportsBitForBit(t *testing.T) {
	rw := newRewind(t)
	v1, v2 := importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	want1, want2 := sha256File(t, v1), sha256File(t, v2)
	if want1 == want2 {
		t.Fatal("the two images are the same; the test would prove nothing")
	}
	rw.MustRun("point", "add", "db01@2026-11-25T10:30:00Z", "before-patch")
	t1 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	since := func(tt time.Time) string { return fmt.Sprintf("-%ds", int(time.Since(tt).Seconds())-1) }
	cases := map[string]string{
		"db01@2026-11-25T10:00:00Z":           want1,
		"db01@2026-11-25T11:00:00Z":           want2,
		"db01@2026-11-25T10:59:59.999999999Z": want1, // between the two
		"db01@2026-11-25T11:30:00+01:00":      want1, // 10:30 UTC
		"db01@20261125T100000Z":               want1,
		"db01@20261125T110000.5Z":             want2,
		fmt.Sprintf("db01@%d", t1.Unix()):     want1,
		fmt.Sprintf("db01@%d.5", t1.Unix()):   want1,
		fmt.Sprintf("db01@%d", t2.Unix()):     want2,
		"db01@" + since(t2):                   want2, // relative, after t2
		"db01@-1s":                            want2,
		"db01@before-patch":                   want1,
		"db01@latest":                         want2,
	}
	// A relative time between the two imports only exists if they are in
	// the past by different amounts, which they are.
	if time.Since(t1) > 2*time.Hour {
		cases["db01@"+since(t1.Add(30*time.Minute))] = want1
	}
	for spec, want := range cases {
		out := filepath.Join(t.TempDir(), "out.img")
		rw.MustRun("export", spec, out)
		if got := sha256File(t, out); got != want {
			t.Errorf("export %s: sha256 %s, want %s", spec, got[:12], want[:12])
		}
	}
	// Export to standard output is the same bytes.
	res := rw.Run("export", "db01@before-patch", "-")
	if res.Code != 0 {
		t.Fatalf("export to stdout: %s", res)
	}
	if got := sha256Bytes([]byte(res.Stdout)); got != want1 {
		t.Errorf("export to stdout: sha256 %s, want %s", got[:12], want1[:12])
	}
	// The deleted file is in the first version and not in the second.
	out := filepath.Join(t.TempDir(), "out.img")
	rw.MustRun("export", "db01@2026-11-25T10:00:00Z", out)
	if !debugfsExists(t, out, "/docs/deleted.txt") {
		t.Error("deleted.txt is missing from the first version")
	}
	rw.MustRun("export", "db01@latest", out)
	if debugfsExists(t, out, "/docs/deleted.txt") {
		t.Error("deleted.txt is still in the second version")
	}
}

// TestListingsAndJSON: volume list, log, diff, point list and stats, as
// text and as JSON.
func TestListingsAndJSON(t *testing.T) {
	rw := newRewind(t)
	importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	var vols []struct {
		Name, Kind           string
		Size                 int64
		BlockSize            int64 `json:"block_size"`
		Versions             int64
		First, Last          string
		LogicalBytes, Stored int64
	}
	mustJSON(t, rw.MustRun("--json", "volume", "list"), &vols)
	if len(vols) != 1 || vols[0].Name != "db01" || vols[0].Versions != 2 || vols[0].Size != 64<<20 ||
		vols[0].BlockSize != 64<<10 || vols[0].Kind != "imported" || vols[0].First != "2026-11-25T10:00:00.000000000Z" {
		t.Errorf("volume list: %+v", vols)
	}
	var log []struct {
		Time   string
		Blocks int64
	}
	mustJSON(t, rw.MustRun("--json", "log", "db01"), &log)
	if len(log) != 2 || log[1].Time != "2026-11-25T11:00:00.000000000Z" || log[1].Blocks == 0 || log[1].Blocks >= log[0].Blocks {
		t.Errorf("log: %+v", log)
	}
	mustJSON(t, rw.MustRun("--json", "log", "db01", "--since", "2026-11-25T10:30:00Z"), &log)
	if len(log) != 1 {
		t.Errorf("log --since: %+v", log)
	}
	var diff struct {
		Ranges []struct{ Offset, Length int64 }
		Bytes  int64
	}
	mustJSON(t, rw.MustRun("--json", "diff", "db01@2026-11-25T10:00:00Z", "db01@latest"), &diff)
	if len(diff.Ranges) == 0 || diff.Bytes <= 0 || diff.Bytes > 8<<20 {
		t.Errorf("diff: %+v", diff)
	}
	mustJSON(t, rw.MustRun("--json", "diff", "db01@latest", "db01@latest"), &diff)
	if len(diff.Ranges) != 0 {
		t.Errorf("diff of an instant with itself: %+v", diff)
	}
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "db01") || !strings.Contains(out, "imported") {
		t.Errorf("volume list text: %s", out)
	}
	var st struct {
		DedupRatio float64 `json:"dedup_ratio"`
	}
	mustJSON(t, rw.MustRun("--json", "stats"), &st)
	if st.DedupRatio <= 1 { // random.bin is stored twice in the image
		t.Errorf("stats: dedup ratio %.2f, the duplicate file was not deduplicated", st.DedupRatio)
	}
	rw.MustRun("point", "add", "db01@2026-11-25T10:00:00Z", "first")
	var points []struct{ Label, Time string }
	mustJSON(t, rw.MustRun("--json", "point", "list", "db01"), &points)
	if len(points) != 1 || points[0].Label != "first" || points[0].Time != "2026-11-25T10:00:00.000000000Z" {
		t.Errorf("point list: %+v", points)
	}
	rw.MustRun("point", "rm", "db01", "first")
	mustJSON(t, rw.MustRun("--json", "point", "list", "db01"), &points)
	if len(points) != 0 {
		t.Errorf("point list after rm: %+v", points)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("not JSON (%v):\n%s", err, s)
	}
}

// dirSize is the bytes a directory takes on disk.
func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// TestUnchangedAndSparse: re-importing an unchanged image stores almost
// nothing; a 20 GiB sparse image with 12 MiB of data imports quickly,
// stores under 48 MiB, and exports sparse and identical.
func TestUnchangedAndSparse(t *testing.T) {
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "big.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(20 << 30)
	for i, off := range []int64{0, 7 << 30, 19<<30 + 5<<20} {
		f.WriteAt(randomBytes(int64(i), 4<<20), off)
	}
	f.Close()
	rw.MustRun("import", "big", img)
	stored := dirSize(t, rw.Data)
	if stored > 48<<20 {
		t.Errorf("a 20 GiB image with 12 MiB of data takes %d MiB", stored>>20)
	}
	rw.MustRun("import", "big", img)
	if grew := dirSize(t, rw.Data) - stored; grew > 1<<20 {
		t.Errorf("re-importing an unchanged image added %d KiB", grew>>10)
	}
	out := filepath.Join(t.TempDir(), "out.img")
	rw.MustRun("export", "big@latest", out)
	if got := dirSize(t, filepath.Dir(out)); got > 16<<20 {
		t.Errorf("export is not sparse: %d MiB on disk", got>>20)
	}
	mustRunCmd(t, "cmp", img, out)
	var log []struct{ Blocks int64 }
	mustJSON(t, rw.MustRun("--json", "log", "big"), &log)
	if len(log) != 2 || log[1].Blocks != 0 {
		t.Errorf("the unchanged re-import recorded blocks: %+v", log)
	}
}

// TestBadInputChangesNothing: every refusal says why in one line and
// leaves the data directory as it was.
func TestBadInputChangesNothing(t *testing.T) {
	rw := newRewind(t)
	importedTwice(t, rw, "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")
	img := makeExt4(t, 16<<20, map[string][]byte{"a": []byte("a")})
	before := rw.MustRun("--json", "volume", "list") + rw.MustRun("--json", "log", "db01")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"import", "db02", "/nonexistent/disk.img"}, "does not exist"},
		{[]string{"import", "db01", img, "--at", "2026-11-25T10:30:00Z"}, "--at must be later"},
		{[]string{"import", "db01", img, "--at", "yesterday-ish!"}, "bad time"},
		{[]string{"import", "bad/name", img}, "volume name"},
		{[]string{"export", "db01@not a time", filepath.Join(t.TempDir(), "x")}, "bad time"},
		{[]string{"export", "db01@2026-11-25T09:59:59Z", filepath.Join(t.TempDir(), "x")}, "no data before 2026-11-25T10:00:00Z"},
		{[]string{"export", "nosuch@latest", filepath.Join(t.TempDir(), "x")}, `no volume "nosuch"`},
		{[]string{"export", "db01@nolabel", filepath.Join(t.TempDir(), "x")}, "no recovery point"},
		{[]string{"clone", "db01@1999-01-01T00:00:00Z", "c1"}, "no data before"},
		{[]string{"clone", "nosuch", "c1"}, "no volume"},
		{[]string{"log", "nosuch"}, "no volume"},
		{[]string{"point", "add", "db01@latest", "latest"}, "label"},
		{[]string{"volume", "create", "v", "--size", "12 potatoes"}, "bad size"},
	} {
		res := rw.Run(c.args...)
		msg := strings.TrimSpace(res.Stderr)
		if res.Code == 0 || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("rewind %s: want one line containing %q, got exit %d:\n%s", strings.Join(c.args, " "), c.want, res.Code, msg)
		}
	}
	after := rw.MustRun("--json", "volume", "list") + rw.MustRun("--json", "log", "db01")
	if before != after {
		t.Errorf("refused commands changed the store:\nbefore %s\nafter %s", before, after)
	}
}

// TestImportKilledLeavesNoTrace kills imports with SIGKILL at several
// moments; each time the store reopens, holds only the earlier version,
// and reads it back bit for bit.
func TestImportKilledLeavesNoTrace(t *testing.T) {
	rw := newRewind(t)
	first := filepath.Join(t.TempDir(), "first.img")
	second := filepath.Join(t.TempDir(), "second.img")
	if err := os.WriteFile(first, randomBytes(1, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second, randomBytes(2, 512<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.MustRun("import", "vol", first, "--at", "2026-11-25T10:00:00Z")
	want := sha256File(t, first)
	killed := 0
	for _, delay := range []time.Duration{5 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond} {
		cmd := exec.Command(rw.Bin, "--data", rw.Data, "import", "vol", second)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Kill()
		err := cmd.Wait()
		if err == nil {
			continue // it finished first: nothing to check for this moment
		}
		var log []struct{ Time string }
		mustJSON(t, rw.MustRun("--json", "log", "vol"), &log)
		if len(log) == 2 {
			// The import committed before the signal landed: a whole
			// version, which must read back whole; later kills prove no more.
			out := filepath.Join(t.TempDir(), "out.img")
			rw.MustRun("export", "vol@latest", out)
			if sha256File(t, out) != sha256File(t, second) {
				t.Fatalf("an import killed after its commit at %v reads back different", delay)
			}
			break
		}
		if len(log) != 1 {
			t.Fatalf("after a kill at %v: %d versions, want 1", delay, len(log))
		}
		killed++
		out := filepath.Join(t.TempDir(), "out.img")
		rw.MustRun("export", "vol@latest", out)
		if got := sha256File(t, out); got != want {
			t.Fatalf("after a kill at %v the first version reads back different", delay)
		}
	}
	if killed == 0 {
		t.Fatal("every import finished before it was killed; the test proved nothing")
	}
	// The store still takes a whole import.
	rw.MustRun("import", "vol", second)
	out := filepath.Join(t.TempDir(), "out.img")
	rw.MustRun("export", "vol@latest", out)
	if sha256File(t, out) != sha256File(t, second) {
		t.Fatal("the import after the kills reads back different")
	}
}

func sha256Bytes(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
