package timeline

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// pruneEnv is a clone with a history of partial and whole-block writes,
// and what it held at each version.
type pruneEnv struct {
	e     *scriptEnv
	vol   uint64
	times []int64
	imgs  map[int64][]byte
	disk  []byte
	rng   *rand.Rand
}

func newPruneEnv(t *testing.T, writes int) *pruneEnv {
	return newPruneEnvRanges(t, writes, 0)
}

// newPruneEnvRanges is newPruneEnv with zeroing of rangeBlocks whole
// blocks or more recorded as range records (0: the default).
func newPruneEnvRanges(t *testing.T, writes int, rangeBlocks int64) *pruneEnv {
	const bs = 16 << 10
	const size = 8 * bs
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1000, rangeBlocks: rangeBlocks}
	e.open()
	t.Cleanup(func() { e.close() })
	p := &pruneEnv{e: e, imgs: map[int64][]byte{}, rng: rand.New(rand.NewSource(3))}
	p.disk = make([]byte, size)
	p.rng.Read(p.disk[:4*bs])
	if _, err := e.s.Import(context.Background(), ImportOptions{Name: "a", Source: bytes.NewReader(p.disk), Size: size, At: 100, BlockSize: bs}); err != nil {
		t.Fatal(err)
	}
	m, err := e.s.Clone("a", 100, "c")
	if err != nil {
		t.Fatal(err)
	}
	p.vol = m.ID
	p.record(t)
	p.write(t, writes)
	return p
}

