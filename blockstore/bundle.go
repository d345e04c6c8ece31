package blockstore

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/rewind-dev/rewind/blockstore/hugemem"
)

// Bundles. A 64 KiB block compressed alone gives zstd a small window and
// pays for its entropy tables in every frame; text and logs compress
// 12% smaller (the benchmark image: 80.7 MB against 70.6 MB for its
// 297 MB of compressible blocks) when sixteen neighbouring blocks are
// compressed as one frame. A bundle record holds up to maxBundleMembers
// chunks that one PutMany stores (the new blocks of an import segment,
// in block order) as one frame. Every member keeps its own index entry
// (location version 2: the record, and where the member lies in the
// decoded bundle), so dedup and references work per chunk as before.
//
// Reading a member decodes the whole bundle. The store keeps the last
// bundles it decoded (bundleCache), so the reads of a disk, which come
// for neighbouring blocks, decode each bundle once; a cache above the
// store is handed the members it did not ask for (Cache.readMany).
//
// Payload (part of the on-disk format):
//
//	version u8 (1) | frame codec u8 | members u16 |
//	members, each: digest [32] | length u32 |
//	the members' bytes, one after the other, encoded with the frame codec
//
// The record header's decoded length is the bundle's (the sum of the
// members' lengths) and its digest is the first member's. Chunks that do
// not compress (random data, media) are never bundled: they stay raw
// records, which a read copies straight into its buffer.
const CodecBundle Codec = 4

const (
	maxBundleMembers = 16
	maxBundleBytes   = 1 << 20
	bundleEntrySize  = 32 + 4
)

// bundleMember is a chunk of a bundle, at off in the decoded bundle.
type bundleMember struct {
	id          ID
	off, length uint32
}

// joinPool recycles the buffers bundles are joined in (see bufPool).
var joinPool = hugemem.NewPool(maxBundleBytes, 16<<20)

// appendBundle appends the payload of a bundle of the chunks datas
// (digests ids) to dst, or returns false when the frame would not save
// 1/16 of their size.
func (cs *codecs) appendBundle(dst []byte, ids []ID, datas [][]byte) ([]byte, bool) {
	jp := joinPool.Get()
	defer joinPool.Put(jp)
	joined := (*jp)[:0]
	for _, d := range datas {
		joined = append(joined, d...)
	}
	start := len(dst)
	var hdr [4]byte
	hdr[0], hdr[1] = 1, byte(CodecZstd)
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(ids)))
	dst = append(dst, hdr[:]...)
	for k, id := range ids {
		dst = append(dst, id[:]...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(datas[k])))
	}
	dst = cs.benc.EncodeAll(joined, dst)
	if len(dst)-start >= len(joined)-len(joined)/16 {
		return dst[:start], false
	}
	return dst, true
}

// parseBundle returns the members of a bundle payload, its frame and the
// frame's codec. decodedLen is the record's.
func parseBundle(payload []byte, decodedLen int) ([]bundleMember, []byte, Codec, error) {
	bad := func(why string) ([]bundleMember, []byte, Codec, error) {
		return nil, nil, 0, fmt.Errorf("%w: bundle record: %s", ErrCorrupt, why)
	}
	if len(payload) < 4 || payload[0] != 1 {
		return bad("unknown version")
	}
	fc := Codec(payload[1])
	if fc != CodecZstd && fc != CodecS2 {
		return bad(fmt.Sprintf("frame codec %s", fc))
	}
	n := int(binary.BigEndian.Uint16(payload[2:]))
	if n == 0 || n > maxBundleMembers || len(payload) < 4+n*bundleEntrySize {
		return bad(fmt.Sprintf("%d members", n))
	}
	if decodedLen > maxBundleBytes {
		return bad(fmt.Sprintf("%d bytes decoded", decodedLen))
	}
	members := make([]bundleMember, n)
	off := 0
	for k := range members {
		e := payload[4+k*bundleEntrySize:]
		copy(members[k].id[:], e)
		length := int(binary.BigEndian.Uint32(e[32:]))
		if length == 0 || length > decodedLen-off {
			return bad("member lengths disagree with the record")
		}
		members[k].off, members[k].length = uint32(off), uint32(length)
		off += length
	}
	if off != decodedLen {
		return bad("member lengths disagree with the record")
	}
	return members, payload[4+n*bundleEntrySize:], fc, nil
}

// bundleMemberOf returns the index in members of the member that loc,
// the index entry of chunk id, names: the entry and the record must agree
// on the digest, the offset and the length.
func bundleMemberOf(members []bundleMember, id ID, loc location) (int, error) {
	for k, m := range members {
		if m.off == loc.member {
			if m.id != id || m.length != loc.decodedLen {
				break
			}
			return k, nil
		}
	}
	return 0, fmt.Errorf("chunk %s: %w: bundle at pack %d offset %d holds no such member", id, ErrCorrupt, loc.pack, loc.offset)
}

