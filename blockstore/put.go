package blockstore

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// Txn adds chunks on behalf of a writer. Their index entries are handed to
// the writer's batch by AddTo, so they commit, or vanish, with the
// references to them. A Txn is safe for concurrent use.
type Txn struct {
	s  *Store
	mu struct {
		sync.Mutex
		pending [][2][]byte // index entries not yet handed to a batch
		added   map[ID]bool // every chunk this Txn stored
		// For finding shifted duplicates among the chunks this Txn stored,
		// whose entries are not in the index yet: their locations and their
		// page fingerprints.
		locs   map[ID]location
		prints map[uint64]pageRef
	}
}

type pageRef struct {
	id   ID
	page int
}

// NewTxn starts adding chunks.
func (s *Store) NewTxn() *Txn {
	t := &Txn{s: s}
	t.mu.added = map[ID]bool{}
	t.mu.locs = map[ID]location{}
	t.mu.prints = map[uint64]pageRef{}
	return t
}

// lookupPrint finds the chunk and page a page fingerprint was left by.
func (t *Txn) lookupPrint(h uint64) (ID, int, bool) {
	t.mu.Lock()
	r, ok := t.mu.prints[h]
	t.mu.Unlock()
	if ok {
		return r.id, r.page, true
	}
	v, closer, err := t.s.db.Get(fingerprintKey(h))
	if err != nil {
		return ID{}, 0, false
	}
	defer closer.Close()
	var id ID
	switch len(v) {
	case printIDLen + 2:
		if id, ok = t.s.completeID(v[:printIDLen]); !ok {
			return ID{}, 0, false
		}
	case len(id) + 2: // written by earlier builds
		copy(id[:], v)
	default:
		return ID{}, 0, false
	}
	return id, int(binary.BigEndian.Uint16(v[len(v)-2:])), true
}

// completeID finds the indexed chunk whose digest begins with prefix. Two
// chunks sharing a prefix are possible (and harmless: findSlices compares
// the bytes); the first in digest order is taken.
func (s *Store) completeID(prefix []byte) (ID, bool) {
	lo := append([]byte{IndexPrefix}, prefix...)
	hi := append([]byte{IndexPrefix}, prefix...)
	for i := len(hi) - 1; i > 0; i-- { // the prefix's successor
		if hi[i]++; hi[i] != 0 {
			break
		}
		if i == 1 {
			hi = []byte{IndexPrefix + 1}
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return ID{}, false
	}
	defer it.Close()
	var id ID
	if !it.First() || len(it.Key()) != 1+len(id) {
		return ID{}, false
	}
	copy(id[:], it.Key()[1:])
	return id, true
}

// readSource returns the bytes of a chunk stored whole, by this Txn or
// before it, through the store's cache of sources: a run of copied blocks
// reads each source twice.
func (t *Txn) readSource(id ID) ([]byte, error) {
	if data, ok := t.s.sources.cached(id); ok {
		return data, nil
	}
	t.mu.Lock()
	loc, pending := t.mu.locs[id]
	t.mu.Unlock()
	if !pending {
		return t.s.sources.Get(id)
	}
	data, err := t.s.read(id, loc) // not in the index yet
	if err != nil {
		return nil, err
	}
	t.s.sources.add(id, data)
	return data, nil
}

// AddTo moves the index entries of the chunks stored so far into b. A
// reference to a chunk must be committed in the same batch as its entry or
// a later one.
func (t *Txn) AddTo(b *pebble.Batch) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, kv := range t.mu.pending {
		if err := b.Set(kv[0], kv[1], nil); err != nil {
			return err
		}
	}
	t.mu.pending = t.mu.pending[:0]
	return nil
}

// PutResult says what Put did.
type PutResult struct {
	ID     ID
	New    bool  // the chunk was not stored before
	Stored int64 // bytes appended to a pack (0 when deduplicated)
}

// Put stores data (unless a chunk with its digest exists) and returns its
// ID.
func (t *Txn) Put(data []byte) (PutResult, error) {
	return t.PutID(Sum(data), data)
}

// PutID is Put for a caller that has already hashed data.
func (t *Txn) PutID(id ID, data []byte) (PutResult, error) {
	res, err := t.PutMany([]ID{id}, [][]byte{data})
	if err != nil {
		return PutResult{}, err
	}
	return res[0], nil
}

// Has reports whether the chunk id is indexed.
//
// An entry whose record lies past the end of its pack (its bytes were lost
// in a power failure after the entry reached the disk) does not count: the
// chunk is stored again and its new entry replaces the broken one, which
// also heals every version that refers to it.
func (s *Store) Has(id ID) (bool, error) {
	v, closer, err := s.db.Get(indexKey(id))
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blockstore: index lookup: %w", err)
	}
	loc, err := unmarshalLocation(v)
	closer.Close()
	if err != nil {
		return false, nil
	}
	return loc.offset+loc.size() <= s.packEnd(loc.pack), nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// encodeRecord appends the record of chunk id to buf. The location it
