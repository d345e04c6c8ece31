// Package objstoretest is the conformance suite every objstore.Backend
// passes: the rules of objstore.Backend, written as tests.
package objstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore"
)

// Run runs the suite. open returns a new, empty backend for one subtest;
// subtests run in parallel, so open must be safe to call concurrently.
func Run(t *testing.T, open func(t *testing.T) objstore.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b objstore.Backend)
	}{
		{"PutGet", testPutGet},
		{"Range", testRange},
		{"PastEnd", testPastEnd},
		{"Missing", testMissing},
		{"Empty", testEmpty},
		{"List", testList},
		{"ListStops", testListStops},
		{"Delete", testDelete},
		{"ReplaceAtomically", testReplace},
		{"BadNames", testBadNames},
		{"ShortReader", testShortReader},
		{"ReaderPosition", testReaderPosition},
		{"ConcurrentPuts", testConcurrentPuts},
		{"Large", testLarge},
		{"Swap", testSwap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

var ctx = context.Background()

func random(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	return b
}

func put(t *testing.T, b objstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
}

func get(t *testing.T, b objstore.Backend, name string, off, n int64) []byte {
	t.Helper()
	got, err := b.GetRange(ctx, name, off, n)
	if err != nil {
		t.Fatalf("get %s [%d,+%d): %v", name, off, n, err)
	}
	return got
}

func list(t *testing.T, b objstore.Backend, prefix string) []objstore.Object {
	t.Helper()
	var objs []objstore.Object
	if err := b.List(ctx, prefix, func(o objstore.Object) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return objs
}

func testPutGet(t *testing.T, b objstore.Backend) {
	data := random(1000)
	put(t, b, "packs/00/one", data)
	if got := get(t, b, "packs/00/one", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want the %d put", len(got), len(data))
	}
	size, err := b.Stat(ctx, "packs/00/one")
	if err != nil || size != 1000 {
		t.Fatalf("stat = %d, %v; want 1000", size, err)
	}
	if b.String() == "" {
		t.Fatal("String is empty")
	}
}

func testRange(t *testing.T, b objstore.Backend) {
	data := random(4096)
	put(t, b, "r", data)
	for _, r := range [][2]int64{{0, 1}, {0, 4096}, {100, 200}, {4095, 1}, {1, -1}, {4000, -1}, {17, 0}} {
		want := data[r[0]:]
		if r[1] >= 0 {
			want = want[:r[1]]
		}
		got := get(t, b, "r", r[0], r[1])
		if !bytes.Equal(got, want) {
			t.Errorf("range [%d,+%d): got %d bytes, not the object's", r[0], r[1], len(got))
		}
	}
}

func testPastEnd(t *testing.T, b objstore.Backend) {
	data := random(100)
	put(t, b, "p", data)
	for _, r := range []struct {
		off, n int64
		want   []byte
	}{
		{98, 10, data[98:]},
		{0, 101, data},
		{100, 5, nil},
		{150, 5, nil},
	} {
		got, err := b.GetRange(ctx, "p", r.off, r.n)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("range [%d,+%d) of 100 bytes: err = %v, want io.ErrUnexpectedEOF", r.off, r.n, err)
		}
		if !bytes.Equal(got, r.want) {
			t.Errorf("range [%d,+%d) of 100 bytes: got %d bytes, want the %d up to the end", r.off, r.n, len(got), len(r.want))
		}
	}
	for _, off := range []int64{100, 150} {
		if got := get(t, b, "p", off, -1); len(got) != 0 {
			t.Errorf("read to the end from %d of 100 bytes: got %d bytes", off, len(got))
		}
	}
}

func testMissing(t *testing.T, b objstore.Backend) {
	put(t, b, "there", []byte("x"))
	for _, n := range []int64{-1, 0, 10} {
		if _, err := b.GetRange(ctx, "absent", 0, n); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("get absent (n=%d): %v, want ErrNotExist", n, err)
		}
	}
	if _, err := b.Stat(ctx, "absent"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("stat absent: %v, want ErrNotExist", err)
	}
	if _, err := b.Stat(ctx, "there/below"); err == nil {
		t.Error("stat of a name below an object succeeded")
	}
}

func testEmpty(t *testing.T, b objstore.Backend) {
	put(t, b, "empty", nil)
	if size, err := b.Stat(ctx, "empty"); err != nil || size != 0 {
		t.Fatalf("stat = %d, %v; want 0", size, err)
	}
	if got := get(t, b, "empty", 0, -1); len(got) != 0 {
		t.Fatalf("read %d bytes of an empty object", len(got))
	}
	if _, err := b.GetRange(ctx, "empty", 0, 1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("1 byte of an empty object: %v, want io.ErrUnexpectedEOF", err)
	}
	if objs := list(t, b, ""); !slices.Equal(objs, []objstore.Object{{Name: "empty", Size: 0}}) {
		t.Fatalf("list = %v", objs)
	}
}

func testList(t *testing.T, b objstore.Backend) {
	if objs := list(t, b, ""); len(objs) != 0 {
		t.Fatalf("a new backend lists %v", objs)
	}
	// "-" < "/" < "0": a walk of directories gets this order wrong.
	names := []string{"b", "a/c/d", "ab", "a-b", "a0", "a/b", "c/x"}
	for i, n := range names {
		put(t, b, n, random(i+1))
	}
	size := func(n string) int64 { return int64(slices.Index(names, n) + 1) }
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-b", "a/b", "a/c/d", "a0", "ab", "b", "c/x"}},
		{"a", []string{"a-b", "a/b", "a/c/d", "a0", "ab"}},
		{"a/", []string{"a/b", "a/c/d"}},
		{"a/c", []string{"a/c/d"}},
		{"c/", []string{"c/x"}},
		{"zz", nil},
	} {
		var want []objstore.Object
		for _, n := range tc.want {
			want = append(want, objstore.Object{Name: n, Size: size(n)})
		}
		if got := list(t, b, tc.prefix); !slices.Equal(got, want) {
			t.Errorf("list %q = %v, want %v", tc.prefix, got, want)
		}
	}
}