// decodeBundle decodes a verified bundle payload into dst when it has room
// (decodedLen plus zstdSlack), else into a new buffer.
func (s *Store) decodeBundle(payload []byte, decodedLen int, dst []byte) ([]bundleMember, []byte, error) {
	members, frame, fc, err := parseBundle(payload, decodedLen)
	if err != nil {
		return nil, nil, err
	}
	data, err := s.codecs.decode(fc, frame, decodedLen, dst)
	if err != nil {
		return nil, nil, err
	}
	return members, data, nil
}

// recordKey names a record: its pack and offset.
type recordKey struct {
	pack   uint32
	offset int64
}

// maxDecodedBundles is how many decoded bundles a store keeps: enough for
// the streams of several clients reading a disk side by side (nbdcopy
// keeps four connections busy, each on its own region).
const maxDecodedBundles = 32

// bundleCache keeps the bundles decoded last, and makes the readers that
// want a bundle being decoded wait for it instead of decoding it again.
// Its buffers are recycled: fresh memory is dear on a cold read.
type bundleCache struct {
	mu    sync.Mutex
	byKey map[recordKey]*bundleEntry
	lru   *list.List // of loaded entries; front = most recent
	max   int
	free  []*[]byte
}

type bundleEntry struct {
	key   recordKey
	ready chan struct{} // closed once loaded or failed
	// Valid once ready is closed.
	members []bundleMember
	data    []byte
	err     error

	// Under bundleCache.mu.
	buf     *[]byte // data's memory
	refs    int
	elem    *list.Element
	dropped bool
	done    bool
}

func newBundleCache(max int) *bundleCache {
	return &bundleCache{byKey: map[recordKey]*bundleEntry{}, lru: list.New(), max: max}
}

// acquire returns the entry of key, holding a reference on it. The first
// to ask owns the entry and must load it (fill or fail); the others wait
// on its ready channel.
func (c *bundleCache) acquire(key recordKey) (e *bundleEntry, owner bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		e.refs++
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		return e, false
	}
	e = &bundleEntry{key: key, ready: make(chan struct{}), refs: 1}
	c.byKey[key] = e
	return e, true
}

// buffer returns a buffer for decoding a bundle.
func (c *bundleCache) buffer() *[]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := len(c.free); k > 0 {
		bp := c.free[k-1]
		c.free = c.free[:k-1]
		return bp
	}
	return bundleBuffers.Get()
}

// bundleBuffers holds the decode buffers of the process's bundle caches
// beyond those they keep, in memory advised for huge pages: fresh memory
// is dear on a cold read (see hugemem).
var bundleBuffers = hugemem.NewPool(maxBundleBytes+zstdSlack, keptBuffers)

// close drops every entry no reader holds and gives the buffers back to
// the process, for the next store.
func (c *bundleCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back().Value.(*bundleEntry))
	}
	for _, bp := range c.free {
		bundleBuffers.Put(bp)
	}
	c.free = nil
}

// fill completes an owned entry with its decoded bundle, held in buf.
func (c *bundleCache) fill(e *bundleEntry, members []bundleMember, data []byte, buf *[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.done {
		return
	}
	e.done, e.members, e.data, e.buf = true, members, data, buf
	e.elem = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back().Value.(*bundleEntry))
	}
	close(e.ready)
}

// fail completes an owned entry with an error, unless it was filled. The
// entry is forgotten: a later reader tries again.
func (c *bundleCache) fail(e *bundleEntry, err error, buf *[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if buf != nil {
		c.recycleLocked(buf)
	}
	if e.done {
		return
	}
	e.done, e.err = true, err
	c.dropLocked(e)
	close(e.ready)
}

// release gives up a reference taken by acquire.
func (c *bundleCache) release(e *bundleEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.dropped && e.refs == 0 && e.buf != nil {
		c.recycleLocked(e.buf)
		e.buf = nil
	}
}

func (c *bundleCache) dropLocked(e *bundleEntry) {
	if e.elem != nil {
		c.lru.Remove(e.elem)
		e.elem = nil
	}
	if c.byKey[e.key] == e {
		delete(c.byKey, e.key)
	}
	e.dropped = true
	if e.refs == 0 && e.buf != nil {
		c.recycleLocked(e.buf)
		e.buf = nil
	}
}

// recycle returns a buffer from buffer that holds nothing kept.
func (c *bundleCache) recycle(bp *[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recycleLocked(bp)
}

func (c *bundleCache) recycleLocked(bp *[]byte) {
	switch {
	case cap(*bp) != bundleBuffers.Size():
	case len(c.free) < c.max:
		c.free = append(c.free, bp)
	default:
		bundleBuffers.Put(bp)
	}
}

// errNotLoaded completes a bundle whose reader stopped before loading it.
var errNotLoaded = errors.New("blockstore: bundle read abandoned")
