package timeline

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// keyCount counts the keys of vol under tag.
func keyCount(t *testing.T, db *pebble.DB, tag byte, vol uint64) int {
	t.Helper()
	lo, hi := volumeBounds(tag, vol)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return n
}

// allRanges counts the range records of every volume.
func allRanges(t *testing.T, db *pebble.DB) int {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagRange}, UpperBound: []byte{tagRange + 1}})
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

// rangeEnv is a clone "c" of an empty volume "a" of size bytes, made at
// clock 1000, with the clock then at 2000.
func rangeEnv(t *testing.T, size, bs int64) (*scriptEnv, *View) {
	t.Helper()
	e := &scriptEnv{t: t, fs: vfs.NewMem(), clock: 1000}
	e.open()
	t.Cleanup(func() { e.close() })
	if _, err := e.s.CreateVolume("a", size, bs, KindCreated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("a", 1000, "c"); err != nil {
		t.Fatal(err)
	}
	e.clock = 2000
	v := cloneView(t, e)
	t.Cleanup(func() { v.Close() })
	return e, v
}

// openAs opens vol as of at (the head when at is 0).
func openAs(t *testing.T, e *scriptEnv, name string, at int64) *View {
	t.Helper()
	m := e.s.mustVolume(t, name)
	var v *View
	var err error
	if at == 0 {
		v, err = e.s.Head(m.ID)
	} else {
		v, err = e.s.ViewAt(m.ID, at)
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readAs reads the whole of vol as of at (the head when at is 0).
func readAs(t *testing.T, e *scriptEnv, name string, at int64) []byte {
	t.Helper()
	v := openAs(t, e, name, at)
	defer v.Close()
	got := make([]byte, v.Size())
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	return got
}

func mustWrite(t *testing.T, e *scriptEnv, v *View, p []byte, off int64) int64 {
	t.Helper()
	if _, err := v.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	e.clock += 10
	return v.Time()
}

// image is a volume's expected contents: writes over zeroes, in order.
type image struct {
	writes []imageWrite
}

type imageWrite struct {
	off  int64
	data []byte // nil: zeroes over n bytes
	n    int64
}

func (im *image) clone() *image { return &image{writes: append([]imageWrite(nil), im.writes...)} }

// window returns the bytes at [off, off+len(dst)) into dst.
func (im *image) window(dst []byte, off int64) {
	clear(dst)
	for _, w := range im.writes {
		lo, hi := max(w.off, off), min(w.off+w.n, off+int64(len(dst)))
		if lo >= hi {
			continue
		}
		if w.data == nil {
			clear(dst[lo-off : hi-off])
		} else {
			copy(dst[lo-off:hi-off], w.data[lo-w.off:])
		}
	}
}

// matches reads vol as of at (the head when 0) in windows and compares
// them with im.
func (im *image) matches(t *testing.T, e *scriptEnv, name string, at int64) bool {
	t.Helper()
	v := openAs(t, e, name, at)
	defer v.Close()
	const win = 8 << 20
	got, want := make([]byte, win), make([]byte, win)
	for off := int64(0); off < v.Size(); off += win {
		n := min(win, v.Size()-off)
		if _, err := v.ReadAt(got[:n], off); err != nil {
			t.Fatal(err)
		}
		im.window(want[:n], off)
		if !bytes.Equal(got[:n], want[:n]) {
			return false
		}
	}
	return true
}

// A TRIM of a whole 1 GiB clone writes one range record and no version
// key; the same TRIM again writes nothing. Every instant reads what it
// held, before and after a reopen; block status reports the trimmed
// range as a hole; a write after the TRIM shows.
func TestTrimOfGiBIsOneRecord(t *testing.T) {
	const bs = 64 << 10
	const size = 1 << 30
	e, v := rangeEnv(t, size, bs)
	m, _ := v.Volume()
	im := &image{}
	put := func(p []byte, off int64) int64 {
		im.writes = append(im.writes, imageWrite{off: off, data: p, n: int64(len(p))})
		return mustWrite(t, e, v, p, off)
	}
	put(pattern(1, 20*bs), 0)                     // the first 20 blocks, whole
	put(bytes.Repeat([]byte{7}, 3000), 100*bs+77) // part of block 100: a patch
	tData := put(pattern(3, bs), size-bs)         // the last block
	before := keyCount(t, e.db, tagVersion, m.ID)
	snapshot := im.clone()

	if err := v.Trim(0, size); err != nil {
		t.Fatal(err)
	}
	tTrim := v.Time()
	e.clock += 10
	im.writes = append(im.writes, imageWrite{off: 0, n: size})
	if got := keyCount(t, e.db, tagVersion, m.ID); got != before {
		t.Fatalf("a TRIM of 1 GiB wrote %d version keys", got-before)
	}
	if got := keyCount(t, e.db, tagRange, m.ID); got != 1 {
		t.Fatalf("a TRIM of 1 GiB wrote %d range records, want 1", got)
	}
	log, err := e.s.Log(m.ID, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	last := log[len(log)-1]
	if last.Time != tTrim || last.Kind != VersionTrim || last.Blocks != size/bs || last.Bytes != size {
		t.Fatalf("the TRIM's version: %+v, want one trim of %d blocks", last, size/bs)
	}
	versions := len(log)

	// Again: every block is a hole already.
	if err := v.Trim(0, size); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(bs, size-bs); err != nil {
		t.Fatal(err)
	}
	log, _ = e.s.Log(m.ID, 0, 1<<62)
	if len(log) != versions || keyCount(t, e.db, tagRange, m.ID) != 1 || keyCount(t, e.db, tagVersion, m.ID) != before {
		t.Fatalf("trimming holes again recorded something: %d versions, was %d", len(log), versions)
	}

	check := func(when string) {
		t.Helper()
		if !snapshot.matches(t, e, "c", tData) {
			t.Fatalf("%s: the instant before the TRIM reads other bytes", when)
		}
		if !(&image{}).matches(t, e, "c", tTrim) {
			t.Fatalf("%s: the instant of the TRIM does not read as zeroes", when)
		}
		if !im.matches(t, e, "c", 0) {
			t.Fatalf("%s: the head reads other bytes than were written", when)
		}
	}
	check("trimmed")
	put(pattern(4, 5000), 100*bs+10) // a patch over a trimmed block
	put(pattern(5, bs), 200*bs)      // a whole block
	check("written after")
	// Block status: holes but the two written blocks.
	hv, _ := e.s.Head(m.ID)
	var exts []Extent
	for off := int64(0); off < size; {
		x, err := hv.Extents(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range x {
			if k := len(exts); k > 0 && exts[k-1].Hole == ext.Hole {
				exts[k-1].Length += ext.Length
			} else {
				exts = append(exts, ext)
			}
			off = ext.Offset + ext.Length
		}
	}
	hv.Close()
	want := []Extent{{0, 100 * bs, true}, {100 * bs, bs, false}, {101 * bs, 99 * bs, true}, {200 * bs, bs, false}, {201 * bs, size - 201*bs, true}}
	if !slices.Equal(exts, want) {
		t.Fatalf("extents %v, want %v", exts, want)
	}
	e.close()
	e.open()
	check("reopened")
}

// A TRIM that starts and ends in the middle of blocks keeps its edges as
// patches, and only the whole blocks between go to the range record.
func TestTrimPartialEdges(t *testing.T) {
	const bs = 16 << 10
	const size = 64 * bs
	e, v := rangeEnv(t, size, bs)
	m, _ := v.Volume()
	model := pattern(7, size)
	mustWrite(t, e, v, model, 0)
	versions := keyCount(t, e.db, tagVersion, m.ID)
	off, n := int64(3*bs+1000), int64(40*bs+500) // blocks 3 and 43 in part
	if err := v.Trim(off, n); err != nil {
		t.Fatal(err)
	}
	tTrim := v.Time()
	clear(model[off : off+n])
	if got := keyCount(t, e.db, tagVersion, m.ID) - versions; got != 2 {
		t.Fatalf("the TRIM wrote %d version keys, want the two edge blocks", got)
	}
	if got := keyCount(t, e.db, tagRange, m.ID); got != 1 {
		t.Fatalf("the TRIM wrote %d range records, want 1", got)
	}
	if got := e.s.mustVolume(t, "c").ranges; len(got) != 1 || got[0].first != 4 || got[0].end != 43 {
		t.Fatalf("range records %+v, want blocks [4, 43)", got)
	}
	if !bytes.Equal(readAs(t, e, "c", tTrim), model) {
		t.Fatal("the trimmed instant reads other bytes")
	}
	// A write over an edge and into the range, then zeroing that ends
	// at the volume's end.
	e.clock += 10
	mustWrite(t, e, v, bytes.Repeat([]byte{9}, 2*bs), 42*bs+100)
	copy(model[42*bs+100:], bytes.Repeat([]byte{9}, 2*bs))
	if err := v.WriteZeroes(45*bs+3, size-45*bs-3); err != nil {
		t.Fatal(err)
	}
	clear(model[45*bs+3:])
	if got := e.s.mustVolume(t, "c").ranges; len(got) != 2 || got[1].first != 46 || got[1].end != 64 || got[1].kind != VersionZero {
		t.Fatalf("range records %+v, want a second of blocks [46, 64)", got)
	}
	if !bytes.Equal(readAs(t, e, "c", 0), model) {
		t.Fatal("the head reads other bytes")
	}
}

func (s *Store) mustVolume(t *testing.T, name string) *Volume {
	t.Helper()
	m, err := s.Volume(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Clones read their parent's range records as of their fork: one forked
// after a TRIM reads zeroes, one forked before reads the data, and a
// clone's own TRIM hides its parent.
func TestClonesReadRanges(t *testing.T) {
	const bs = 16 << 10
	const size = 64 * bs
	e, v := rangeEnv(t, size, bs)
	data := pattern(8, size)
	tData := mustWrite(t, e, v, data, 0)
	if err := v.Trim(0, 32*bs); err != nil {
		t.Fatal(err)
	}
	tTrim := v.Time()
	e.clock += 10
	trimmed := bytes.Clone(data)
	clear(trimmed[:32*bs])
	if _, err := e.s.Clone("c", tData, "before"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Clone("c", tTrim, "after"); err != nil {
		t.Fatal(err)
	}
	e.clock += 10
	if !bytes.Equal(readAs(t, e, "before", 0), data) {
		t.Fatal("a clone forked before the TRIM reads other bytes")
	}
	if !bytes.Equal(readAs(t, e, "after", 0), trimmed) {
		t.Fatal("a clone forked after the TRIM reads other bytes")
	}
	// The parent trims the rest after the forks: no clone sees it.
	if err := v.Trim(32*bs, 32*bs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAs(t, e, "after", 0), trimmed) {
		t.Fatal("a clone sees its parent's TRIM after the fork")
	}
	// The clone trims part of what its parent holds.
	b := e.s.mustVolume(t, "before")
	bv, err := e.s.Head(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer bv.Close()
	if err := bv.Trim(16*bs, 32*bs); err != nil {
		t.Fatal(err)
	}
	clear(data[16*bs : 48*bs])
	if !bytes.Equal(readAs(t, e, "before", 0), data) {
		t.Fatal("a clone's own TRIM does not hide its parent")
	}
	e.close()
	e.open()
	if !bytes.Equal(readAs(t, e, "before", 0), data) || !bytes.Equal(readAs(t, e, "after", 0), trimmed) {
		t.Fatal("the clones read other bytes once reopened")
	}
}

// Prune keeps a range record that a kept instant reads, even when the
// TRIM's own version goes, so that the data it hid never shows again;
// one that newer writes cover completely goes.
func TestPruneAroundRanges(t *testing.T) {
	const bs = 16 << 10
	const size = 64 * bs
	e, v := rangeEnv(t, size, bs)
	m, _ := v.Volume()
	data := pattern(9, size)
	t1 := mustWrite(t, e, v, data, 0)
	if err := v.Trim(0, 32*bs); err != nil { // hides blocks 0-31 of t1
		t.Fatal(err)
	}
	e.clock += 10
	if err := v.Trim(32*bs, 16*bs); err != nil { // blocks 32-47, rewritten next
		t.Fatal(err)
	}
	e.clock += 10
	mustWrite(t, e, v, pattern(10, 5000), 3*bs+7) // a patch over the first range
	t4 := mustWrite(t, e, v, data[32*bs:48*bs], 32*bs)
	want := bytes.Clone(data)
	clear(want[:32*bs])
	copy(want[3*bs+7:], pattern(10, 5000))
	if keyCount(t, e.db, tagRange, m.ID) != 2 {
		t.Fatal("want two range records")
	}
	// Keep the first write and the newest: the two TRIMs' versions go.
	res, err := e.s.Prune(m.ID, []int64{t1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) < 2 || res.Ranges != 1 {
		t.Fatalf("prune: %+v, want both TRIMs' versions removed and one range record", res)
	}
	check := func(when string) {
		t.Helper()
		if !bytes.Equal(readAs(t, e, "c", t1), data) {
			t.Fatalf("%s: the first write reads other bytes", when)
		}
		if !bytes.Equal(readAs(t, e, "c", t4), want) {
			t.Fatalf("%s: the newest instant reads other bytes: what a TRIM hid shows again", when)
		}
	}
	check("pruned")
	rs := e.s.mustVolume(t, "c").ranges
	if len(rs) != 1 || rs[0].first != 0 || rs[0].end != 32 || keyCount(t, e.db, tagRange, m.ID) != 1 {
		t.Fatalf("range records left: %+v, want the first", rs)
	}
	// Once the first write goes, the blocks the range hid go too.
	beforeKeys := keyCount(t, e.db, tagVersion, m.ID)
	res, err = e.s.Prune(m.ID, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ranges != 0 || res.Blocks < 32 || keyCount(t, e.db, tagVersion, m.ID) != beforeKeys-int(res.Blocks) {
		t.Fatalf("second prune: %+v", res)
	}
	if !bytes.Equal(readAs(t, e, "c", 0), want) {
		t.Fatal("the newest instant reads other bytes after the second prune")
	}
	e.close()
	e.open()
	if !bytes.Equal(readAs(t, e, "c", 0), want) {
		t.Fatal("the newest instant reads other bytes once reopened")
	}
}

// Removing a volume deletes its range records.
func TestRemoveDeletesRanges(t *testing.T) {
	const bs = 16 << 10
	e, v := rangeEnv(t, 64*bs, bs)
	m, _ := v.Volume()
	mustWrite(t, e, v, pattern(11, 64*bs), 0)
	if err := v.Trim(0, 64*bs); err != nil {
		t.Fatal(err)
	}
	if keyCount(t, e.db, tagRange, m.ID) != 1 {
		t.Fatal("want a range record")
	}
	if err := e.s.RemoveVolume("c"); err != nil {
		t.Fatal(err)
	}
	if n := keyCount(t, e.db, tagRange, m.ID); n != 0 {
		t.Fatalf("%d range records left after removal", n)
	}
}

// A store made before range records keeps its format until its first
// range record, which moves it to the format that older builds refuse;
// a format this build does not know is refused.
func TestFormatMovesWithFirstRange(t *testing.T) {
	const bs = 16 << 10
	e, v := rangeEnv(t, 64*bs, bs)
	format := func() string {
		t.Helper()
		val, closer, err := e.db.Get(globalKey("format"))
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return string(val)
	}
	if got := format(); got != FormatVersion {
		t.Fatalf("a new store has format %q", got)
	}
	if err := e.db.Set(globalKey("format"), []byte(formatNoRanges), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open()
	v = cloneView(t, e)
	defer v.Close()
	mustWrite(t, e, v, pattern(12, 64*bs), 0)
	if err := v.Trim(0, 2*bs); err != nil { // too short for a range record
		t.Fatal(err)
	}
	if got := format(); got != formatNoRanges {
		t.Fatalf("without a range record the format became %q", got)
	}
	if err := v.Trim(0, 64*bs); err != nil {
		t.Fatal(err)
	}
	if got := format(); got != FormatVersion {
		t.Fatalf("after a range record the format is %q, want %q", got, FormatVersion)
	}
	other, err := Open(Options{DB: e.db, Chunks: e.bs}) // the control
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := e.db.Set(globalKey("format"), []byte("rewind-store-99"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{DB: e.db, Chunks: e.bs}); err == nil {
		t.Fatal("a store of an unknown format opened")
	}
	if err := e.db.Set(globalKey("format"), []byte(FormatVersion), pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// floors agrees with a look through every record, as of the newest
// record (the map of the newest) and before it (the records).
func TestFloorsMatchRecords(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	for round := range 200 {
		var rs []zeroRange
		for i := range 1 + rng.Intn(30) {
			first := uint64(rng.Intn(200))
			rs = append(rs, zeroRange{t: int64(10 * (i + 1)), first: first, end: first + 1 + uint64(rng.Intn(60))})
		}
		v := &Volume{}
		if round%2 == 0 {
			v.setRanges(rs)
		} else {
			for _, r := range rs {
				v.addRange(r)
			}
		}
		for range 20 {
			at := int64(rng.Intn(len(rs)*10 + 20))
			b0, n := uint64(rng.Intn(260)), 1+rng.Intn(40)
			got := make([]int64, n)
			any := v.floors(at, b0, got)
			want := make([]int64, n)
			wantAny := false
			for i := range want {
				for _, r := range rs {
					if r.t <= at && r.first <= b0+uint64(i) && b0+uint64(i) < r.end {
						want[i] = r.t
						wantAny = true
					}
				}
			}
			if any != wantAny || !slices.Equal(got, want) {
				t.Fatalf("round %d: floors as of %d of blocks %d+%d: %v (%v), want %v (%v); records %+v", round, at, b0, n, got, any, want, wantAny, rs)
			}
		}
	}
}

// Writers of neighbouring ranges that share their edge blocks write and
// trim side by side; each write and each TRIM is a version of its own
// that changes its writer's range alone, and a TRIM's range record and
// edge patches keep the neighbours' bytes.
func TestConcurrentTrimsShareEdgeBlocks(t *testing.T) {
	const bs = 16 << 10
	const writers, span, rounds = 4, 20 * bs, 10
	const size = writers*span + bs
	e, v := rangeEnv(t, size, bs)
	m, _ := v.Volume()
	off := func(g int) int64 { return int64(g)*span + bs/2 }
	op := func(g, i int) []byte { // what round i of writer g leaves in its range
		if i%2 == 1 {
			return make([]byte, span) // a TRIM
		}
		b := make([]byte, span)
		rand.New(rand.NewSource(int64(100*g + i))).Read(b)
		return b
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				var err error
				if i%2 == 1 {
					err = v.Trim(off(g), span)
				} else {
					_, err = v.WriteAt(op(g, i), off(g))
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d, round %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := keyCount(t, e.db, tagRange, m.ID); n != writers*rounds/2 {
		t.Fatalf("%d range records, want one a TRIM", n)
	}
	log, err := e.s.Log(m.ID, 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 1+writers*rounds {
		t.Fatalf("%d versions, want the clone's and one per write and TRIM", len(log))
	}
	prev, next := make([]byte, size), make([]int, writers)
	for _, ver := range log[1:] {
		at, err := e.s.ViewAt(m.ID, ver.Time)
		if err != nil {
			t.Fatal(err)
		}
		cur := make([]byte, size)
		if _, err := at.ReadAt(cur, 0); err != nil {
			t.Fatal(err)
		}
		at.Close()
		changed := -1
		for g := range writers {
			if !bytes.Equal(cur[off(g):off(g)+span], prev[off(g):off(g)+span]) {
				if changed >= 0 {
					t.Fatalf("version %d changed the ranges of writers %d and %d", ver.Time, changed, g)
				}
				changed = g
			}
		}
		if changed < 0 {
			t.Fatalf("version %d changed no writer's range", ver.Time)
		}
		o := off(changed)
		if !bytes.Equal(cur[o:o+span], op(changed, next[changed])) {
			t.Fatalf("version %d holds writer %d's round %d wrongly", ver.Time, changed, next[changed])
		}
		outside := bytes.Clone(cur)
		copy(outside[o:o+span], prev[o:o+span])
		if !bytes.Equal(outside, prev) {
			t.Fatalf("version %d changed bytes outside writer %d's range", ver.Time, changed)
		}
		next[changed]++
		prev = cur
	}
}

// A clone forked after a TRIM whose version its parent's prune removes
// still reads the TRIM: the fork instant keeps the range record it reads.
func TestPruneKeepsRangesOfForks(t *testing.T) {
	const bs = 16 << 10
	const size = 64 * bs
	e, v := rangeEnv(t, size, bs)
	m, _ := v.Volume()
	data := pattern(14, size)
	mustWrite(t, e, v, data, 0)
	if err := v.Trim(0, 32*bs); err != nil {
		t.Fatal(err)
	}
	e.clock += 10
	fork := mustWrite(t, e, v, bytes.Repeat([]byte{3}, bs), 40*bs)
	mustWrite(t, e, v, bytes.Repeat([]byte{4}, bs), 50*bs)
	if _, err := e.s.Clone("c", fork, "child"); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[:32*bs])
	copy(want[40*bs:], bytes.Repeat([]byte{3}, bs))
	res, err := e.s.Prune(m.ID, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 2 || res.Ranges != 0 || keyCount(t, e.db, tagRange, m.ID) != 1 {
		t.Fatalf("prune: %+v, want the fork and the newest kept, and the range record", res)
	}
	if !bytes.Equal(readAs(t, e, "child", 0), want) {
		t.Fatal("the clone reads other bytes than its fork instant held")
	}
}
