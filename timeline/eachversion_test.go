package timeline

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestEachVersionLongHistory walks 100,000 version summaries of one
// volume from 1 s on (its creation, at 1 ns, is before) (written straight into the index: recording that many versions
// would take minutes) in one pass, oldest first, skipping the neighbour
// volume's, and agrees with Log. It logs how long the pass takes: the
// activity chart of a volume this long is one such pass.
func TestEachVersionLongHistory(t *testing.T) {
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1}
	e.open()
	defer e.s.Close()
	v, err := e.s.CreateVolume("long", 1<<20, 4096, KindCreated)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.s.CreateVolume("other", 1<<20, 4096, KindCreated)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	b := e.db.NewBatch()
	for i := range n {
		sum := summary{Kind: VersionWrite, Blocks: 1, Bytes: uint64(i % 7 * 4096), Size: 1 << 20}
		b.Set(timeKey(v.ID, int64(i+1)*int64(time.Second), summaryPart), sum.marshal(), nil)
		if i%1000 == 0 {
			b.Set(timeKey(other.ID, int64(i+1)*int64(time.Second), summaryPart), sum.marshal(), nil)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	count, bytes, last := 0, uint64(0), int64(0)
	err = e.s.EachVersion(v.ID, int64(time.Second), 1<<62, func(x VersionInfo) {
		if x.Time <= last {
			t.Fatalf("version %d at %d after %d: not oldest first", count, x.Time, last)
		}
		last = x.Time
		count++
		bytes += uint64(x.Bytes)
	})
	took := time.Since(start)
	if err != nil || count != n {
		t.Fatalf("EachVersion: %d versions, %v; want %d", count, err, n)
	}
	var want uint64
	for i := range n {
		want += uint64(i % 7 * 4096)
	}
	if bytes != want {
		t.Fatalf("EachVersion: %d bytes, want %d", bytes, want)
	}
	t.Logf("one pass over %d versions: %v", n, took)
	log, err := e.s.Log(v.ID, 50*int64(time.Second), 60*int64(time.Second))
	if err != nil || len(log) != 11 || log[0].Time != 50*int64(time.Second) {
		t.Fatalf("Log of [50 s, 60 s]: %d versions, %v", len(log), err)
	}
}