func testListStops(t *testing.T, b objstore.Backend) {
	for _, n := range []string{"1", "2", "3"} {
		put(t, b, n, []byte(n))
	}
	stop := errors.New("stop")
	var seen []string
	err := b.List(ctx, "", func(o objstore.Object) error {
		seen = append(seen, o.Name)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !slices.Equal(seen, []string{"1", "2"}) {
		t.Fatalf("list stopped by its callback: err %v after %v", err, seen)
	}
}

func testDelete(t *testing.T, b objstore.Backend) {
	put(t, b, "d/1", []byte("one"))
	put(t, b, "d/2", []byte("two"))
	if err := b.Delete(ctx, "d/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "d/1"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("stat after delete: %v, want ErrNotExist", err)
	}
	if err := b.Delete(ctx, "d/1"); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	if err := b.Delete(ctx, "never/was"); err != nil {
		t.Fatalf("delete of an object never put: %v", err)
	}
	if objs := list(t, b, ""); !slices.Equal(objs, []objstore.Object{{Name: "d/2", Size: 3}}) {
		t.Fatalf("list after delete = %v", objs)
	}
}

// testReplace puts two versions in turn while readers check that each
// read is one whole version.
func testReplace(t *testing.T, b objstore.Backend) {
	versions := [][]byte{bytes.Repeat([]byte{'a'}, 256<<10), bytes.Repeat([]byte{'b'}, 300<<10)}
	put(t, b, "obj", versions[0])
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				got, err := b.GetRange(ctx, "obj", 0, -1)
				if err != nil {
					errs <- fmt.Errorf("read during replace: %w", err)
					return
				}
				if !bytes.Equal(got, versions[0]) && !bytes.Equal(got, versions[1]) {
					errs <- fmt.Errorf("read %d bytes that are neither version", len(got))
					return
				}
			}
		}()
	}
	for i := range 8 {
		put(t, b, "obj", versions[(i+1)%2])
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := get(t, b, "obj", 0, -1); !bytes.Equal(got, versions[0]) {
		t.Fatalf("after the last put: %d bytes, not its version", len(got))
	}
}

