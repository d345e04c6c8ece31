package main

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "64K": 64 << 10, "64KiB": 64 << 10, "1G": 1 << 30, "3m": 3 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestSizesSpendTheBudget(t *testing.T) {
	for _, budget := range []int64{1 << 20, 7<<20 + 123, 300 << 20} {
		var sum int64
		for _, n := range sizes(newRand(1, "t"), budget, 4<<10, 4<<20) {
			if n <= 0 {
				t.Fatalf("budget %d: size %d", budget, n)
			}
			sum += n
		}
		if sum != budget {
			t.Errorf("sizes of budget %d sum to %d", budget, sum)
		}
	}
}

// A tree depends on its seed only: same seed, same files; another seed,
// other contents.
func TestTreeIsDeterministic(t *testing.T) {
	a, b, c := digestTree(t, 1), digestTree(t, 1), digestTree(t, 2)
	if a != b {
		t.Fatal("two trees of seed 1 differ")
	}
	if a == c {
		t.Fatal("trees of seeds 1 and 2 are the same")
	}
}

func digestTree(t *testing.T, seed uint64) [32]byte {
	t.Helper()
	dir := t.TempDir()
	tr := &tree{dir: dir, seed: seed, vocab: newVocabulary(seed)}
	if err := tr.build(4 << 20); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		h.Write([]byte(p[len(dir):] + "\x00"))
		h.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}
