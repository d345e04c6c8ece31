package blockstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestParityRepairsReads: a sealed pack gets its sidecar; light damage
// (two places in the pack, the sidecar deleted afterwards) is rebuilt on
// read and written back; heavy damage makes the chunks in it an error
// while the rest reads, Has reports them absent, and storing them again
// heals them.
func TestParityRepairsReads(t *testing.T) {
	dir := t.TempDir()
	s, db := openOnDisk(t, dir)
	var chunks [][]byte
	for i := range 64 {
		chunks = append(chunks, randomChunk(int64(i))) // 8 KiB, incompressible: 512 KiB
	}
	putRef(t, s, db, func(int) bool { return true }, chunks...)
	s.Close()
	s, db = reopenOnDisk(t, dir, db)
	defer s.Close()
	s.WaitParity()
	pack := dir + "/packs/" + packName(1)
	if _, err := os.Stat(dir + "/packs/" + parityName(1)); err != nil {
		t.Fatalf("no sidecar for a sealed pack: %v", err)
	}
	damage := func(off int64, n int) {
		t.Helper()
		f, err := os.OpenFile(pack, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, n), off); err != nil {
			t.Fatal(err)
		}
	}
	damage(100<<10, 300) // stripe 0, unit 1
	damage(300<<10, 10)  // stripe 0, unit 4
	for _, c := range chunks {
		mustGet(t, s, Sum(c), c)
	}
	if st := s.ParityStats(); st.Repaired != 2 || st.Damaged != 0 {
		t.Fatalf("after light damage: %+v, want 2 units rebuilt", st)
	}
	// Rewritten in place: a fresh store reads it without repairing.
	s.Close()
	s, db = reopenOnDisk(t, dir, db)
	defer s.Close()
	for _, c := range chunks {
		mustGet(t, s, Sum(c), c)
	}
	if st := s.ParityStats(); st.Repaired != 0 {
		t.Fatalf("repaired again: %+v", st)
	}

	// Three units of stripe 0: beyond repair.
	damage(64<<10, 3*64<<10)
	var lost, fine int
	for _, c := range chunks {
		got, err := s.Get(Sum(c))
		switch {
		case errors.Is(err, ErrCorrupt):
			lost++
			if ok, _ := s.Has(Sum(c)); ok {
				t.Fatal("Has reports a damaged chunk as stored")
			}
		case err != nil || !bytes.Equal(got, c):
			t.Fatalf("a chunk outside the damage: %v", err)
		default:
			fine++
		}
	}
	if lost == 0 || fine == 0 {
		t.Fatalf("%d chunks lost, %d fine; want some of each", lost, fine)
	}
	// Stored again, they read.
	putRef(t, s, db, func(int) bool { return true }, chunks...)
	for _, c := range chunks {
		mustGet(t, s, Sum(c), c)
	}
}

// reopenOnDisk opens the store in dir again, on the same index.
func reopenOnDisk(t *testing.T, dir string, db *pebble.DB) (*Store, *pebble.DB) {
	t.Helper()
	s, err := Open(Options{Dir: dir + "/packs", DB: db, Codec: CodecRaw})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

// sealNow seals the pack being written and writes its parity (unless
// the store has none), as the background worker would.
func sealNow(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	n := s.mu.active
	s.mu.active = 0
	s.mu.Unlock()
	s.waitWrites(n)
	if s.noParity {
		return
	}
	if err := s.writeParity(n); err != nil {
		t.Fatal(err)
	}
}

// TestScrubPacksWithoutParity: packs written without parity (as by
// builds before it) read as ever, are checked record by record, and are
// named; a damaged record in one is lost, not repaired.
func TestScrubPacksWithoutParity(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir+"/db", &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{Dir: dir + "/packs", DB: db, Codec: CodecRaw, NoParity: true})
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	for i := range 8 {
		chunks = append(chunks, randomChunk(int64(i)))
	}
	ids := putRef(t, s, db, func(int) bool { return true }, chunks...)
	s.Close()
	// Opened by a build that writes parity: the old pack stays as it is.
	s, db = reopenOnDisk(t, dir, db)
	defer s.Close()
	for i, id := range ids {
		mustGet(t, s, id, chunks[i])
	}
	res, err := s.Scrub(context.Background(), ScrubOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.NoParity) != 1 || res.WithParity != 0 || len(res.Lost) != 0 {
		t.Fatalf("scrub: %+v, want one pack without parity and nothing lost", res)
	}
	if _, err := os.Stat(dir + "/packs/" + parityName(1)); err == nil {
		t.Fatal("a pack written without parity got a parity file")
	}
	loc, _ := s.locateIndex(ids[3])
	f, _ := os.OpenFile(dir+"/packs/"+packName(1), os.O_RDWR, 0)
	f.WriteAt([]byte("rot"), loc.offset+recordHeaderSize+10)
	f.Close()
	res, err = s.Scrub(context.Background(), ScrubOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Lost) != 1 || res.Lost[0] != ids[3] {
		t.Fatalf("scrub after damage: %+v, want chunk 3 lost", res)
	}
}
