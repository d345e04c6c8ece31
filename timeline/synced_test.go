package timeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore"
)

// holdSynced keeps the synced mark where it is while a test runs (it
// still moves at a clean close).
func holdSynced(t *testing.T) {
	old := syncedInterval
	syncedInterval = time.Hour
	t.Cleanup(func() { syncedInterval = old })
}

func readSyncedMark(t *testing.T, e *scriptEnv) int64 {
	t.Helper()
	mark, ok, err := e.s.readSynced()
	if err != nil || !ok {
		t.Fatalf("synced mark: %d, %v, %v", mark, ok, err)
	}
	return mark
}

// newestPlace returns the chunk and place of c's newest version of block.
func newestPlace(t *testing.T, e *scriptEnv, block uint64) (blockstore.ID, blockstore.Place) {
	t.Helper()
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	v, closer, err := e.db.Get(versionKey(nil, m.ID, block, m.Last))
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	en, err := decodeValue(v)
	if err != nil || en.isPatch || en.ref.kind != refChunk || !en.ref.place.Known() {
		t.Fatalf("block %d: %+v, %v", block, en, err)
	}
	return en.ref.id, en.ref.place
}

// TestLostWritesAreDroppedAtOpen: a write whose chunk a crash lost, after
// the synced mark, changes no block once the store reopens, nor does a
// later write of the same block; other writes stay, the lost chunk's
// index entry goes, and writes before the mark are not read back.
func TestLostWritesAreDroppedAtOpen(t *testing.T) {
	t.Run("torn tail", func(t *testing.T) { testLostWrites(t, false, true) })
	// No write after the mark stays: the newest version is the last one
	// at or before the mark.
	t.Run("nothing after the mark stays", func(t *testing.T) { testLostWrites(t, false, false) })
	// The record lost lies more than the 8 MiB that blockstore.Open
	// checks before the newest pack's end: the pack is not cut, and the
	// later write of the same block stays readable. It is dropped all
	// the same: it was written over what was lost.
	t.Run("record far from the end", func(t *testing.T) { testLostWrites(t, true, true) })
}