func (p *pruneEnv) record(t *testing.T) {
	m, err := p.e.s.VolumeByID(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	p.times = append(p.times, m.Last)
	p.imgs[m.Last] = bytes.Clone(p.disk)
}

func (p *pruneEnv) write(t *testing.T, n int) {
	v, err := p.e.s.Head(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	size := int64(len(p.disk))
	for range n {
		off := p.rng.Int63n(size)
		l := 1 + p.rng.Int63n(min(size-off, 20000))
		if p.rng.Intn(3) == 0 { // a hot block, so runs of patches form
			off, l = 2*16<<10+p.rng.Int63n(4096), 1+p.rng.Int63n(4096)
		}
		if p.rng.Intn(8) == 0 {
			if p.e.rangeBlocks != 0 && p.rng.Intn(2) == 0 { // runs of whole blocks
				l = 1 + p.rng.Int63n(size-off)
			}
			if err := v.Trim(off, l); err != nil {
				t.Fatal(err)
			}
			clear(p.disk[off : off+l])
		} else {
			b := make([]byte, l)
			p.rng.Read(b)
			if _, err := v.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(p.disk[off:], b)
		}
		p.e.clock += 10
		p.record(t)
	}
}

// check reads every recorded instant: one kept reads what it held, one
// pruned what the newest kept version before it held.
func (p *pruneEnv) check(t *testing.T, when string) {
	t.Helper()
	log, err := p.e.s.Log(p.vol, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	var kept []int64
	for _, v := range log {
		kept = append(kept, v.Time)
	}
	for _, at := range p.times {
		i, found := slices.BinarySearch(kept, at)
		if !found {
			i--
		}
		if i < 0 {
			if _, err := p.e.s.ViewAt(p.vol, at); !errors.Is(err, ErrBeforeFirst) {
				t.Fatalf("%s: instant %d before every kept version opened: %v", when, at, err)
			}
			continue
		}
		want := p.imgs[kept[i]]
		v, err := p.e.s.ViewAt(p.vol, at)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		v.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: instant %d reads other bytes than version %d held", when, at, kept[i])
		}
	}
}

func (p *pruneEnv) blockVersions(t *testing.T) int {
	lo, hi := volumeBounds(tagVersion, p.vol)
	it, err := p.e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// Prune keeps the versions asked for and the newest, and every instant,
// kept or pruned, reads a version that was: before and after a reopen,
// and with writes after the prune.
func TestPruneKeepsWhatItSays(t *testing.T) {
	for _, rb := range rangeSettings {
		t.Run(rb.name, func(t *testing.T) { testPruneKeepsWhatItSays(t, rb.blocks) })
	}
}

// rangeSettings run a test with zeroing recorded as usual, and with every
// run of whole blocks zeroed recorded as a range record.
var rangeSettings = []struct {
	name   string
	blocks int64
}{{"default", 0}, {"ranges", 1}}

func testPruneKeepsWhatItSays(t *testing.T, rangeBlocks int64) {
	p := newPruneEnvRanges(t, 300, rangeBlocks)
	if n := allRanges(t, p.e.db); rangeBlocks == 1 && n == 0 {
		t.Fatal("no range record was written: the prune checked none")
	}
	var keep []int64
	for i := 0; i < len(p.times); i += 37 {
		keep = append(keep, p.times[i]+3) // between versions: keeps the one before
	}
	before := p.blockVersions(t)
	dry, err := p.e.s.Prune(p.vol, keep, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.blockVersions(t) != before || len(dry.Removed) == 0 || dry.Blocks == 0 {
		t.Fatalf("dry run: %d block versions, was %d; %+v", p.blockVersions(t), before, dry)
	}
	res, err := p.e.s.Prune(p.vol, keep, false)
	if err != nil {
		t.Fatal(err)
	}
	wantKept := len(keep) + 1 // and the newest
	if len(res.Kept) != wantKept || len(res.Removed) != len(p.times)-wantKept {
		t.Fatalf("kept %d, removed %d of %d versions; want %d kept", len(res.Kept), len(res.Removed), len(p.times), wantKept)
	}
	if after := p.blockVersions(t); int64(before-after) != res.Blocks || after >= before {
		t.Fatalf("%d block versions before, %d after, %d reported deleted", before, after, res.Blocks)
	}
	m, err := p.e.s.VolumeByID(p.vol)
	if err != nil {
		t.Fatal(err)
	}
	if m.Versions != int64(wantKept) || m.First != res.Kept[0] {
		t.Fatalf("metadata: %d versions from %d, want %d from %d", m.Versions, m.First, wantKept, res.Kept[0])
	}
	p.check(t, "pruned")
	p.e.close()
	p.e.open()
	p.check(t, "reopened")
	p.write(t, 50)
	p.check(t, "written after")
	again, err := p.e.s.Prune(p.vol, keep, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Removed) != 50 { // the old newest and the 50 new ones but the newest
		t.Fatalf("a second prune removed %d versions, want 50", len(again.Removed))
	}
	p.check(t, "pruned again")
}

// An instant that an open view reads, and a clone's fork instant, are
// kept even when not asked for.
func TestPruneKeepsInstantsInUse(t *testing.T) {
	p := newPruneEnv(t, 60)
	viewed, forked := p.times[20], p.times[40]
	v, err := p.e.s.ViewAt(p.vol, viewed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.e.s.Clone("c", forked, "c2"); err != nil {
		t.Fatal(err)
	}
	res, err := p.e.s.Prune(p.vol, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Kept, viewed) || !slices.Contains(res.Kept, forked) || len(res.Kept) != 3 {
		t.Fatalf("kept %v, want the viewed %d, the forked %d and the newest", res.Kept, viewed, forked)
	}
	got := make([]byte, len(p.disk))
	if _, err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, p.imgs[viewed]) {
		t.Fatalf("the open view reads other bytes after the prune (%v)", err)
	}
	c2, err := p.e.s.Volume("c2")
	if err != nil {
		t.Fatal(err)
	}
	cv, err := p.e.s.Head(c2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cv.ReadAt(got, 0); err != nil || !bytes.Equal(got, p.imgs[forked]) {
		t.Fatalf("the clone reads other bytes than its fork instant held (%v)", err)
	}
	// Closed, the view holds nothing more.
	v.Close()
	res, err = p.e.s.Prune(p.vol, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.Kept, viewed) || !slices.Contains(res.Kept, forked) {
		t.Fatalf("after the view closed, kept %v", res.Kept)
	}
	p.check(t, "pruned twice")
}

// Prune runs beside a writer of the volume: every instant still reads a
// version it held.
func TestPruneBesideWrites(t *testing.T) {
	for _, rb := range rangeSettings {
		t.Run(rb.name, func(t *testing.T) { testPruneBesideWrites(t, rb.blocks) })
	}
}

func testPruneBesideWrites(t *testing.T, rangeBlocks int64) {
	p := newPruneEnvRanges(t, 100, rangeBlocks)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.write(t, 200)
	}()
	for range 5 {
		if _, err := p.e.s.Prune(p.vol, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	p.check(t, "pruned beside writes")
}
