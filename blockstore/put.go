package blockstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/hugemem"
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
	// Guarded by s.mu (see Txn.Discard): where its first byte went, the
	// store's write count then, and its own writes since.
	started       bool
	start         Position
	writesAtStart uint64
	writes        uint64
	// refs holds the stored chunks it relied on (see gc.go). Locked
	// after the store's lock, never before it.
	refsMu sync.Mutex
	refs   map[ID]bool
}

type pageRef struct {
	id   ID
	page int
}

// NewTxn starts adding chunks.
func (s *Store) NewTxn() *Txn {
	// Its maps are made when first written: a clone write's Txn stores
	// one chunk, and four maps for it were a fortieth of its CPU.
	t := &Txn{s: s}
	s.mu.Lock()
	s.mu.txns[t] = true
	s.mu.Unlock()
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
	if ok, err := t.s.has(t, id); err != nil || !ok {
		return ID{}, 0, false // gone, or another import's that may be discarded
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
// before it, through the store's cache of sources (a run of copied blocks
// reads each source twice), and a function that gives their buffer back.
// The bytes sit in a recycled buffer, not a fresh one: an import reads a
// source for every block of a copied file, and fresh memory is dear (see
// hugemem).
func (t *Txn) readSource(id ID) ([]byte, func(), error) {
	t.mu.Lock()
	loc, pending := t.mu.locs[id]
	t.mu.Unlock()
	if pending && !t.s.sources.Has(id) { // not in the index yet
		data, release, err := t.s.readPooled(id, loc)
		if err != nil {
			return nil, nil, err
		}
		t.s.sources.addRead(id, data, false)
		return data, release, nil
	}
	var bp *[]byte
	var n int
	err := t.s.sources.ReadMany([]ID{id}, nil, func(_ int, d []byte) {
		bp = getSpan(int64(len(d)))
		n = copy(*bp, d)
	})
	if err != nil {
		if bp != nil {
			putSpan(bp)
		}
		return nil, nil, err
	}
	return (*bp)[:n], func() { putSpan(bp) }, nil
}

// addedLocked records that t stored chunk id at loc, and queues its index
// entry. t.mu is held.
func (t *Txn) addedLocked(id ID, loc location) {
	if t.mu.added == nil {
		t.mu.added = map[ID]bool{}
		t.mu.locs = map[ID]location{}
	}
	t.mu.added[id] = true
	t.mu.locs[id] = loc
	t.s.ids.add(id)
	t.mu.pending = append(t.mu.pending, [2][]byte{indexKey(id), loc.marshal()})
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
	// Place is where the chunk's record lies, for the reference to it
	// (see Place); unknown when it was stored by a Txn that this one
	// does not know of.
	Place Place
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
//
// A chunk stored since the start of a discardable Txn that is still live
// (an import under way) does not count either: the import may fail and
// give its bytes back.
func (s *Store) Has(id ID) (bool, error) { return s.has(nil, id) }

// has is Has for a chunk that t would reference. A chunk that a
// running collection is sweeping counts as absent, once the sweep has
// committed (see gc.go); a chunk reported stored is recorded as relied
// on, by t and by the collection.
func (s *Store) has(t *Txn, id ID) (bool, error) {
	ok, _, err := s.hasAt(t, id)
	return ok, err
}

// hasAt is has that also returns the chunk's location when it is
// stored.
func (s *Store) hasAt(t *Txn, id ID) (bool, location, error) {
	for {
		if s.ids.absent(id) {
			return false, location{}, nil
		}
		gen := s.sweepGen.Load()
		v, closer, err := s.db.Get(indexKey(id))
		if errors.Is(err, pebble.ErrNotFound) {
			return false, location{}, nil
		}
		if err != nil {
			return false, location{}, fmt.Errorf("blockstore: index lookup: %w", err)
		}
		loc, err := unmarshalLocation(v)
		closer.Close()
		if err != nil {
			return false, location{}, nil
		}
		s.mu.Lock()
		if g := s.mu.gc; g != nil && g.doomed[id] {
			s.waitSweptLocked(g)
			s.mu.Unlock()
			return false, location{}, nil
		}
		if s.sweepGen.Load() != gen { // the entry may be gone: look again
			s.mu.Unlock()
			continue
		}
		ok := loc.offset+loc.size() <= s.packEndLocked(loc.pack) && !s.inLiveRegionLocked(t, loc) && !s.isDamaged(id, loc)
		if ok {
			s.useLocked(t, id)
		}
		s.mu.Unlock()
		return ok, loc, nil
	}
}

// bufPool and runPool recycle the scratch buffers of encoding and the
// buffers of runs, in memory advised for huge pages: fresh memory costs a
// page fault per 4 KiB, which is dear on a virtual machine (see hugemem).
// A buffer that has to grow grows on the heap; the pool keeps the one it
// handed out.
var (
	bufPool = hugemem.NewPool(128<<10, 16<<20)
	runPool = hugemem.NewPool(runBufferBytes, 64<<20)
)

// minWriteback is the smallest run whose writeback is started at once
// (see startWriteback).
const minWriteback = 256 << 10

// write appends the run to the active pack with one pwritev, on behalf
// of t. A write that fails gives its space back, if it can.
func (s *Store) write(r *run, t *Txn) (uint32, int64, error) {
	pack, off, f, err := s.reserve(r.size, t)
	if err != nil {
		return 0, 0, err
	}
	iov := make([][]byte, len(r.pieces))
	for k, p := range r.pieces {
		if iov[k] = p.ext; p.ext == nil {
			iov[k] = r.buf[p.lo:p.hi]
		}
	}
	if fd := f.Fd(); fd != vfs.InvalidFd {
		err = pwritevFull(int(fd), iov, off)
	} else {
		_, err = f.WriteAt(bytes.Join(iov, nil), off)
	}
	s.mu.Lock()
	if s.mu.inflight[pack]--; s.mu.inflight[pack] <= 0 {
		delete(s.mu.inflight, pack)
		s.mu.landed.Broadcast()
	}
	s.mu.Unlock()
	if err != nil {
		s.mu.Lock()
		s.unreserveLocked(pack, off, r.size)
		s.mu.Unlock()
		return 0, 0, fmt.Errorf("blockstore: write pack %d: %w", pack, err)
	}
	s.markDirty(pack)
	startWriteback(f, off, r.size)
	return pack, off, nil
}

// pwritevFull writes bufs to fd at off, as many times as it takes, at most
// IOV_MAX (1024) buffers at a time.
func pwritevFull(fd int, bufs [][]byte, off int64) error {
	for len(bufs) > 0 {
		n, err := unix.Pwritev(fd, bufs[:min(len(bufs), 1024)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		bufs = advance(bufs, n)
	}
	return nil
}

// startWriteback asks the kernel to begin writing [off, off+n) of a pack
// to the device now, without waiting, so that the fdatasync before the
// next index commit finds little left to do instead of stalling an
// import for the whole run of dirty pages. Runs under minWriteback (a
// clone write's few kilobytes) are left to that sync: a system call and
// a device request for each would cost a small write more than the
// write itself.
func startWriteback(f vfs.File, off, n int64) {
	if n < minWriteback {
		return
	}
	if fd := f.Fd(); fd != vfs.InvalidFd {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE) // a hint; SyncPacks makes it durable
	}
}

// PutMany is Put for several chunks (ids[i] is the digest of datas[i]):
// those not stored yet are written as one run of records with one pwrite,
// so blocks that are read together lie together in the pack. With zstd,
// the compressible ones among them are compressed in bundles of up to
// maxBundleMembers (see CodecBundle).
func (t *Txn) PutMany(ids []ID, datas [][]byte) ([]PutResult, error) {
	return t.putMany(ids, datas, true, false, nil)
}

// PutManyWhole is PutMany for chunks that must read fast on their own:
// none is stored as a slices record (its sources would be read with it),
// so they cost their compressed size, in one record or bundle, to read.
// The timeline folds blocks with it.
func (t *Txn) PutManyWhole(ids []ID, datas [][]byte) ([]PutResult, error) {
	return t.putMany(ids, datas, false, false, nil)
}

// Prepared is a chunk hashed, and encoded as Put encodes a chunk stored
// alone, ahead of its PutPrepared: writers that arrive together do this
// work side by side, and one of them stores all of them (see
// timeline.View.WriteMany). Its Data must not change until then.
type Prepared struct {
	ID      ID
	Data    []byte
	payload []byte
	codec   Codec
	buf     *[]byte // holds payload when encoded
}

// preparedBufs hold encoded payloads, on the Go heap: one that is never
// given back is garbage, not a leak.
var preparedBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// Prepare hashes data and encodes it as Put would store it alone.
func (s *Store) Prepare(data []byte) *Prepared {
	p := &Prepared{ID: Sum(data), Data: data, payload: data, codec: CodecRaw}
	c := s.codec
	small := len(data) <= maxS2Chunk
	if c == CodecZstd && small {
		c = CodecS2
	}
	if c == CodecRaw || small && !s.small.try() {
		return p
	}
	buf := preparedBufs.Get().(*[]byte)
	p.payload, p.codec = s.codecs.encode(c, data, (*buf)[:0])
	if small {
		s.small.tried(p.codec != CodecRaw)
	}
	if p.codec == CodecRaw { // stored as it is: p.payload is data
		preparedBufs.Put(buf)
		return p
	}
	if cap(p.payload) > cap(*buf) {
		*buf = p.payload[:0] // it grew: keep the larger one
	}
	p.buf = buf
	return p
}

// Release gives back p's buffer; p is not used again.
func (p *Prepared) Release() {
	if p != nil && p.buf != nil {
		preparedBufs.Put(p.buf)
		p.buf, p.payload = nil, nil
	}
}

// PutPrepared stores chunks already prepared, unrelated ones: each as
// Put stores a chunk alone (never in a bundle with the others: each is
// read on its own), all in one pwrite. It releases them.
func (t *Txn) PutPrepared(ps []*Prepared) ([]PutResult, error) {
	defer func() {
		for _, p := range ps {
			p.Release()
		}
	}()
	ids := make([]ID, len(ps))
	datas := make([][]byte, len(ps))
	for i, p := range ps {
		ids[i], datas[i] = p.ID, p.Data
	}
	return t.putMany(ids, datas, false, true, ps)
}

// putMany stores the chunks not stored yet: sliced allows slices records,
// alone stores each as Put would store it by itself, and pre, when not
// nil, holds each chunk's encoding (alone).
func (t *Txn) putMany(ids []ID, datas [][]byte, sliced, alone bool, pre []*Prepared) ([]PutResult, error) {
	res := make([]PutResult, len(ids))
	type rec struct {
		i      int
		off    int64 // of the record in the run
		loc    location
		stored int64
		prints [][2][]byte // of a chunk stored whole
	}
	var recs []rec
	r := newRun()
	defer r.release()
	// The compressible chunks waiting for their bundle.
	var bundle []int
	bundleBytes := 0
	bundlePrints := map[int][][2][]byte{}
	single := func(i int, prints [][2][]byte) {
		var off int64
		var loc location
		if pre != nil {
			p := pre[i]
			off, loc = r.add(ids[i], len(datas[i]), p.payload, p.codec, p.codec == CodecRaw)
		} else {
			off, loc = r.addChunk(t.s, ids[i], datas[i])
		}
		recs = append(recs, rec{i: i, off: off, loc: loc, stored: loc.size(), prints: prints})
	}
	flushBundle := func() {
		defer func() { bundle, bundleBytes = bundle[:0], 0 }()
		if len(bundle) == 1 {
			single(bundle[0], bundlePrints[bundle[0]])
			return
		}
		bids := make([]ID, len(bundle))
		bdatas := make([][]byte, len(bundle))
		for k, i := range bundle {
			bids[k], bdatas[k] = ids[i], datas[i]
		}
		off, loc, ok := r.addBundle(t.s.codecs, bids, bdatas, bundleBytes)
		if !ok {
			for _, i := range bundle {
				single(i, bundlePrints[i])
			}
			return
		}
		// Each member is charged its share of the record.
		left, member := loc.size(), uint32(0)
		for k, i := range bundle {
			share := loc.size() * int64(len(datas[i])) / int64(bundleBytes)
			if k == len(bundle)-1 {
				share = left
			}
			left -= share
			mloc := loc
			mloc.decodedLen, mloc.member, mloc.bundleLen = uint32(len(datas[i])), member, uint32(bundleBytes)
			member += uint32(len(datas[i]))
			recs = append(recs, rec{i: i, off: off, loc: mloc, stored: share, prints: bundlePrints[i]})
		}
	}
	sp := bufPool.Get()
	defer bufPool.Put(sp)
	batch := map[ID]bool{}
	for i, id := range ids {
		res[i].ID = id
		t.mu.Lock()
		seen := t.mu.added[id]
		t.mu.Unlock()
		if seen || batch[id] {
			continue // its place is filled in below
		}
		ok, loc, err := t.s.hasAt(t, id)
		if err != nil {
			return nil, err
		}
		if ok {
			res[i].Place = Place{loc: loc, ok: true}
			continue
		}
		batch[id] = true
		var ph pageHashes
		if len(datas[i]) >= minSlicedBlock {
			ph = hashPages(datas[i])
		}
		var segs []segment
		if sliced {
			segs = findSlices(datas[i], ph, t.lookupPrint, t.readSource)
		}
		if segs != nil {
			// Slices win only when smaller than the block stored whole.
			whole, codec := t.s.codecs.encode(t.s.codec, datas[i], (*sp)[:0])
			if payload := t.s.codecs.encodeSlices(t.s.codec, datas[i], segs); len(payload) < len(whole) {
				off, loc := r.add(id, len(datas[i]), payload, CodecSlices, false)
				recs = append(recs, rec{i: i, off: off, loc: loc, stored: loc.size()})
				continue
			}
			off, loc := r.add(id, len(datas[i]), whole, codec, codec == CodecRaw)
			recs = append(recs, rec{i: i, off: off, loc: loc, stored: loc.size(), prints: fingerprintEntries(id, datas[i], ph)})
			continue
		}
		prints := fingerprintEntries(id, datas[i], ph)
		if alone || t.s.codec != CodecZstd || len(datas[i]) > maxBundleBytes/2 || (len(ids) == 1 && len(datas[i]) <= maxS2Chunk) {
			single(i, prints)
			continue
		}
		if incompressible(datas[i], (*sp)[:0]) {
			off, loc := r.add(id, len(datas[i]), datas[i], CodecRaw, true)
			recs = append(recs, rec{i: i, off: off, loc: loc, stored: loc.size(), prints: prints})
			continue
		}
		if bundleBytes+len(datas[i]) > maxBundleBytes {
			flushBundle()
		}
		bundle = append(bundle, i)
		bundleBytes += len(datas[i])
		bundlePrints[i] = prints
		if len(bundle) == maxBundleMembers {
			flushBundle()
		}
	}
	if len(bundle) > 0 {
		flushBundle()
	}
	if len(recs) == 0 {
		t.placeRest(res)
		return res, nil
	}
	pack, off, err := t.s.write(r, t)
	if err != nil {
		return nil, err
	}
	stored := make([]ID, len(recs))
	for k, r := range recs {
		stored[k] = ids[r.i]
	}
	t.s.locs.forget(stored...) // a chunk stored again has a new location
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range recs {
		id := ids[r.i]
		if t.mu.added[id] {
			continue // another goroutine's entry wins; ours is garbage
		}
		r.loc.pack, r.loc.offset = pack, off+r.off
		t.addedLocked(id, r.loc)
		for _, kv := range r.prints {
			t.mu.pending = append(t.mu.pending, kv)
			if t.mu.prints == nil {
				t.mu.prints = map[uint64]pageRef{}
			}
			t.mu.prints[binary.BigEndian.Uint64(kv[0][1:])] = pageRef{id: id, page: int(binary.BigEndian.Uint16(kv[1][printIDLen:]))}
		}
		res[r.i].New = true
		res[r.i].Stored = r.stored
	}
	t.placeRestLocked(res)
	return res, nil
}