func testLostWrites(t *testing.T, far, keepOne bool) {
	holdSynced(t)
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	const size = 16 * testBS
	orig := pattern(1, size)
	v := cloneOf(t, e, orig, testBS)
	write := func(b int64, seed byte) {
		t.Helper()
		if _, err := v.WriteAt(block(seed), b*testBS); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 1)
	if err := e.s.saveSynced(false); err != nil {
		t.Fatal(err)
	}
	mark := readSyncedMark(t, e)
	if m, _ := e.s.Volume("c"); mark != m.Last {
		t.Fatalf("mark %d after a sync, newest version %d", mark, m.Last)
	}
	if keepOne {
		write(5, 5) // kept: its record lies before the lost one
	}
	newest := func() int64 {
		t.Helper()
		m, err := e.s.Volume("c")
		if err != nil {
			t.Fatal(err)
		}
		return m.Last
	}
	kept := newest()
	write(3, 3) // lost below
	lostID, lostAt := newestPlace(t, e, 3)
	lostT := newest()
	write(3, 4) // a later write of the same block
	laterID, _ := newestPlace(t, e, 3)
	laterT := newest()
	// Distinct records past 8 MiB (4 KiB each, none deduplicated).
	const farWrites = 2400
	farData := func(i int) []byte {
		p := block(byte(i))
		binary.BigEndian.PutUint64(p, uint64(i))
		return p
	}
	if far {
		for i := range farWrites {
			if _, err := v.WriteAt(farData(i), int64(8+i%8)*testBS); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Everything reaches the disk but the record of block 3's first
	// write (the log's records of writes not flushed may reach it before
	// their pack bytes, if the kernel writes them out first); the pack's
	// torn tail is cut there when the store opens, with the record of
	// the write after it.
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if readSyncedMark(t, e) != mark {
		t.Fatal("a flush moved the saved mark")
	}
	pack, off := lostAt.Where()
	f, err := e.fs.OpenReadWrite(fmt.Sprintf("packs/%08d.pack", pack), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 64), off+1000); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	crashed := e.fs.CrashClone(vfs.CrashCloneCfg{})
	v.Close()
	e.close()
	e.fs = crashed
	e.open()
	defer func() { e.close() }()
	v = cloneView(t, e)
	defer v.Close()
	got := make([]byte, size)
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatalf("after the crash the clone reads as %v", err)
	}
	want := bytes.Clone(orig)
	copy(want[1*testBS:], block(1))
	if keepOne {
		copy(want[5*testBS:], block(5))
	}
	if far {
		for i := farWrites - 8; i < farWrites; i++ {
			copy(want[(8+i%8)*testBS:], farData(i))
		}
		if _, err := e.bs.Get(laterID); err != nil {
			t.Fatalf("the later write's record was cut: %v", err)
		}
	}
	for b := range int64(16) {
		if !bytes.Equal(got[b*testBS:(b+1)*testBS], want[b*testBS:(b+1)*testBS]) {
			t.Errorf("block %d reads wrong after the crash", b)
		}
	}
	if _, err := e.bs.Get(lostID); !errors.Is(err, blockstore.ErrNotFound) {
		t.Fatalf("the lost chunk is still indexed: %v", err)
	}
	// The dropped versions are gone from the history: the log lists
	// neither, and the metadata counts only what the log lists.
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	log, err := e.s.Log(m.ID, 0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	var logical, stored int64
	for _, lv := range log {
		if lv.Time == lostT || lv.Time == laterT {
			t.Errorf("the log still lists the dropped version at %d", lv.Time)
		}
		logical += lv.Bytes
		stored += lv.Stored
	}
	if int64(len(log)) != m.Versions || m.Last != log[len(log)-1].Time || m.First != log[0].Time {
		t.Errorf("metadata: %d versions from %d to %d; the log lists %d from %d to %d",
			m.Versions, m.First, m.Last, len(log), log[0].Time, log[len(log)-1].Time)
	}
	if m.LogicalBytes != logical || m.StoredBytes != stored {
		t.Errorf("metadata: %d bytes written, %d stored; the log's versions %d and %d", m.LogicalBytes, m.StoredBytes, logical, stored)
	}
	if !far && m.Last != kept {
		t.Errorf("newest version %d after the crash, want the last one kept, %d", m.Last, kept)
	}
	// The store took the check's result as its new mark.
	if mark := readSyncedMark(t, e); mark < m.Last {
		t.Fatalf("mark %d after the check, newest version %d", mark, m.Last)
	}
	// A new write of the lost bytes stores them again.
	w := cloneView(t, e)
	defer w.Close()
	if _, err := w.WriteAt(block(3), 3*testBS); err != nil {
		t.Fatal(err)
	}
	if _, err := e.bs.Get(lostID); err != nil {
		t.Fatalf("the lost chunk written again: %v", err)
	}
}

// TestSyncedMarkMoves: the mark follows the writes in the background and
// reaches the newest version at a clean close; a store that has none (an
// earlier build's) gets one when it opens.
func TestSyncedMarkMoves(t *testing.T) {
	old := syncedInterval
	syncedInterval = 5 * time.Millisecond
	t.Cleanup(func() { syncedInterval = old })
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	const size = 4 * testBS
	v := cloneOf(t, e, pattern(1, size), testBS)
	if _, err := v.WriteAt(block(7), testBS); err != nil {
		t.Fatal(err)
	}
	v.Close()
	m, _ := e.s.Volume("c")
	deadline := time.Now().Add(10 * time.Second)
	for readSyncedMark(t, e) < m.Last {
		if time.Now().After(deadline) {
			t.Fatalf("the mark stayed at %d, behind the write at %d", readSyncedMark(t, e), m.Last)
		}
		time.Sleep(time.Millisecond)
	}
	e.close()
	// An earlier build's store: no mark.
	db, err := pebble.Open("db", PebbleOptions(NewGuard(e.fs, "", 0, nil), nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(syncedKey, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	e.open()
	defer func() { e.close() }()
	if m, _ := e.s.Volume("c"); readSyncedMark(t, e) != m.Last {
		t.Fatalf("a store without a mark opened with mark %d, newest version %d", readSyncedMark(t, e), m.Last)
	}
}

// TestStampedWrites: a write stamped ahead of its recording (a protected
// disk's small write, recorded behind its reply) is recorded at its
// stamp; until then the synced mark stays before it, as its chunk is
// not stored yet. A stamp not later than the volume's newest version is
// refused and records nothing.
func TestStampedWrites(t *testing.T) {
	holdSynced(t)
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer func() { e.close() }()
	v := cloneOf(t, e, pattern(1, 4*testBS), testBS)
	defer v.Close()
	at := v.Stamp()
	if err := e.s.saveSynced(false); err != nil {
		t.Fatal(err)
	}
	if mark := readSyncedMark(t, e); mark >= at {
		t.Fatalf("synced mark %d with a write stamped %d not recorded", mark, at)
	}
	p := pattern(7, 100)
	if err := v.WriteMany([]Write{{P: p, Off: testBS + 10, At: at}}); err != nil {
		t.Fatal(err)
	}
	m, err := e.s.Volume("c")
	if err != nil || m.Last != at {
		t.Fatalf("newest version %d (%v), want the stamp %d", m.Last, err, at)
	}
	if err := e.s.saveSynced(false); err != nil {
		t.Fatal(err)
	}
	if mark := readSyncedMark(t, e); mark < at {
		t.Fatalf("synced mark %d before the recorded write stamped %d", mark, at)
	}
	if err := v.WriteMany([]Write{{P: p, Off: 0, At: at}}); err == nil {
		t.Fatal("a write stamped at the newest version's time was recorded")
	}
	if m2, _ := e.s.Volume("c"); m2.Last != at || m2.Versions != m.Versions {
		t.Fatalf("a refused stamped write changed the volume: %+v", m2)
	}
	got := make([]byte, 100)
	if _, err := v.ReadAt(got, testBS+10); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("the stamped write reads back %v", err)
	}
}
