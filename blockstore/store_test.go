package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

func openTest(t *testing.T, fs vfs.FS, codec Codec) (*Store, *pebble.DB) {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: codec, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); db.Close() })
	return s, db
}

func put(t *testing.T, s *Store, db *pebble.DB, chunks ...[]byte) []PutResult {
	t.Helper()
	txn := s.NewTxn()
	var out []PutResult
	for _, c := range chunks {
		r, err := txn.Put(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	commit(t, s, db, txn)
	return out
}

// commit makes what txn stored durable and indexed, as a writer does.
func commit(t testing.TB, s *Store, db *pebble.DB, txn *Txn) {
	t.Helper()
	commitWith(t, s, txn, db.NewBatch())
}

// commitWith is commit of txn's entries in b, with what b holds.
func commitWith(t testing.TB, s *Store, txn *Txn, b *pebble.Batch) {
	t.Helper()
	if err := txn.AddTo(b); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncPacks(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func TestPutGetDedupCompress(t *testing.T) {
	for _, codec := range []Codec{CodecZstd, CodecS2, CodecRaw} {
		s, db := openTest(t, vfs.NewMem(), codec)
		random := make([]byte, 65536)
		rand.New(rand.NewSource(1)).Read(random)
		text := bytes.Repeat([]byte("hello, world "), 5000)
		rs := put(t, s, db, random, text, random)
		if !rs[0].New || !rs[1].New || rs[2].New || rs[2].Stored != 0 {
			t.Fatalf("%s: dedup within a transaction failed: %+v", codec, rs)
		}
		if rs[0].Stored < int64(len(random)) {
			t.Fatalf("%s: random data stored in %d bytes", codec, rs[0].Stored)
		}
		if codec != CodecRaw && rs[1].Stored > int64(len(text))/4 {
			t.Fatalf("%s: text stored in %d bytes, not compressed", codec, rs[1].Stored)
		}
		if again := put(t, s, db, text); again[0].New {
			t.Fatalf("%s: dedup across transactions failed", codec)
		}
		for _, c := range [][]byte{random, text} {
			got, err := s.Get(Sum(c))
			if err != nil || !bytes.Equal(got, c) {
				t.Fatalf("%s: Get = %d bytes, %v", codec, len(got), err)
			}
		}
		if _, err := s.Get(Sum([]byte("never stored"))); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: missing chunk: %v", codec, err)
		}
	}
}

// TestCorruptionIsAnError flips each byte of a stored record in turn: every
// read must fail with ErrCorrupt, never return other bytes.
func TestCorruptionIsAnError(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecZstd)
	data := bytes.Repeat([]byte("some compressible block contents "), 2000)
	r := put(t, s, db, data)[0]
	v, closer, err := db.Get(indexKey(r.ID))
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := unmarshalLocation(v)
	closer.Close()
	f, err := fs.OpenReadWrite("packs/"+packName(loc.pack), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := recordHeaderSize + int(loc.payloadLen)
	orig := make([]byte, n)
	f.ReadAt(orig, loc.offset)
	for i := 0; i < n; i++ {
		bad := append([]byte(nil), orig...)
		bad[i] ^= 0x40
		f.WriteAt(bad, loc.offset)
		got, err := s.Get(r.ID)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: Get returned %d bytes, err %v", i, len(got), err)
		}
	}
	f.WriteAt(orig, loc.offset)
	if got, err := s.Get(r.ID); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restored record: %v", err)
	}
}

// TestTruncatedPackIsCorrupt: a pack cut short (a lost tail) reads as
// ErrCorrupt.
func TestTruncatedPackIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	fs := vfs.Default
	db, err := pebble.Open(dir+"/db", &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := Open(Options{FS: fs, Dir: dir + "/packs", DB: db, Codec: CodecZstd})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := put(t, s, db, bytes.Repeat([]byte("x"), 65536))[0]
	if err := os.Truncate(dir+"/packs/"+packName(1), packHeaderSize+20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(r.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated pack: %v", err)
	}
}

func TestPacksRotateAndReopen(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecRaw)
	var chunks [][]byte
	for i := 0; i < 40; i++ { // 40 x 64 KiB over 1 MiB packs
		c := make([]byte, 65536)
		rand.New(rand.NewSource(int64(i))).Read(c)
		chunks = append(chunks, c)
	}
	put(t, s, db, chunks...)
	st, err := s.Stats()
	if err != nil || st.Packs < 3 || st.Chunks != 40 {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	s.Close()
	s2, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecRaw, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, c := range chunks {
		if got, err := s2.Get(Sum(c)); err != nil || !bytes.Equal(got, c) {
			t.Fatalf("after reopen: %v", err)
		}
	}
}

// quiet drops Pebble's log lines in tests.
type quiet struct{}

func (quiet) Infof(string, ...any)           {}
func (quiet) Errorf(string, ...any)          {}
func (quiet) Fatalf(format string, a ...any) { panic(format) }

// TestGetMany reads neighbouring and scattered chunks together, in any
// order, and reports a damaged one as ErrCorrupt.
func TestGetMany(t *testing.T) {
	t.Run("memory", func(t *testing.T) { testGetMany(t, vfs.NewMem(), "") })
	// On a real file system raw chunks are read in place with preadv.
	t.Run("disk", func(t *testing.T) { testGetMany(t, vfs.Default, t.TempDir()) })
}

func testGetMany(t *testing.T, fs vfs.FS, dir string) {
	db, err := pebble.Open(fs.PathJoin(dir, "db"), &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{FS: fs, Dir: fs.PathJoin(dir, "packs"), DB: db, Codec: CodecZstd, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close(); db.Close() }()
	var chunks [][]byte
	for i := 0; i < 24; i++ {
		c := bytes.Repeat([]byte{byte(i)}, 65536)
		if i%3 == 0 {
			rand.New(rand.NewSource(int64(i))).Read(c)
		}
		chunks = append(chunks, c)
	}
	put(t, s, db, chunks...)
	ids := []ID{Sum(chunks[5]), Sum(chunks[0]), Sum(chunks[1]), Sum(chunks[2]), Sum(chunks[23]), Sum(chunks[5]), Sum(chunks[12]), Sum(chunks[3])}
	want := [][]byte{chunks[5], chunks[0], chunks[1], chunks[2], chunks[23], chunks[5], chunks[12], chunks[3]}
	for _, g := range []interface{ GetMany([]ID) ([][]byte, error) }{s, NewCache(s, 1<<20)} {
		got, err := g.GetMany(ids)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("chunk %d differs", i)
			}
		}
	}
	// In place: buffers of the right length (raw ones filled directly),
	// a short one and none at all.
	into := make([][]byte, len(ids))
	for i := range into {
		into[i] = make([]byte, 65536)
	}
	into[6], into[7] = make([]byte, 100), nil
	got := make([][]byte, len(ids))
	err = s.ReadMany(ids, into, func(i int, data []byte) { got[i] = bytes.Clone(data) })
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("in place: chunk %d differs", i)
		}
	}
	if dir != "" && !bytes.Equal(into[1], chunks[0]) { // chunk 0 is random: raw
		t.Fatalf("a raw chunk was not read in place")
	}
	// Damage chunks 1 (compressed) and 3 (raw): reading either with its
	// neighbours fails, in place or not.
	for _, c := range []int{1, 3} {
		v, closer, _ := db.Get(indexKey(Sum(chunks[c])))
		loc, _ := unmarshalLocation(v)
		closer.Close()
		f, _ := fs.OpenReadWrite(fs.PathJoin(dir, "packs", packName(loc.pack)), vfs.WriteCategoryUnspecified)
		f.WriteAt([]byte{0xff, 0xfe}, loc.offset+recordHeaderSize+3)
		f.Close()
	}
	if _, err := s.GetMany(ids[1:4]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged chunk among neighbours: %v", err)
	}
	err = s.ReadMany([]ID{Sum(chunks[2]), Sum(chunks[3]), Sum(chunks[4])}, [][]byte{make([]byte, 65536), make([]byte, 65536), nil}, func(int, []byte) {})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a damaged raw chunk read in place: %v", err)
	}
	if _, err := s.GetMany([]ID{Sum([]byte("nope")), ids[0]}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing chunk: %v", err)
	}
}

