package blockstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rewind-dev/rewind/blockstore/hugemem"
	"github.com/rewind-dev/rewind/blockstore/objstore"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// vectorReader is a pack file without a descriptor that still reads
// into several buffers at once (remote.Packs): payloads then land in the
// caller's buffers, as with preadv.
type vectorReader interface {
	ReadvAt(bufs [][]byte, off int64) (int, error)
}

// maxSpan bounds one coalesced read of neighbouring records.
const maxSpan = 4 << 20

// ManyReader reads several chunks at once (see Store.ReadMany).
type ManyReader interface {
	ReadMany(ids []ID, into [][]byte, fn func(i int, data []byte)) error
}

var _ ManyReader = (*Store)(nil)

// ReadMany calls fn(i, data) once for each chunk ids[i] with its
// decoded bytes, verified as Get verifies them. Records that lie next to
// each other in a pack, as the blocks of one import do, are read with one
// preadv, and compressed records are decoded in parallel; fn may run on
// several goroutines at once, each with its own i.
//
// into, if not nil, offers for each chunk a buffer of the caller's (or
// nil): a raw chunk of exactly that length is read straight into it and
// handed to fn as that same slice, saving a copy. Otherwise data is valid
// only during the call: it sits in a recycled buffer. On error fn may have
// been called for some chunks, and the buffers of into may hold any bytes.
func (s *Store) ReadMany(ids []ID, into [][]byte, fn func(i int, data []byte)) error {
	return s.readMany(ids, into, false, nil, func(i int, data []byte, _ bool) { fn(i, data) })
}

// readManySiblings is ReadMany that also hands sib the other members of
// the bundles it decoded, and tells fn which chunks were cheap to rebuild
// (see verifyParts).
func (s *Store) readManySiblings(ids []ID, into [][]byte, sib func(ID, []byte), fn func(i int, data []byte, cheap bool)) error {
	return s.readMany(ids, into, false, sib, fn)
}

// readMany is ReadMany; with wholeOnly, a slices record is an error. sib,
// if not nil, is handed the members of the bundles this call decoded that
// it was not asked for (valid during the call).
//
// Locations come from the store's cache of them where it has them (see
// locCache); a read that fails as damage on a remembered location, or on
// one that a collection moved since (see gc.go), forgets the locations of
// the call and tries once more with the index's, handing fn only the
// chunks it did not have yet.
func (s *Store) readMany(ids []ID, into [][]byte, wholeOnly bool, sib func(ID, []byte), fn func(i int, data []byte, cheap bool)) error {
	locs := make([]location, len(ids))
	remembered := false
	for i, id := range ids {
		var err error
		var hit bool
		if locs[i], hit, err = s.locateCached(id); err != nil {
			return err
		}
		remembered = remembered || hit
	}
	got := make([]atomic.Bool, len(ids))
	err := s.readLocated(ids, locs, into, wholeOnly, sib, func(i int, data []byte, cheap bool) {
		got[i].Store(true)
		fn(i, data, cheap)
	})
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return err
	}
	first, moved := err, false
	s.locs.forget(ids...)
	var rest []int
	for i := range ids {
		if !got[i].Load() {
			rest = append(rest, i)
		}
	}
	sub, subLocs := make([]ID, len(rest)), make([]location, len(rest))
	var subInto [][]byte
	if into != nil {
		subInto = make([][]byte, len(rest))
	}
	for k, i := range rest {
		sub[k] = ids[i]
		if subLocs[k], err = s.locateIndex(ids[i]); err != nil {
			return err
		}
		// Remembered, so that the stale place a version value still
		// names (see Place) is not tried again at the next read.
		s.locs.add(ids[i], subLocs[k])
		moved = moved || subLocs[k] != locs[i]
		if into != nil {
			subInto[k] = into[i]
		}
	}
	if !remembered && !moved {
		// Damage where the index says, not a stale place: rebuilt from
		// parity, or refused.
		if !s.healAll(sub, subLocs) {
			return first
		}
		return s.readLocated(sub, subLocs, subInto, wholeOnly, sib, func(k int, data []byte, cheap bool) { fn(rest[k], data, cheap) })
	}
	got2 := make([]atomic.Bool, len(sub))
	err = s.readLocated(sub, subLocs, subInto, wholeOnly, sib, func(k int, data []byte, cheap bool) {
		got2[k].Store(true)
		fn(rest[k], data, cheap)
	})
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return err
	}
	var rest2 []int
	for k := range sub {
		if !got2[k].Load() {
			rest2 = append(rest2, k)
		}
	}
	ids2, locs2 := make([]ID, len(rest2)), make([]location, len(rest2))
	var into2 [][]byte
	if subInto != nil {
		into2 = make([][]byte, len(rest2))
	}
	for j, k := range rest2 {
		ids2[j], locs2[j] = sub[k], subLocs[k]
		if subInto != nil {
			into2[j] = subInto[k]
		}
	}
	if !s.healAll(ids2, locs2) {
		return err
	}
	return s.readLocated(ids2, locs2, into2, wholeOnly, sib, func(j int, data []byte, cheap bool) { fn(rest[rest2[j]], data, cheap) })
}