// returns lacks the pack and offset.
func (s *Store) encodeRecord(buf []byte, id ID, data []byte) ([]byte, location) {
	sp := bufPool.Get().(*[]byte)
	defer bufPool.Put(sp)
	payload, codec := s.codecs.encode(s.codec, data, (*sp)[:0])
	if codec != CodecRaw {
		*sp = payload[:0] // keep a grown scratch buffer
	}
	return appendRecord(buf, id, len(data), payload, codec)
}

// appendRecord appends the record of chunk id (decodedLen bytes, encoded
// as payload with codec) to buf.
func appendRecord(buf []byte, id ID, decodedLen int, payload []byte, codec Codec) ([]byte, location) {
	h := recordHeader{payloadLen: uint32(len(payload)), decodedLen: uint32(decodedLen), codec: codec, id: id}
	start := len(buf)
	buf = append(buf, make([]byte, recordHeaderSize)...)
	buf = append(buf, payload...)
	rec := buf[start:]
	h.marshal(rec[:recordHeaderSize])
	h.crc = recordCRC(rec)
	h.marshal(rec[:recordHeaderSize])
	return buf, location{payloadLen: h.payloadLen, decodedLen: h.decodedLen, codec: codec}
}

// write appends buf to the active pack with one pwrite.
func (s *Store) write(buf []byte) (uint32, int64, error) {
	pack, off, f, err := s.reserve(int64(len(buf)))
	if err != nil {
		return 0, 0, err
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return 0, 0, fmt.Errorf("blockstore: write pack %d: %w", pack, err)
	}
	s.markDirty(pack)
	startWriteback(f, off, int64(len(buf)))
	return pack, off, nil
}

// startWriteback asks the kernel to begin writing [off, off+n) of a pack
// to the device now, without waiting, so that the fdatasync before the
// next index commit finds little left to do instead of stalling an
// import for the whole run of dirty pages.
func startWriteback(f vfs.File, off, n int64) {
	if fd := f.Fd(); fd != vfs.InvalidFd {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE) // a hint; SyncPacks makes it durable
	}
}

// PutMany is Put for several chunks (ids[i] is the digest of datas[i]):
// those not stored yet are written as one run of records with one pwrite,
// so blocks that are read together lie together in the pack.
func (t *Txn) PutMany(ids []ID, datas [][]byte) ([]PutResult, error) {
	res := make([]PutResult, len(ids))
	type rec struct {
		i      int
		off    int64
		loc    location
		prints [][2][]byte // of a chunk stored whole
	}
	var recs []rec
	size := 0
	for _, d := range datas {
		size += recordHeaderSize + len(d)
	}
	buf := make([]byte, 0, size) // raw records are no larger; compressed ones smaller
	batch := map[ID]bool{}
	for i, id := range ids {
		res[i].ID = id
		t.mu.Lock()
		seen := t.mu.added[id]
		t.mu.Unlock()
		if seen || batch[id] {
			continue
		}
		ok, err := t.s.Has(id)
		if err != nil {
			return nil, err
		}
		if ok {
			continue
		}
		batch[id] = true
		start := int64(len(buf))
		var loc location
		var prints [][2][]byte
		buf, loc = t.s.encodeRecord(buf, id, datas[i])
		var ph pageHashes
		if len(datas[i]) >= minSlicedBlock {
			ph = hashPages(datas[i])
		}
		if segs := findSlices(datas[i], ph, t.lookupPrint, t.readSource); segs != nil {
			// Slices win only when smaller than the block stored whole.
			if payload := t.s.codecs.encodeSlices(t.s.codec, datas[i], segs); len(payload) < int(loc.payloadLen) {
				buf, loc = appendRecord(buf[:start], id, len(datas[i]), payload, CodecSlices)
			}
		}
		if loc.codec != CodecSlices {
			prints = fingerprintEntries(id, datas[i], ph)
		}
		recs = append(recs, rec{i: i, off: start, loc: loc, prints: prints})
	}
	if len(recs) == 0 {
		return res, nil
	}
	pack, off, err := t.s.write(buf)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range recs {
		id := ids[r.i]
		if t.mu.added[id] {
			continue // another goroutine's entry wins; ours is garbage
		}
		r.loc.pack, r.loc.offset = pack, off+r.off
		t.mu.added[id] = true
		t.mu.locs[id] = r.loc
		t.mu.pending = append(t.mu.pending, [2][]byte{indexKey(id), r.loc.marshal()})
		for _, kv := range r.prints {
			t.mu.pending = append(t.mu.pending, kv)
			t.mu.prints[binary.BigEndian.Uint64(kv[0][1:])] = pageRef{id: id, page: int(binary.BigEndian.Uint16(kv[1][printIDLen:]))}
		}
		res[r.i].New = true
		res[r.i].Stored = r.loc.size()
	}
	return res, nil
}
