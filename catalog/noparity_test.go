package catalog

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Options.NoParity (rewind --no-parity) writes packs without parity
// files, and verify says they have none; by default every sealed pack has
// its sidecar once the store closes.
func TestNoParityWritesNoSidecars(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, off := range []bool{false, true} {
		d := filepath.Join(dir, map[bool]string{false: "on", true: "off"}[off])
		s, err := Open(Options{Dir: d, NoParity: off})
		if err != nil {
			t.Fatal(err)
		}
		src, err := OpenSource(img)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Import(ctx, ImportRequest{Volume: "v", Source: img, File: src}, nil)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		names, err := os.ReadDir(filepath.Join(d, "packs"))
		if err != nil {
			t.Fatal(err)
		}
		var packs, pars int
		for _, n := range names {
			packs += btoi(strings.HasSuffix(n.Name(), ".pack"))
			pars += btoi(strings.HasSuffix(n.Name(), ".par"))
		}
		if packs == 0 {
			t.Fatalf("no-parity %v: no pack written", off)
		}
		if want := map[bool]int{false: packs, true: 0}[off]; pars != want {
			t.Fatalf("no-parity %v: %d packs, %d parity files; want %d", off, packs, pars, want)
		}
		// Opened again with parity on, the store leaves those packs
		// without parity, and verify says so.
		s, err = Open(Options{Dir: d})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Verify(ctx, VerifyRequest{}, nil)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK || res.Packs != packs || (off && (res.WithParity != 0 || len(res.NoParity) != packs)) || (!off && res.WithParity != packs) {
			t.Fatalf("no-parity %v: verify %+v, want %d packs, all with parity or none", off, res, packs)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