// healAll rebuilds from parity the records of ids that fail their
// checks, and reports whether it rebuilt any (worth reading again).
// Those it cannot rebuild are remembered as damaged.
func (s *Store) healAll(ids []ID, locs []location) bool {
	healed := false
	for i, id := range ids {
		if _, err := s.readInto(id, locs[i], make([]byte, locs[i].size())); err == nil || !errors.Is(err, ErrCorrupt) {
			continue
		}
		if s.healRead(id, locs[i]) {
			healed = true
		}
	}
	return healed
}

// readLocated is readMany for chunks whose locations are known.
func (s *Store) readLocated(ids []ID, locs []location, into [][]byte, wholeOnly bool, sib func(ID, []byte), fn func(i int, data []byte, cheap bool)) error {
	for i, id := range ids {
		if wholeOnly && locs[i].codec == CodecSlices {
			return fmt.Errorf("chunk %s: %w: a slices record where a whole chunk belongs", id, ErrCorrupt)
		}
	}
	// The members of a bundle are decoded once: by the first reader to
	// want it, here or in another call, through the bundle cache. Not so
	// for the sources of slices records (wholeOnly): they are read while
	// a slices record of the same or another call is being decoded, whose
	// reader may own the very bundle and not load it before it returns.
	var reads []int // the chunks whose records are read here
	bundles := map[recordKey]*bundleRead{}
	for i := range ids {
		if locs[i].codec != CodecBundle || wholeOnly {
			reads = append(reads, i)
			continue
		}
		k := locs[i].key()
		br := bundles[k]
		if br == nil {
			e, owner := s.bundles.acquire(k)
			br = &bundleRead{e: e, owner: owner}
			bundles[k] = br
			if owner {
				reads = append(reads, i)
			}
		}
		br.want = append(br.want, i)
	}
	defer func() {
		for _, br := range bundles {
			if br.owner {
				s.bundles.fail(br.e, errNotLoaded, nil) // no-op once loaded
			}
			s.bundles.release(br.e)
		}
	}()
	if err := s.readRecords(ids, locs, into, reads, bundles, fn); err != nil {
		return err
	}
	var retry []int
	for _, br := range bundles {
		<-br.e.ready
		if errors.Is(br.e.err, errNotLoaded) { // its reader gave up: read it here
			retry = append(retry, br.want...)
			continue
		}
		if br.e.err != nil {
			return br.e.err
		}
		var wanted uint32 // a bit per member (at most maxBundleMembers)
		for _, i := range br.want {
			k, err := bundleMemberOf(br.e.members, ids[i], locs[i])
			if err != nil {
				return err
			}
			m := br.e.members[k]
			fn(i, br.e.data[m.off:m.off+m.length], false)
			wanted |= 1 << k
		}
		if sib != nil {
			for k, m := range br.e.members {
				if wanted&(1<<k) == 0 {
					sib(m.id, br.e.data[m.off:m.off+m.length])
				}
			}
		}
	}
	if len(retry) == 0 {
		return nil
	}
	sub := make([]ID, len(retry))
	for k, i := range retry {
		sub[k] = ids[i]
	}
	return s.readMany(sub, nil, wholeOnly, sib, func(k int, data []byte, cheap bool) { fn(retry[k], data, cheap) })
}

// bundleRead is a bundle some chunks of a ReadMany belong to.
type bundleRead struct {
	e     *bundleEntry
	owner bool  // this call loads it
	want  []int // the chunks asked for
}

