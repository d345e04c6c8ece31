package blockstore

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// shifted returns a 320 KiB "file" and the 64 KiB blocks of the volume
// holding it once at offset 0 and once shifted by three 4 KiB pages, as
// a copy inside a guest's file system would be.
func shifted(seed int64) (orig, copied [][]byte, file []byte) {
	file = make([]byte, 5*65536)
	rand.New(rand.NewSource(seed)).Read(file)
	for i := 0; i < len(file); i += 65536 {
		orig = append(orig, file[i:i+65536])
	}
	disk := append(make([]byte, 3*pageSize), file...)
	disk = append(disk, make([]byte, 65536-3*pageSize)...)
	for i := 0; i < len(disk); i += 65536 {
		copied = append(copied, disk[i:i+65536])
	}
	return orig, copied, file
}

func TestShiftedDuplicatesAreSliced(t *testing.T) {
	for _, sameTxn := range []bool{false, true} {
		s, db := openTest(t, vfs.NewMem(), CodecZstd)
		orig, copied, _ := shifted(1)
		copied[2] = bytes.Clone(copied[2])
		copy(copied[2][30000:], "an edit inside the copy") // a literal run
		var rs []PutResult
		if sameTxn {
			rs = put(t, s, db, append(append([][]byte{}, orig...), copied...)...)[len(orig):]
		} else {
			put(t, s, db, orig...)
			rs = put(t, s, db, copied...)
		}
		for i, r := range rs {
			if !r.New {
				t.Fatalf("block %d of the copy deduplicated whole", i)
			}
			// The last block holds the file's last three pages and zeros;
			// the rest are runs of the original.
			if i < len(rs)-1 && r.Stored > 1024 {
				t.Errorf("sameTxn=%v: block %d of the shifted copy took %d bytes", sameTxn, i, r.Stored)
			}
		}
		for i, c := range copied {
			got, err := s.Get(Sum(c))
			if err != nil || !bytes.Equal(got, c) {
				t.Fatalf("sameTxn=%v: block %d of the copy reads back wrong: %v", sameTxn, i, err)
			}
		}
		if st, err := s.Stats(); err != nil || st.SlicedChunks < int64(len(copied)-1) || st.SlicedBytes != st.SlicedChunks*65536 {
			t.Fatalf("stats: %+v, %v", st, err)
		}
		ids := make([]ID, len(copied))
		for i, c := range copied {
			ids[i] = Sum(c)
		}
		got, err := NewCache(s, 1<<20).GetMany(ids)
		if err != nil {
			t.Fatal(err)
		}
		for i := range copied {
			if !bytes.Equal(got[i], copied[i]) {
				t.Fatalf("GetMany: block %d differs", i)
			}
		}
	}
}

