package nbd_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

func TestReadWriteSimpleAndStructured(t *testing.T) {
	for _, structured := range []bool{false, true} {
		h := newHarness(t)
		c, _ := h.connect("disk", structured, false)
		data := pattern(256<<10, 1)
		ok(t)(c.WriteAt(data, 12345, 0))
		r := ok(t)(c.Read(12345, uint32(len(data)), 0))
		if r.Simple == structured || !bytes.Equal(r.Data, data) {
			t.Fatalf("structured=%v: simple=%v, data equal=%v", structured, r.Simple, bytes.Equal(r.Data, data))
		}
		// Unaligned, tiny, and the last byte of the export.
		ok(t)(c.WriteAt([]byte{0xee}, testSize-1, 0))
		if r := ok(t)(c.Read(testSize-1, 1, 0)); r.Data[0] != 0xee {
			t.Fatalf("last byte %#x", r.Data[0])
		}
		if err := c.Disconnect(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLargestPayload(t *testing.T) {
	mem := nbdtest.NewMemory(nbd.MaxPayload+4096, testBlock)
	h := startServer(t, mem, nbdtest.NewResolver(&nbd.Export{Name: "big", Backend: mem}))
	for _, structured := range []bool{false, true} {
		c, _ := h.connect("big", structured, false)
		big := pattern(nbd.MaxPayload, 9)
		ok(t)(c.WriteAt(big, 4096, 0))
		if r := ok(t)(c.Read(4096, nbd.MaxPayload, 0)); !bytes.Equal(r.Data, big) {
			t.Fatal("32 MiB read differs")
		}
		fails(t, nbd.EINVAL)(c.Read(0, nbd.MaxPayload+1, 0))
	}
}

func TestFUAAndFlush(t *testing.T) {
	h := newHarness(t)
	c, _ := h.connect("disk", true, false)
	ok(t)(c.WriteAt(pattern(4096, 2), 0, 0))
	if h.mem.Dirty() == 0 {
		t.Fatal("plain write flushed")
	}
	ok(t)(c.Do(0, nbd.CmdFlush, 0, 0, nil))
	if h.mem.Dirty() != 0 || h.mem.Flushes() != 1 {
		t.Fatalf("after FLUSH: dirty %d, flushes %d", h.mem.Dirty(), h.mem.Flushes())
	}
	for _, cmd := range []uint16{nbd.CmdWrite, nbd.CmdWriteZeroes, nbd.CmdTrim} {
		var payload []byte
		if cmd == nbd.CmdWrite {
			payload = pattern(4096, 3)
		}
		ok(t)(c.Do(nbd.CmdFlagFUA, cmd, 8192, 4096, payload))
		if h.mem.Dirty() != 0 {
			t.Fatalf("%d with FUA left %d dirty bytes", cmd, h.mem.Dirty())
		}
	}
	// FUA is accepted, and ignored, on commands that write nothing.
	ok(t)(c.Read(0, 512, nbd.CmdFlagFUA))
	fails(t, nbd.EINVAL)(c.Do(0, nbd.CmdFlush, 1, 0, nil))
}

// sparseDisk lays out: data [0, 64K), hole [64K, 1M), data [1M, 1M+4K),
// hole to the end.
func sparseDisk(h *harness) []byte {
	h.mem.Fill(pattern(64<<10, 5), 0)
	h.mem.Fill(pattern(4096, 6), 1<<20)
	return h.mem.Bytes()[:2<<20]
}

func TestStructuredSparseRead(t *testing.T) {
	h := newHarness(t)
	want := sparseDisk(h)
	c, info := h.connect("disk", true, false)
	if info.Flags&nbd.FlagSendDF == 0 {
		t.Fatal("DF not advertised with structured replies")
	}
	r := ok(t)(c.Read(0, 2<<20, 0))
	if !bytes.Equal(r.Data, want) || r.Holes != 2 || r.DataChunk != 2 {
		t.Fatalf("sparse read: equal=%v, %d holes, %d data chunks", bytes.Equal(r.Data, want), r.Holes, r.DataChunk)
	}
	// DF: one data chunk with the zeroes written out.
	r = ok(t)(c.Read(0, 2<<20, nbd.CmdFlagDF))
	if !bytes.Equal(r.Data, want) || r.Holes != 0 || r.DataChunk != 1 {
		t.Fatalf("DF read: %d holes, %d data chunks", r.Holes, r.DataChunk)
	}
	// All hole: one hole chunk. Small hole between data: folded into data.
	if r := ok(t)(c.Read(2<<20, 512, 0)); r.Holes != 1 || r.DataChunk != 0 {
		t.Fatalf("hole read: %d holes, %d data chunks", r.Holes, r.DataChunk)
	}
	h.mem.Fill([]byte{1}, 1<<20+5120) // leaves a 1 KiB hole after 1M+4K
	if r := ok(t)(c.Read(1<<20, 5632, 0)); r.Holes != 0 || r.DataChunk != 1 {
		t.Fatalf("small hole: %d holes, %d data chunks", r.Holes, r.DataChunk)
	}
	// Simple replies never fragment.
	s, _ := h.connect("disk", false, false)
	fails(t, nbd.EINVAL)(s.Read(0, 4096, nbd.CmdFlagDF))
	if r := ok(t)(s.Read(0, 2<<20, 0)); !bytes.Equal(r.Data, h.mem.Bytes()[:2<<20]) {
		t.Fatal("simple read differs")
	}
}

func TestBlockStatus(t *testing.T) {
	h := newHarness(t)
	sparseDisk(h)
	c, _ := h.connect("disk", true, true)
	r := ok(t)(c.BlockStatus(0, 2<<20, 0))
	want := []nbdtest.Descriptor{desc(64<<10, 0), desc(1<<20-64<<10, 3), desc(4096, 0), desc(1<<20-4096, 3)}
	if r.ContextID != 1 || !equalDescs(r.Extents, want) {
		t.Fatalf("extents %v (context %d), want %v", r.Extents, r.ContextID, want)
	}
	r = ok(t)(c.BlockStatus(0, 2<<20, nbd.CmdFlagReqOne))
	if !equalDescs(r.Extents, want[:1]) {
		t.Fatalf("REQ_ONE extents %v", r.Extents)
	}
	// REQ_ONE never reports more than asked, even inside a longer run.
	r = ok(t)(c.BlockStatus(100<<10, 512, nbd.CmdFlagReqOne))
	if !equalDescs(r.Extents, []nbdtest.Descriptor{desc(512, 3)}) {
		t.Fatalf("REQ_ONE in a hole: %v", r.Extents)
	}
	// The whole export: every extent nonzero, none past the end.
	r = ok(t)(c.BlockStatus(0, testSize, 0))
	if sum := sumDescs(r.Extents); sum != testSize {
		t.Fatalf("whole export: extents sum to %d", sum)
	}
	// Near the end, with lengths that overflow 32 and 64 bits.
	ok(t)(c.BlockStatus(testSize-4096, 4096, 0))
	ok(t)(c.BlockStatus(testSize-1, 1, nbd.CmdFlagReqOne))
	for _, bad := range []struct {
		off uint64
		n   uint32
	}{
		{testSize - 4096, math.MaxUint32}, {testSize, 1}, {testSize - 1, 2},
		{math.MaxUint64, 2}, {math.MaxUint64 - 100, math.MaxUint32}, {1 << 63, 4096}, {0, 0},
	} {
		fails(t, nbd.EINVAL)(c.BlockStatus(bad.off, bad.n, 0))
		fails(t, nbd.EINVAL)(c.BlockStatus(bad.off, bad.n, nbd.CmdFlagReqOne))
	}
	fails(t, nbd.EINVAL)(c.BlockStatus(0, 4096, nbd.CmdFlagDF))
}

// A backend that answers one extent per call still gets a correct reply;
// a fragmented export is reported in full, within 2^20 extents.
func TestBlockStatusShortAndFragmented(t *testing.T) {
	h := newHarness(t)
	for off := int64(0); off < testSize; off += 2 * testBlock {
		h.mem.Fill([]byte{1}, off)
	}
	h.mem.SetMaxExtents(1)
	c, _ := h.connect("disk", true, true)
	r := ok(t)(c.BlockStatus(0, testSize, 0))
	if len(r.Extents) != testSize/testBlock || sumDescs(r.Extents) != testSize {
		t.Fatalf("%d extents summing to %d", len(r.Extents), sumDescs(r.Extents))
	}
	for i, d := range r.Extents {
		if d.Length != testBlock || d.Flags != uint32(i%2)*3 {
			t.Fatalf("extent %d: %+v", i, d)
		}
	}
}

func desc(length, flags uint32) nbdtest.Descriptor {
	return nbdtest.Descriptor{Length: length, Flags: flags}
}

func equalDescs(a, b []nbdtest.Descriptor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sumDescs(ds []nbdtest.Descriptor) uint64 {
	var n uint64
	for _, d := range ds {
		n += uint64(d.Length)
	}
	return n
}

func TestZeroTrimCache(t *testing.T) {
	h := newHarness(t)
	c, _ := h.connect("disk", true, true)
	ok(t)(c.WriteAt(pattern(64<<10, 7), 0, 0))
	ok(t)(c.Do(0, nbd.CmdWriteZeroes, 0, 8192, nil))
	ok(t)(c.Do(nbd.CmdFlagNoHole, nbd.CmdWriteZeroes, 8192, 8192, nil))
	ok(t)(c.Do(nbd.CmdFlagFastZero, nbd.CmdWriteZeroes, 16384, 8192, nil))
	r := ok(t)(c.Read(0, 24576, nbd.CmdFlagDF))
	if !bytes.Equal(r.Data, make([]byte, 24576)) {
		t.Fatal("zeroed range does not read as zeroes")
	}
	// Plain zeroing may punch a hole; NO_HOLE keeps the range allocated.
	r = ok(t)(c.BlockStatus(0, 24576, 0))
	if !equalDescs(r.Extents, []nbdtest.Descriptor{desc(8192, 3), desc(8192, 0), desc(8192, 3)}) {
		t.Fatalf("extents after zeroing: %v", r.Extents)
	}
	ok(t)(c.Do(0, nbd.CmdTrim, 32768, 8192, nil))
	if h.mem.Allocated(32768) {
		t.Fatal("trim left the block allocated")
	}
	// Zero and trim lengths may exceed the maximum payload.
	ok(t)(c.Do(0, nbd.CmdWriteZeroes, 0, testSize, nil))
	ok(t)(c.Do(0, nbd.CmdTrim, 0, testSize, nil))
	ok(t)(c.Do(0, nbd.CmdCache, 0, 1<<20, nil))
	if h.mem.Caches() != 1 {
		t.Fatal("CACHE did not reach the backend")
	}
	fails(t, nbd.EINVAL)(c.Do(nbd.CmdFlagNoHole, nbd.CmdCache, 0, 4096, nil))
}

// Without nbd.FastZeroer, FAST_ZERO fails at once and changes nothing.
func TestFastZeroUnsupported(t *testing.T) {
	mem := nbdtest.NewMemory(testSize, testBlock)
	res := nbdtest.NewResolver(&nbd.Export{Name: "plain", Backend: plainBackend{mem}})
	h := startServer(t, mem, res)
	c, _ := h.connect("plain", true, false)
	ok(t)(c.WriteAt(pattern(4096, 1), 0, 0))
	fails(t, nbd.ENOTSUP)(c.Do(nbd.CmdFlagFastZero, nbd.CmdWriteZeroes, 0, 4096, nil))
	if r := ok(t)(c.Read(0, 4096, 0)); !bytes.Equal(r.Data, pattern(4096, 1)) {
		t.Fatal("failed fast zero changed data")
	}
	ok(t)(c.Do(0, nbd.CmdWriteZeroes, 0, 4096, nil))
	ok(t)(c.Do(0, nbd.CmdCache, 0, 4096, nil)) // no Cacher: a successful no-op
}

// plainBackend hides Memory's optional interfaces.
type plainBackend struct{ nbd.Backend }

func TestBadRequests(t *testing.T) {
	for _, structured := range []bool{false, true} {
		h := newHarness(t)
		c, _ := h.connect("disk", structured, false)
		before := h.mem.Bytes()
		checks := []struct {
			errno      nbd.Errno
			flags, typ uint16
			off        uint64
			length     uint32
			payload    []byte
		}{
			{nbd.EINVAL, 0, nbd.CmdRead, testSize, 1, nil},
			{nbd.EINVAL, 0, nbd.CmdRead, testSize - 1, 2, nil},
			{nbd.EINVAL, 0, nbd.CmdRead, math.MaxUint64, 2, nil},
			{nbd.EINVAL, 0, nbd.CmdRead, 0, 0, nil},
			{nbd.EINVAL, 0, nbd.CmdRead, 0, nbd.MaxPayload + 1, nil},
			{nbd.EINVAL, 1 << 7, nbd.CmdRead, 0, 512, nil},
			{nbd.EINVAL, nbd.CmdFlagReqOne, nbd.CmdRead, 0, 512, nil},
			{nbd.ENOSPC, 0, nbd.CmdWrite, testSize - 1, 2, []byte{1, 2}},
			{nbd.ENOSPC, 0, nbd.CmdWrite, math.MaxUint64 - 1, 4, []byte{1, 2, 3, 4}},
			{nbd.EINVAL, 0, nbd.CmdWrite, 0, nbd.MaxPayload + 1, make([]byte, nbd.MaxPayload+1)},
			{nbd.EINVAL, nbd.CmdFlagDF, nbd.CmdWrite, 0, 3, []byte{1, 2, 3}},
			{nbd.ENOSPC, 0, nbd.CmdWriteZeroes, testSize, 1, nil},
			{nbd.EINVAL, 0, nbd.CmdTrim, testSize - 4096, 8192, nil},
			{nbd.EINVAL, 0, nbd.CmdCache, testSize, 1, nil},
			{nbd.EINVAL, 0, nbd.CmdBlockStatus, 0, 4096, nil}, // no meta context
			{nbd.EINVAL, 0, 99, 0, 0, nil},
			{nbd.EINVAL, 0, nbd.CmdResize, 0, 0, nil},
			{nbd.EINVAL, 0, nbd.CmdFlush, 0, 1, nil},
		}
		for _, ck := range checks {
			r, err := c.Do(ck.flags, ck.typ, ck.off, ck.length, ck.payload)
			mustReply(t, r, err, ck.errno)
			if structured && (r.Simple || r.Msg == "") {
				t.Fatalf("structured error without message: %+v", r)
			}
		}
		if !bytes.Equal(before, h.mem.Bytes()) {
			t.Fatal("a rejected request changed the export")
		}
		ok(t)(c.Read(0, 4096, 0)) // still in sync
	}
}

func TestReadOnlyExport(t *testing.T) {
	h := newHarness(t)
	h.mem.Fill(pattern(8192, 4), 0)
	before := h.mem.Bytes()
	c, _ := h.connect("ro", true, true)
	fails(t, nbd.EPERM)(c.WriteAt(pattern(8192, 5), 0, 0))
	fails(t, nbd.EPERM)(c.WriteAt(pattern(8192, 5), testSize, 0)) // EPERM before range
	fails(t, nbd.EPERM)(c.Do(0, nbd.CmdTrim, 0, 4096, nil))
	fails(t, nbd.EPERM)(c.Do(0, nbd.CmdWriteZeroes, 0, 4096, nil))
	ok(t)(c.Do(0, nbd.CmdFlush, 0, 0, nil))
	if !bytes.Equal(before, h.mem.Bytes()) {
		t.Fatal("read-only export changed")
	}
	if r := ok(t)(c.Read(0, 8192, 0)); !bytes.Equal(r.Data, before[:8192]) {
		t.Fatal("read after refused writes differs")
	}
	ok(t)(c.BlockStatus(0, 8192, 0))
}

func TestDisconnectingRequests(t *testing.T) {
	h := newHarness(t)
	for name, send := range map[string]func(c *nbdtest.Client) error{
		"bad magic": func(c *nbdtest.Client) error { return c.Write(make([]byte, 28)) },
		"extended header magic": func(c *nbdtest.Client) error {
			return c.Write(append(be.AppendUint32(nil, nbd.MagicExtRequest), make([]byte, 28)...))
		},
		"absurd write": func(c *nbdtest.Client) error {
			return c.Send(0, nbd.CmdWrite, 1, 0, math.MaxUint32, nil)
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, _ := h.connect("disk", true, false)
			if err := send(c); err != nil {
				t.Fatal(err)
			}
			if b := mustClose(t, c); len(b) != 0 {
				t.Fatalf("%d bytes before close", len(b))
			}
		})
	}
}

// Replies to earlier requests still leave before a disconnect.
func TestRepliesFlushedBeforeDisconnect(t *testing.T) {
	h := newHarness(t)
	c, _ := h.connect("disk", true, false)
	for i := range 20 {
		if err := c.Send(0, nbd.CmdRead, uint64(i+1), uint64(i)*4096, 4096, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send(0, nbd.CmdDisc, 99, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		ok(t)(c.ReadReply())
	}
	mustClose(t, c)
}
