package hugemem

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// Buffers never overlap, come zeroed, and those of a huge page or more
// start on a huge page boundary.
func TestAlloc(t *testing.T) {
	type span struct{ lo, hi uintptr }
	var got []span
	for _, n := range []int{100, 4096, 5000, HugePage, 3 * HugePage / 2, 128 << 10, regionSize + 1, 7} {
		b := Alloc(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("Alloc(%d): len %d cap %d", n, len(b), cap(b))
		}
		if n >= HugePage && addr(b)%HugePage != 0 {
			t.Fatalf("Alloc(%d) at %#x: not on a huge page boundary", n, addr(b))
		}
		if !bytes.Equal(b, make([]byte, n)) {
			t.Fatalf("Alloc(%d): not zero", n)
		}
		for i := range b {
			b[i] = 0xa5
		}
		s := span{addr(b), addr(b) + uintptr(n)}
		for _, o := range got {
			if s.lo < o.hi && o.lo < s.hi {
				t.Fatalf("Alloc(%d) overlaps an earlier buffer", n)
			}
		}
		got = append(got, s)
	}
}

// A pool hands back what it was given, the last first (the first in the
// poisoned build); beyond its limit it keeps buffers without their memory,
// which then reads as zeros.
func TestPool(t *testing.T) {
	const size = 64 << 10
	p := NewPool(size, 2*size)
	bufs := make([]*[]byte, 3)
	for i := range bufs {
		bufs[i] = p.Get()
		if len(*bufs[i]) != size {
			t.Fatalf("buffer of %d bytes", len(*bufs[i]))
		}
		for k := range *bufs[i] {
			(*bufs[i])[k] = byte(i + 1)
		}
	}
	for _, bp := range bufs {
		p.Put(bp)
	}
	if len(p.hot) != 2 || len(p.cold) != 1 {
		t.Fatalf("%d kept, %d released: want 2 and 1", len(p.hot), len(p.cold))
	}
	first, second := bufs[1], bufs[0]
	if Poisoned {
		first, second = bufs[0], bufs[1]
	}
	if bp := p.Get(); bp != first || (*bp)[0] != (*first)[1] {
		t.Fatal("Get did not return the buffer it should, with its bytes")
	}
	if bp := p.Get(); bp != second {
		t.Fatal("Get did not return the other kept buffer")
	}
	bp := p.Get()
	if bp != bufs[2] {
		t.Fatal("a released buffer was not reused")
	}
	if !bytes.Equal(*bp, make([]byte, size)) {
		t.Fatal("a buffer beyond the limit kept its memory")
	}
	short := make([]byte, 10, 10)
	p.Put(&short) // another size: ignored
	if len(p.hot)+len(p.cold) != 0 {
		t.Fatal("the pool kept a buffer of another size")
	}
}

func TestShared(t *testing.T) {
	a, b := Shared(96<<10), Shared(96<<10)
	if a != b || a.Size() != 96<<10 {
		t.Fatal("Shared made two pools for one size")
	}
	if Shared(32<<10) == a {
		t.Fatal("Shared gave one pool for two sizes")
	}
}

// Regions are advised for huge pages unless SetHugePages(false) said
// not to: the kernel's flags of the mapping (VmFlags "hg") show the
// advice whatever the system's huge page setting.
func TestSetHugePages(t *testing.T) {
	defer SetHugePages(true)
	for _, on := range []bool{false, true, false} {
		SetHugePages(on)
		b := Alloc(regionSize + 1) // a region of its own
		b[0] = 1
		flags := vmFlags(t, addr(b))
		if got := strings.Contains(" "+flags+" ", " hg "); got != on {
			t.Fatalf("SetHugePages(%v): the region's VmFlags are %q", on, flags)
		}
	}
}

// vmFlags returns the VmFlags line of the mapping of /proc/self/smaps
// that holds address a.
func vmFlags(t *testing.T, a uintptr) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			lo, hi, ok := strings.Cut(f[0], "-")
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			in = ok && err1 == nil && err2 == nil && uint64(a) >= l && uint64(a) < h
			continue
		}
		if in && len(f) > 0 && f[0] == "VmFlags:" {
			return strings.Join(f[1:], " ")
		}
	}
	t.Fatalf("no mapping of /proc/self/smaps holds %#x", a)
	return ""
}