// A damaged source makes the sliced chunk an error, never other bytes.
func TestSlicedChunkWithDamagedSource(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecZstd)
	orig, copied, _ := shifted(2)
	put(t, s, db, orig...)
	put(t, s, db, copied...)
	v, closer, _ := db.Get(indexKey(Sum(orig[1])))
	loc, _ := unmarshalLocation(v)
	closer.Close()
	f, _ := fs.OpenReadWrite("packs/"+packName(loc.pack), vfs.WriteCategoryUnspecified)
	f.WriteAt([]byte{0x55}, loc.offset+recordHeaderSize+100)
	f.Close()
	// A store opened afresh: nothing of the sources is cached.
	fresh, err := Open(Options{FS: fs, Dir: "packs", DB: db, Codec: CodecZstd, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Get(Sum(copied[1])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("sliced chunk over a damaged source: %v", err)
	}
}

// A fingerprint that names a chunk with other bytes (a collision, or a
// crafted entry) is checked and ignored: the block is stored whole. Both
// value forms: a digest prefix, and the whole digest of earlier builds.
func TestFalseFingerprintIsIgnored(t *testing.T) {
	for _, vlen := range []int{printIDLen, len(ID{})} {
		s, db := openTest(t, vfs.NewMem(), CodecZstd)
		decoy := make([]byte, 65536)
		rand.New(rand.NewSource(3)).Read(decoy)
		put(t, s, db, decoy)
		block := make([]byte, 65536)
		rand.New(rand.NewSource(4)).Read(block)
		b := db.NewBatch()
		id := Sum(decoy)
		hashPages(block).each(true, true, func(page int, h uint64) {
			v := append(bytes.Clone(id[:vlen]), 0, byte(page))
			b.Set(fingerprintKey(h), v, nil)
		})
		if err := b.Commit(pebble.Sync); err != nil {
			t.Fatal(err)
		}
		txn := s.NewTxn()
		if got, _, ok := txn.lookupPrint(hashPages(block).h[1]); !ok || got != id {
			t.Fatalf("%d-byte fingerprint value: found %v %v, want the decoy", vlen, got, ok)
		}
		r := put(t, s, db, block)[0]
		if r.Stored < 65536 {
			t.Fatalf("block stored in %d bytes: it was sliced from a decoy", r.Stored)
		}
		if got, err := s.Get(Sum(block)); err != nil || !bytes.Equal(got, block) {
			t.Fatalf("read back: %v", err)
		}
	}
}

// Fingerprints name chunks by a digest prefix; the chunk index completes
// it. A prefix no chunk has finds nothing.
func TestFingerprintPrefixResolves(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	data := make([]byte, 65536)
	rand.New(rand.NewSource(5)).Read(data)
	put(t, s, db, data)
	id := Sum(data)
	if got, ok := s.completeID(id[:printIDLen]); !ok || got != id {
		t.Fatalf("completeID(prefix) = %v %v", got, ok)
	}
	other := bytes.Clone(id[:printIDLen])
	other[printIDLen-1]++
	if got, ok := s.completeID(other); ok {
		t.Fatalf("completeID of an unknown prefix found %v", got)
	}
	if got, ok := s.completeID([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); ok && got != id {
		t.Fatalf("completeID(ff..) = %v", got)
	}
}

func TestSlicesPayloadRejectsNonsense(t *testing.T) {
	cs, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 65536)
	good := cs.encodeSlices(CodecZstd, data, []segment{{length: 65536}})
	if _, lit, _, err := cs.parseSlices(good, 65536); err != nil || !bytes.Equal(lit, data) {
		t.Fatalf("a good payload: %v", err)
	}
	for i := range good {
		for _, bad := range [][]byte{good[:i], append(append([]byte{}, good[:i]...), 0xff)} {
			segs, lit, _, err := cs.parseSlices(bad, 65536)
			if err == nil && len(lit) != 65536 {
				t.Fatalf("%d bytes: %d segments and %d literal bytes, no error", len(bad), len(segs), len(lit))
			}
		}
	}
	if _, _, _, err := cs.parseSlices(good, 65535); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong length accepted: %v", err)
	}
}

// TestDamagedSlicesNeverServeOtherBytes assembles 20000 damaged slices
// payloads of each version (bytes changed, cut, inserted): each is an
// error or the bytes the payload was made for. Version 1 payloads are
// checked against the digest asked for (any digest: only bytes that hash
// to it may come back), version 2 against their own CRC-32C.
func TestDamagedSlicesNeverServeOtherBytes(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	data := make([]byte, 65536)
	for i := range data {
		data[i] = byte(i % pageSize * 7 / 3) // pages repeat: data is a shifted copy of itself
	}
	put(t, s, db, data)
	id := Sum(data)
	v2 := [][]byte{
		s.codecs.encodeSlices(CodecZstd, data, []segment{{length: 8192}, {length: 57344, ref: true, offset: 4096, src: id}}),
		s.codecs.encodeSlices(CodecRaw, data, []segment{{length: 65536}}),
	}
	for _, p := range v2 {
		if out, _, err := s.assemble(id, p, 65536, nil); err != nil || !bytes.Equal(out, data) {
			t.Fatalf("an undamaged payload: %v", err)
		}
	}
	rng := rand.New(rand.NewSource(2))
	for _, version := range []byte{1, 2} {
		for n := 0; n < 20000; n++ {
			p := bytes.Clone(v2[rng.Intn(len(v2))])
			if version == 1 {
				p = append([]byte{1, p[1], p[2], p[3]}, p[slicesHeaderSize:]...)
			}
			for k := 0; k < 1+rng.Intn(6); k++ {
				switch i := rng.Intn(len(p)); rng.Intn(3) {
				case 0:
					p[i] = byte(rng.Intn(256))
				case 1:
					p = p[:max(1, i)]
				case 2:
					p = append(p[:i], append(make([]byte, rng.Intn(64)), p[i:]...)...)
				}
			}
			want := Sum(p)
			if version == 2 || rng.Intn(4) == 0 {
				want = id
			}
			out, _, err := s.assemble(want, p, 65536, nil)
			if err == nil && (Sum(out) != want || version == 2 && !bytes.Equal(out, data)) {
				t.Fatalf("version %d payload %x: assembled other bytes", version, p)
			}
		}
	}
}

