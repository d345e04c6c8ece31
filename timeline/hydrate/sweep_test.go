package hydrate

import (
	"bytes"
	"context"
	"testing"
)

// On a zeroed target, the holes of a mostly empty source are found by
// the sweep before any copy: the workers copy only the data granules,
// and none of the holes is written. A write that lands while the sweep
// runs, after the sweep saw its granule as a hole, still reaches the
// target.
func TestSweepSkipsHolesAndKeepsConcurrentWrites(t *testing.T) {
	const gran = 4 * kib
	const n = 3 * sweepSpan
	src := newMemSource(n*gran, gran)
	src.write(bytes.Repeat([]byte{5}, int(gran)), 7*gran)
	src.write(bytes.Repeat([]byte{6}, int(gran)), (sweepSpan+9)*gran)
	dst := newMemTarget(src.Size())
	c, err := New(src, dst, Options{Granularity: gran, MaxRequest: gran, Workers: 2, TargetZeroed: true})
	if err != nil {
		t.Fatal(err)
	}
	var once bool
	src.onExtents = func(off int64) {
		if once || off < 200*gran {
			return
		}
		// A write into a granule of the span the sweep has claimed, after
		// it read that granule's extents (a hole then).
		once = true
		w, err := c.BeginWrite(context.Background(), 100*gran, 16)
		if err != nil {
			t.Error(err)
			return
		}
		src.write(bytes.Repeat([]byte{9}, 16), 100*gran)
		w.Finish(nil)
	}
	copyAll(t, c)
	if dst.sum() != src.sum() {
		t.Fatal("the target differs from the source")
	}
	if w := dst.writeCount(); w != 3 {
		t.Fatalf("%d writes to the target, want 3 (two data granules and the concurrent write's)", w)
	}
}
