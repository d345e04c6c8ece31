package timeline

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// WriteMany records each write as WriteAt would, one after the other:
// its own version, in the order given, changing its range and nothing
// else, whatever kind of write it is (a small write prepared ahead or
// not, one of zeroes, a whole block, one across blocks, one to a block
// whose run of patches is full). A group whose writes share a block is
// refused and records nothing, and so is one with a write past the end.
func TestWriteManyRecordsEachWrite(t *testing.T) {
	const bs = 64 << 10
	const size = 8 * bs
	e := &scriptEnv{t: t, fs: vfs.NewCrashableMem(), clock: 1000}
	e.open()
	defer e.close()
	base := pattern(1, size)
	v := cloneOf(t, e, base, bs)
	defer v.Close()
	// Block 7 takes a full run of patches first: its next small write
	// stores the block whole.
	for i := range maxPatches {
		if _, err := v.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 512), 7*bs+int64(i)*1024); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewSource(7))
	data := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	ws := []Write{
		v.Prepare(data(4096), 0*bs+1024),     // a small write, prepared
		{P: data(4096), Off: 1*bs + 8192},    // a small write, not prepared
		{P: make([]byte, 4096), Off: 2 * bs}, // zeroes
		v.Prepare(data(bs), 3*bs),            // a whole block
		{P: data(bs), Off: 4*bs + bs/2},      // across blocks 4 and 5
		v.Prepare(data(4096), 7*bs+100),      // block 7, whose run is full
		v.Prepare(make([]byte, 512), 6*bs),   // zeroes, prepared
	}
	if ws[0].chunk == nil || ws[3].chunk != nil {
		t.Fatal("Prepare encodes a small write of part of a block, and only that")
	}
	m, err := e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.s.Log(m.ID, 0, m.Last)
	if err != nil {
		t.Fatal(err)
	}
	// Refused, recording nothing: two writes of block 1; a write past the
	// end.
	if err := v.WriteMany([]Write{{P: data(512), Off: bs}, {P: data(512), Off: 2*bs - 512}}); err == nil {
		t.Error("WriteMany took two writes of one block")
	}
	if err := v.WriteMany([]Write{{P: data(512), Off: 0}, {P: data(4096), Off: size - 512}}); err != ErrNoSpace {
		t.Errorf("a write past the end: %v, want ErrNoSpace", err)
	}
	cur := make([]byte, size)
	if _, err := v.ReadAt(cur, 0); err != nil || !bytes.Equal(cur[:7*bs], base[:7*bs]) {
		t.Fatalf("a refused group changed the clone (%v)", err)
	}
	if m, _ = e.s.Volume("c"); m.Versions != int64(len(before)) {
		t.Fatalf("a refused group recorded versions: %d, had %d", m.Versions, len(before))
	}

	prev := make([]byte, size)
	if _, err := v.ReadAt(prev, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteMany(ws); err != nil {
		t.Fatal(err)
	}
	m, err = e.s.Volume("c")
	if err != nil {
		t.Fatal(err)
	}
	log, err := e.s.Log(m.ID, 0, m.Last)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != len(before)+len(ws) {
		t.Fatalf("%d versions after WriteMany of %d writes, had %d", len(log), len(ws), len(before))
	}
	for i, ver := range log[len(before):] {
		got := readAs(t, e, "c", ver.Time)
		want := bytes.Clone(prev)
		copy(want[ws[i].Off:], ws[i].P)
		if !bytes.Equal(got, want) {
			t.Fatalf("version %d of the group (%s) is not the disk after write %d alone", i, FormatTime(ver.Time), i)
		}
		prev = got
	}
	if _, err := v.ReadAt(cur, 0); err != nil || !bytes.Equal(cur, prev) {
		t.Fatalf("the clone's head differs from its newest version (%v)", err)
	}
	// The same after a reopen: the group's records are the store's.
	v.Close()
	e.close()
	e.open()
	v = cloneView(t, e)
	if _, err := v.ReadAt(cur, 0); err != nil || !bytes.Equal(cur, prev) {
		t.Fatalf("after a reopen the clone reads other bytes (%v)", err)
	}
}