// TestLostBytesAreStoredAgain: an index entry that points past the end of
// its pack (bytes lost in a power failure) does not deduplicate; storing
// the chunk again heals it.
func TestLostBytesAreStoredAgain(t *testing.T) {
	dir := t.TempDir()
	fs := vfs.Default
	db, err := pebble.Open(dir+"/db", &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	open := func() *Store {
		s, err := Open(Options{FS: fs, Dir: dir + "/packs", DB: db, Codec: CodecZstd, NoParity: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	data := bytes.Repeat([]byte("lost and found "), 4000)
	put(t, s, db, data)
	s.Close()
	if err := os.Truncate(dir+"/packs/"+packName(1), packHeaderSize); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	if _, err := s.Get(Sum(data)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("lost bytes read as %v", err)
	}
	if r := put(t, s, db, data); !r[0].New {
		t.Fatal("a chunk whose bytes were lost was deduplicated")
	}
	if got, err := s.Get(Sum(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after storing it again: %v", err)
	}
}

// Opening a store creates no pack until the first write, and removes the
// header-only packs that earlier builds left at every open, but the
// newest: a pack number is never used twice.
func TestOpenCreatesNoPackUntilWritten(t *testing.T) {
	fs := vfs.NewMem()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	open := func() *Store {
		s, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecZstd})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	packs := func() []string {
		names, _ := fs.List("packs")
		var out []string
		for _, n := range names {
			if strings.HasSuffix(n, ".pack") {
				out = append(out, n)
			}
		}
		sort.Strings(out)
		return out
	}
	s := open()
	data := bytes.Repeat([]byte("data"), 4096)
	put(t, s, db, data)
	s.Close()
	for _, n := range []uint32{2, 3, 4} { // empty ones, as earlier builds left them
		f, _ := fs.Create("packs/"+packName(n), vfs.WriteCategoryUnspecified)
		f.Write(packHeader())
		f.Close()
	}
	for range 3 {
		s = open()
		if got, err := s.Get(Sum(data)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read: %v", err)
		}
		s.Close()
	}
	if got := packs(); len(got) != 2 || got[0] != packName(1) || got[1] != packName(4) {
		t.Fatalf("packs after reading only: %v", got)
	}
	s = open()
	defer s.Close()
	put(t, s, db, []byte("more"))
	if got := packs(); len(got) != 3 || got[2] != packName(5) {
		t.Fatalf("packs after a write: %v", got)
	}
}

// A remembered location that went stale (the chunk was stored again
// elsewhere and the old record is damaged) costs a second lookup, not an
// error: reads fall back to the index and hand each chunk over once.
// openOnDisk opens a store of raw records in dir, on disk, and its index.
func openOnDisk(t *testing.T, dir string) (*Store, *pebble.DB) {
	t.Helper()
	db, err := pebble.Open(dir+"/db", &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := Open(Options{FS: vfs.Default, Dir: dir + "/packs", DB: db, Codec: CodecRaw})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

func TestStaleRememberedLocation(t *testing.T) {
	dir := t.TempDir()
	s, db := openOnDisk(t, dir)
	defer s.Close()
	a, b := make([]byte, 65536), make([]byte, 65536)
	rand.New(rand.NewSource(3)).Read(a)
	rand.New(rand.NewSource(4)).Read(b)
	put(t, s, db, a, b)
	old, err := s.locate(Sum(a)) // remembered from here on
	if err != nil {
		t.Fatal(err)
	}
	// Store a again as a new record, and point the index at it.
	r := newRun()
	off, loc := r.add(Sum(a), len(a), a, CodecRaw, false)
	pack, base, err := s.write(r, nil)
	r.release()
	if err != nil {
		t.Fatal(err)
	}
	loc.pack, loc.offset = pack, base+off
	if err := db.Set(indexKey(Sum(a)), loc.marshal(), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	// Damage the old record.
	f, err := os.OpenFile(dir+"/packs/"+packName(old.pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xde, 0xad}, old.offset+recordHeaderSize+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if l, ok := s.locs.get(Sum(a)); !ok || l != old {
		t.Fatal("the old location is not remembered: the test tests nothing")
	}
	calls := make([]atomic.Int32, 2)
	want := [][]byte{a, b}
	err = s.ReadMany([]ID{Sum(a), Sum(b)}, nil, func(i int, d []byte) {
		calls[i].Add(1)
		if !bytes.Equal(d, want[i]) {
			t.Errorf("chunk %d: other bytes", i)
		}
	})
	if err != nil || calls[0].Load() != 1 || calls[1].Load() != 1 {
		t.Fatalf("ReadMany over a stale location: %v, calls %d %d", err, calls[0].Load(), calls[1].Load())
	}
	s.locs.add(Sum(a), old)
	if got, err := s.Get(Sum(a)); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Get over a stale location: %v", err)
	}
}

// WarmLocations loads the index into the cache of locations, up to half
// of it, never over an entry a read put there; the reads after it use
// what it loaded; Close stops it.
func TestWarmLocations(t *testing.T) {
	dir := t.TempDir()
	s, db := openOnDisk(t, dir)
	rng := rand.New(rand.NewSource(5))
	var chunks [][]byte
	for range 40 {
		c := make([]byte, 4096)
		rng.Read(c)
		chunks = append(chunks, c)
	}
	put(t, s, db, chunks...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(Options{FS: vfs.Default, Dir: dir + "/packs", DB: db, Codec: CodecRaw})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.locs = newLocCache(60) // room for 30 of the 40
	first, err := s.locateIndex(Sum(chunks[0]))
	if err != nil {
		t.Fatal(err)
	}
	marked := first
	marked.member = 12345 // recognisable: the loader must leave it alone
	s.locs.add(Sum(chunks[0]), marked)
	s.WarmLocations()
	<-s.warmDone // the load stops when the cache is half full
	if n := len(s.locs.cur) + len(s.locs.old); n != 30 {
		t.Fatalf("%d locations in the cache after loading, want 30", n)
	}
	if l, _ := s.locs.get(Sum(chunks[0])); l != marked {
		t.Fatal("loading replaced a location a read had put in the cache")
	}
	loaded := 0
	for _, c := range chunks[1:] {
		l, ok := s.locs.get(Sum(c))
		if !ok {
			continue
		}
		loaded++
		if want, err := s.locateIndex(Sum(c)); err != nil || l != want {
			t.Fatalf("loaded location %+v, the index says %+v (%v)", l, want, err)
		}
	}
	if loaded != 29 {
		t.Fatalf("%d loaded locations found, want 29", loaded)
	}
	s.locs.forget(Sum(chunks[0]))
	got, err := s.GetMany([]ID{Sum(chunks[0]), Sum(chunks[39])})
	if err != nil || !bytes.Equal(got[0], chunks[0]) || !bytes.Equal(got[1], chunks[39]) {
		t.Fatalf("reading after the load: %v", err)
	}
}

// TestSmallChunksStopBeingCompressedWhenNothingShrinks stores small
// incompressible chunks until compression is only probed, then small
// compressible ones: some are stored raw (not tried), the probe shrinks,
// and from it on every small chunk is compressed again. Every chunk reads
// back as its bytes.
func TestSmallChunksStopBeingCompressedWhenNothingShrinks(t *testing.T) {
	for _, codec := range []Codec{CodecZstd, CodecS2} {
		s, db := openTest(t, vfs.NewMem(), codec)
		rnd := rand.New(rand.NewSource(1))
		var chunks [][]byte
		for range smallMisses {
			c := make([]byte, 4096)
			rnd.Read(c)
			chunks = append(chunks, c)
		}
		for i := range 3 * smallProbe {
			chunks = append(chunks, bytes.Repeat([]byte(fmt.Sprintf("text %6d ", i)), 410)[:4096])
		}
		rs := put(t, s, db, chunks...)
		raw, first := 0, -1
		for i, r := range rs[smallMisses:] {
			compressed := r.Stored < 2048
			if compressed && first < 0 {
				first = i
			}
			if !compressed {
				raw++
				if first >= 0 {
					t.Errorf("%s: text chunk %d stored raw after chunk %d shrank", codec, i, first)
				}
			}
		}
		if raw == 0 || raw >= smallProbe || first < 0 {
			t.Errorf("%s: after %d incompressible chunks, %d text chunks stored raw, the first compressed is %d; want 1 to %d raw, then all compressed",
				codec, smallMisses, raw, first, smallProbe-1)
		}
		for i, c := range chunks {
			if got, err := s.Get(rs[i].ID); err != nil || !bytes.Equal(got, c) {
				t.Fatalf("%s: chunk %d reads back %d bytes, %v", codec, i, len(got), err)
			}
		}
	}
}