// readRecords reads the records of the chunks reads, neighbours in a
// pack together, and hands each chunk to fn; a bundle it loads into its
// entry of bundles instead.
func (s *Store) readRecords(ids []ID, locs []location, into [][]byte, reads []int, bundles map[recordKey]*bundleRead, fn func(int, []byte, bool)) error {
	if len(reads) == 0 {
		return nil
	}
	order := reads
	sort.Slice(order, func(a, b int) bool {
		la, lb := locs[order[a]], locs[order[b]]
		return la.pack < lb.pack || la.pack == lb.pack && la.offset < lb.offset
	})
	var groups [][]int
	var spans []int64
	for start := 0; start < len(order); {
		end, span := start+1, locs[order[start]].size()
		for end < len(order) && end-start < maxGroup {
			prev, next := locs[order[end-1]], locs[order[end]]
			if next.pack != prev.pack || next.offset != prev.offset+prev.size() || span+next.size() > maxSpan {
				break
			}
			span += next.size()
			end++
		}
		groups = append(groups, order[start:end])
		spans = append(spans, span)
		start = end
	}
	direct := func(i int) []byte {
		if into != nil && into[i] != nil && locs[i].codec == CodecRaw && len(into[i]) == int(locs[i].decodedLen) {
			return into[i]
		}
		return nil
	}
	load := func(i int, hdr, payload []byte) (bool, error) {
		if locs[i].codec != CodecBundle {
			return false, nil
		}
		br := bundles[locs[i].key()]
		if br == nil { // a source of a slices record: decoded on its own
			return false, nil
		}
		return true, s.loadBundle(ids[i], locs[i], hdr, payload, br.e)
	}
	if len(groups) == 1 {
		return s.readGroup(ids, locs, groups[0], spans[0], direct, load, fn)
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for k, group := range groups {
		g.Go(func() error { return s.readGroup(ids, locs, group, spans[k], direct, load, fn) })
	}
	return g.Wait()
}

// loadBundle checks and decodes the bundle record that chunk id belongs
// to into its cache entry e, which this reader owns.
func (s *Store) loadBundle(id ID, loc location, hdr, payload []byte, e *bundleEntry) error {
	if err := checkRecord(id, loc, hdr, payload); err != nil {
		s.bundles.fail(e, err, nil)
		return err
	}
	bp := s.bundles.buffer()
	members, data, err := s.decodeBundle(payload, int(loc.bundleLen), *bp)
	if err != nil {
		err = fmt.Errorf("chunk %s: %w", id, err)
		s.bundles.fail(e, err, bp)
		return err
	}
	s.bundles.fill(e, members, data, bp)
	return nil
}

// maxGroup bounds the records of one read, so that its I/O vector stays
// under the kernel's IOV_MAX (1024) at two entries a record.
const maxGroup = 500

// GetMany returns the decoded bytes of each chunk of ids (see ReadMany).
func (s *Store) GetMany(ids []ID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	err := s.ReadMany(ids, nil, func(i int, data []byte) { out[i] = bytes.Clone(data) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readGroup reads the neighbouring records of group with one preadv:
// the payloads that direct offers a buffer for go straight there, the
// rest (headers, compressed or partly wanted payloads) into a recycled
// scratch buffer. It then verifies and decodes each record, handing it to
// fn.
func (s *Store) readGroup(ids []ID, locs []location, group []int, span int64, direct func(int) []byte, load func(int, []byte, []byte) (bool, error), fn func(int, []byte, bool)) error {
	first := locs[group[0]]
	f, err := s.file(first.pack)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", ids[group[0]], err)
	}
	fd := f.Fd()
	vec, _ := f.(vectorReader)
	inPlace := make([][]byte, len(group)) // payloads read into the caller's buffers
	var scratchLen int64
	for k, i := range group {
		if fd != vfs.InvalidFd || vec != nil {
			inPlace[k] = direct(i)
		}
		if inPlace[k] != nil {
			scratchLen += recordHeaderSize
		} else {
			scratchLen += locs[i].size()
		}
	}
	bp := getSpan(scratchLen)
	defer putSpan(bp)
	scratch := (*bp)[:scratchLen]
	// hdrs[k] and payloads[k] are where record group[k] landed.
	hdrs := make([][]byte, len(group))
	payloads := make([][]byte, len(group))
	iov := make([][]byte, 0, 2*len(group))
	used, runStart := int64(0), int64(-1) // runStart: where the last iovec's scratch run began
	take := func(n int64) []byte {
		b := scratch[used : used+n]
		if runStart >= 0 { // scratch regions that follow each other share one iovec
			iov[len(iov)-1] = scratch[runStart : used+n]
		} else {
			runStart = used
			iov = append(iov, b)
		}
		used += n
		return b
	}
	for k, i := range group {
		if d := inPlace[k]; d != nil {
			hdrs[k] = take(recordHeaderSize)
			payloads[k] = d
			iov = append(iov, d)
			runStart = -1
			continue
		}
		rec := take(locs[i].size())
		hdrs[k], payloads[k] = rec[:recordHeaderSize], rec[recordHeaderSize:]
	}
	var n int
	switch {
	case fd != vfs.InvalidFd:
		n, err = preadvFull(int(fd), iov, first.offset)
	case vec != nil:
		n, err = vec.ReadvAt(iov, first.offset)
	default:
		n, err = f.ReadAt(scratch, first.offset) // everything went to scratch
	}
	if int64(n) != span && errors.Is(err, objstore.ErrUnreachable) {
		return fmt.Errorf("chunk %s: pack %d: %w", ids[group[0]], first.pack, err) // not damage: try later
	}
	if int64(n) != span {
		return fmt.Errorf("chunk %s: %w: pack %d truncated at %d: %v", ids[group[0]], ErrCorrupt, first.pack, first.offset, err)
	}
	decode := func(k int) error {
		i := group[k]
		if loaded, err := load(i, hdrs[k], payloads[k]); loaded || err != nil {
			return err
		}
		// Decoded bytes go to a recycled buffer, not a fresh one: fresh
		// memory costs a page fault per 4 KiB on a cold read, and the
		// cache above copies what it keeps into its own slabs.
		var buf []byte
		if locs[i].codec != CodecRaw {
			bp := getSpan(int64(locs[i].decodedLen) + zstdSlack)
			defer putSpan(bp)
			buf = *bp
		}
		data, cheap, err := s.verifyParts(ids[i], locs[i], hdrs[k], payloads[k], buf)
		if err != nil {
			return err
		}
		fn(i, data, cheap)
		return nil
	}
	// Raw records only need their checksum checked: do them here. Decoding
	// is the costly part: spread it over the cores, so that even one large
	// read (a FUSE request of 1 MiB) uses them all.
	var packed []int
	for k, i := range group {
		if locs[i].codec != CodecRaw {
			packed = append(packed, k)
			continue
		}
		if err := decode(k); err != nil {
			return err
		}
	}
	if len(packed) <= 1 {
		for _, k := range packed {
			if err := decode(k); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, k := range packed {
		g.Go(func() error { return decode(k) })
	}
	return g.Wait()
}

// spanPools recycle read buffers by size class (up to 128 KiB, 512 KiB,
// 1 MiB, maxSpan), in memory advised for huge pages (see hugemem): fresh
// buffers of megabytes cost page faults on every cold read, and
// sync.Pool would hand its buffers to the garbage collector.
var spanPools = [4]*hugemem.Pool{
	hugemem.NewPool(128<<10, keptBuffers), hugemem.NewPool(512<<10, keptBuffers),
	hugemem.NewPool(1<<20, keptBuffers), hugemem.NewPool(maxSpan, keptBuffers),
}

// keptBuffers is how many bytes of read buffers of one size a process
// keeps in memory once given back: more than a busy daemon holds at once
// (its readers are bounded by the cores and the NBD budgets).
const keptBuffers = 64 << 20

func getSpan(n int64) *[]byte {
	for _, p := range spanPools {
		if n <= int64(p.Size()) {
			return p.Get()
		}
	}
	b := make([]byte, n)
	return &b
}

func putSpan(bp *[]byte) {
	for _, p := range spanPools {
		if cap(*bp) == p.Size() {
			p.Put(bp)
			return
		}
	}
}

// size is the length of the record, header included.
func (l location) size() int64 { return recordHeaderSize + int64(l.payloadLen) }

// preadvFull reads into bufs from fd at off, as many times as it takes.
func preadvFull(fd int, bufs [][]byte, off int64) (int, error) {
	total := 0
	for len(bufs) > 0 {
		n, err := unix.Preadv(fd, bufs, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, io.ErrUnexpectedEOF
		}
		total += n
		off += int64(n)
		bufs = advance(bufs, n)
	}
	return total, nil
}

// advance drops the first n bytes of an I/O vector, and the buffers left
// empty.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
			continue
		}
		bufs[0] = bufs[0][n:]
		n = 0
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}