// Records written before version 2 (no CRC-32C) still read back, checked
// against the chunk's digest, and the cache keeps them; a version 2
// chunk rebuilt from raw sources for a whole-block read is not kept (read
// in part, it is), one with a source in a bundle is.
func TestSlicesVersionsAndCaching(t *testing.T) {
	s, db := openTest(t, vfs.NewMem(), CodecZstd)
	raw := make([]byte, 65536)
	rand.New(rand.NewSource(9)).Read(raw)
	text := bytes.Repeat([]byte("a line of a log file, compressible. "), 65536/36+1)[:65536]
	chunks := [][]byte{raw, text, bytes.Repeat([]byte("another compressible block. "), 65536/27+1)[:65536]}
	txn := s.NewTxn()
	if _, err := txn.PutMany([]ID{Sum(chunks[0]), Sum(chunks[1]), Sum(chunks[2])}, chunks); err != nil { // text in a bundle
		t.Fatal(err)
	}
	commit(t, s, db, txn)
	if loc, err := s.locate(Sum(text)); err != nil || loc.codec != CodecBundle {
		t.Fatalf("the text block is not a bundle member: %v %v", loc.codec, err)
	}
	shift := func(src []byte) []byte { return append(bytes.Clone(src[pageSize:]), make([]byte, pageSize)...) }
	fromRaw, fromText := shift(raw), shift(text)
	segs := func(src []byte) []segment {
		return []segment{{length: 65536 - pageSize, ref: true, offset: pageSize, src: Sum(src)}, {length: pageSize}}
	}
	v1 := func(p []byte) []byte { return append([]byte{1, p[1], p[2], p[3]}, p[slicesHeaderSize:]...) }
	oldRaw := shift(shift(raw))
	records := []struct {
		data    []byte
		payload []byte
		kept    bool
	}{
		{fromRaw, s.codecs.encodeSlices(CodecZstd, fromRaw, segs(raw)), false},
		{fromText, s.codecs.encodeSlices(CodecZstd, fromText, segs(text)), true},
		{oldRaw, v1(s.codecs.encodeSlices(CodecZstd, oldRaw, []segment{{length: 65536 - 2*pageSize, ref: true, offset: 2 * pageSize, src: Sum(raw)}, {length: 2 * pageSize}})), true},
	}
	// Written as PutMany writes them, with payloads made here.
	r := newRun()
	offs := make([]int64, len(records))
	locs := make([]location, len(records))
	for i, rec := range records {
		offs[i], locs[i] = r.add(Sum(rec.data), len(rec.data), rec.payload, CodecSlices, false)
	}
	pack, base, err := s.write(r, nil)
	r.release()
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	for i, rec := range records {
		locs[i].pack, locs[i].offset = pack, base+offs[i]
		if err := b.Set(indexKey(Sum(rec.data)), locs[i].marshal(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Apply(b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	c := NewSlabCache(s, 8<<20)
	for i, rec := range records {
		whole := [][]byte{make([]byte, len(rec.data))} // a sequential read offers the block's buffer
		err := c.ReadMany([]ID{Sum(rec.data)}, whole, func(_ int, d []byte) {
			if !bytes.Equal(d, rec.data) {
				t.Errorf("record %d reads back other bytes", i)
			}
		})
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got := c.Has(Sum(rec.data)); got != rec.kept {
			t.Errorf("record %d: kept by the cache %v, want %v", i, got, rec.kept)
		}
	}
	// Read in part (no buffer offered), the cheap one is kept too.
	if err := c.ReadMany([]ID{Sum(fromRaw)}, nil, func(int, []byte) {}); err != nil {
		t.Fatal(err)
	}
	if !c.Has(Sum(fromRaw)) {
		t.Error("a shifted duplicate read in part was not kept")
	}
}

// TestPutManyWholeStoresNoSlices: a shifted copy of a stored chunk,
// which PutMany stores as a slices record, is stored whole by
// PutManyWhole, and reads back the same.
func TestPutManyWholeStoresNoSlices(t *testing.T) {
	fs := vfs.NewMem()
	s, db := openTest(t, fs, CodecRaw)
	src := make([]byte, 64<<10)
	rand.New(rand.NewSource(9)).Read(src)
	put(t, s, db, src)
	shifted := append(make([]byte, 4096), src[:60<<10]...)
	txn := s.NewTxn()
	defer txn.Done()
	res, err := txn.PutManyWhole([]ID{Sum(shifted)}, [][]byte{shifted})
	if err != nil || !res[0].New {
		t.Fatalf("PutManyWhole: %+v %v", res, err)
	}
	commit(t, s, db, txn)
	loc, err := s.locateIndex(res[0].ID)
	if err != nil || loc.codec == CodecSlices {
		t.Fatalf("stored as %v (%v), want whole", loc.codec, err)
	}
	mustGet(t, s, res[0].ID, shifted)
}