func testBadNames(t *testing.T, b objstore.Backend) {
	for _, name := range []string{"", "/a", "a/", "a//b", "..", "../a", "a/../b", "a/./b", "."} {
		if err := b.Put(ctx, name, bytes.NewReader([]byte("x")), 1); err == nil {
			t.Errorf("put %q succeeded", name)
		}
		if _, err := b.GetRange(ctx, name, 0, -1); err == nil {
			t.Errorf("get %q succeeded", name)
		}
		if _, err := b.Stat(ctx, name); err == nil {
			t.Errorf("stat %q succeeded", name)
		}
		if err := b.Delete(ctx, name); err == nil {
			t.Errorf("delete %q succeeded", name)
		}
	}
	if objs := list(t, b, ""); len(objs) != 0 {
		t.Fatalf("bad names left %v", objs)
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testShortReader(t *testing.T, b objstore.Backend) {
	data := random(1000)
	for name, r := range map[string]io.Reader{
		"seekable": bytes.NewReader(data),
		"stream":   onlyReader{bytes.NewReader(data)},
	} {
		if err := b.Put(ctx, name, r, 2000); err == nil {
			t.Errorf("put of 2000 bytes from a %s reader of 1000 succeeded", name)
		}
		if _, err := b.Stat(ctx, name); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("a failed put of %s left an object: stat %v", name, err)
		}
	}
}

// testReaderPosition: Put takes size bytes from where the reader is, and
// no more.
func testReaderPosition(t *testing.T, b objstore.Backend) {
	data := random(1000)
	for name, mk := range map[string]func() io.Reader{
		"seekable": func() io.Reader { return bytes.NewReader(data) },
		"stream":   func() io.Reader { return onlyReader{bytes.NewReader(data)} },
	} {
		r := mk()
		if _, err := io.ReadFull(r, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(ctx, name, r, 500); err != nil {
			t.Fatal(err)
		}
		if got := get(t, b, name, 0, -1); !bytes.Equal(got, data[100:600]) {
			t.Errorf("put from a %s reader at 100 of 500 bytes stored %d other bytes", name, len(got))
		}
	}
}

func testConcurrentPuts(t *testing.T, b objstore.Backend) {
	const n = 16
	datas := make([][]byte, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		datas[i] = random(10000 + i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.Put(ctx, fmt.Sprintf("c/%02d", i), bytes.NewReader(datas[i]), int64(len(datas[i])))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	objs := list(t, b, "c/")
	if len(objs) != n {
		t.Fatalf("listed %d of %d objects", len(objs), n)
	}
	for i := range n {
		if got := get(t, b, fmt.Sprintf("c/%02d", i), 0, -1); !bytes.Equal(got, datas[i]) {
			t.Errorf("object %d reads back other bytes", i)
		}
	}
}

func testLarge(t *testing.T, b objstore.Backend) {
	data := random(5<<20 + 123)
	put(t, b, "large", data)
	if got := get(t, b, "large", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("large object reads back other bytes")
	}
	mid := int64(len(data) / 2)
	if got := get(t, b, "large", mid-1000, 1<<20); !bytes.Equal(got, data[mid-1000:mid-1000+1<<20]) {
		t.Fatal("a range across the middle reads back other bytes")
	}
	if size, err := b.Stat(ctx, "large"); err != nil || size != int64(len(data)) {
		t.Fatalf("stat = %d, %v; want %d", size, err, len(data))
	}
}

// testSwap: conditional writes, for a backend that offers them. Of
// claimers that all saw no object, exactly one creates it; a write with a
// stale tag is refused and changes nothing; one with the current tag
// replaces the object and gives a new tag; the listing shows nothing else.
func testSwap(t *testing.T, b objstore.Backend) {
	sw, ok := b.(objstore.Swapper)
	if !ok {
		t.Fatalf("%T is not an objstore.Swapper: every backend takes conditional writes", b)
	}
	const claimers = 6
	var wg sync.WaitGroup
	wins := make(chan int, claimers)
	errs := make(chan error, claimers)
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(fmt.Sprintf("claimer %d", i))
			_, err := sw.PutIf(ctx, "lease", bytes.NewReader(data), int64(len(data)), "")
			switch {
			case err == nil:
				wins <- i
			case !errors.Is(err, objstore.ErrChanged):
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(wins)
	close(errs)
	for err := range errs {
		t.Fatalf("a claim that lost: %v, want ErrChanged", err)
	}
	var won []int
	for i := range wins {
		won = append(won, i)
	}
	if len(won) != 1 {
		t.Fatalf("%d claimers created the object, want exactly 1", len(won))
	}
	got, tag, err := sw.GetTagged(ctx, "lease")
	if err != nil || string(got) != fmt.Sprintf("claimer %d", won[0]) || tag == "" {
		t.Fatalf("after the claims: %q, tag %q, %v; want the winner's, with a tag", got, tag, err)
	}
	next := []byte("renewed")
	tag2, err := sw.PutIf(ctx, "lease", bytes.NewReader(next), int64(len(next)), tag)
	if err != nil || tag2 == "" || tag2 == tag {
		t.Fatalf("a write with the current tag: tag %q, %v; want a new tag", tag2, err)
	}
	stale := []byte("stale")
	if _, err := sw.PutIf(ctx, "lease", bytes.NewReader(stale), int64(len(stale)), tag); !errors.Is(err, objstore.ErrChanged) {
		t.Fatalf("a write with a stale tag: %v, want ErrChanged", err)
	}
	if _, err := sw.PutIf(ctx, "lease", bytes.NewReader(stale), int64(len(stale)), ""); !errors.Is(err, objstore.ErrChanged) {
		t.Fatalf("a create over an object: %v, want ErrChanged", err)
	}
	if got, tag3, err := sw.GetTagged(ctx, "lease"); err != nil || !bytes.Equal(got, next) || tag3 != tag2 {
		t.Fatalf("after the refused writes: %q, tag %q, %v; want %q, tag %q", got, tag3, err, next, tag2)
	}
	if _, _, err := sw.GetTagged(ctx, "absent"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("GetTagged of nothing: %v, want ErrNotExist", err)
	}
	if objs := list(t, b, ""); len(objs) != 1 || objs[0].Name != "lease" {
		t.Fatalf("listing after the swaps: %v, want the one object", objs)
	}
}
