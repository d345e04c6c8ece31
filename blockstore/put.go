package blockstore

import (
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
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
	}
}

// NewTxn starts adding chunks.
func (s *Store) NewTxn() *Txn {
	t := &Txn{s: s}
	t.mu.added = map[ID]bool{}
	return t
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
	t.mu.Lock()
	seen := t.mu.added[id]
	t.mu.Unlock()
	if seen {
		return PutResult{ID: id}, nil
	}
	ok, err := t.s.Has(id)
	if err != nil {
		return PutResult{}, err
	}
	if ok {
		return PutResult{ID: id}, nil
	}
	loc, err := t.s.append(id, data)
	if err != nil {
		return PutResult{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.added[id] {
		// Another goroutine stored the same bytes meanwhile; its entry
		// wins and ours is garbage for the collector.
		return PutResult{ID: id}, nil
	}
	t.mu.added[id] = true
	t.mu.pending = append(t.mu.pending, [2][]byte{indexKey(id), loc.marshal()})
	return PutResult{ID: id, New: true, Stored: int64(recordHeaderSize) + int64(loc.payloadLen)}, nil
}

// Has reports whether the chunk id is indexed.
func (s *Store) Has(id ID) (bool, error) {
	_, closer, err := s.db.Get(indexKey(id))
	if err == pebble.ErrNotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blockstore: index lookup: %w", err)
	}
	closer.Close()
	return true, nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// append compresses data and writes its record to the active pack.
func (s *Store) append(id ID, data []byte) (location, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:0]
	if need := recordHeaderSize + len(data) + len(data)/8 + 64; cap(buf) < need {
		buf = make([]byte, 0, need)
		*bp = buf
	}
	buf = buf[:recordHeaderSize]
	payload, codec := s.codecs.encode(s.codec, data, buf[recordHeaderSize:])
	h := recordHeader{
		payloadLen: uint32(len(payload)),
		decodedLen: uint32(len(data)),
		codec:      codec,
		id:         id,
	}
	if codec != CodecRaw && &payload[0] == &buf[:recordHeaderSize+1][recordHeaderSize] {
		buf = buf[:recordHeaderSize+len(payload)] // encoded in place
	} else {
		buf = append(buf, payload...)
	}
	h.marshal(buf[:recordHeaderSize])
	h.crc = recordCRC(buf)
	h.marshal(buf[:recordHeaderSize])
	pack, off, f, err := s.reserve(int64(len(buf)))
	if err != nil {
		return location{}, err
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return location{}, fmt.Errorf("blockstore: write pack %d: %w", pack, err)
	}
	s.markDirty(pack)
	return location{pack: pack, offset: off, payloadLen: h.payloadLen, decodedLen: h.decodedLen, codec: codec}, nil
}
