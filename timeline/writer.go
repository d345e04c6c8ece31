package timeline

import (
	"bytes"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rewind-dev/rewind/blockstore"
)

// zeroes is compared against to find all-zero blocks. Never written.
var zeroes = make([]byte, MaxBlockSize)

func isZero(p []byte) bool { return bytes.Equal(p, zeroes[:len(p)]) }

// versionWriter builds one version of a volume: its block versions, the
// chunks they point at, its time-index records and the metadata that makes
// it visible. A version too large for one batch is written in parts; until
// the final commit a pending marker lets Open undo the parts.
type versionWriter struct {
	s     *Store
	meta  *Volume // the metadata once this version is visible
	t     int64
	kind  VersionKind
	txn   *blockstore.Txn
	batch *pebble.Batch
	runs  runs
	part  uint32
	sum   summary
	key   []byte
	zr    *zeroRange // the version's range record, if any
	// lazy, set by a clone write, lets commit leave the metadata record
	// and the clock to a later commit (see maxUnsavedVersions); it is the
	// volume's state, whose unsaved count commit keeps under commitMu.
	lazy *volState
	// pending: a pending marker was committed (begin) and the final
	// commit deletes it.
	pending bool
}

func (s *Store) newVersionWriter(meta *Volume, t int64, kind VersionKind) *versionWriter {
	b := s.db.NewBatch()
	return &versionWriter{s: s, meta: meta, t: t, kind: kind, txn: s.chunks.NewTxn(), batch: b}
}

// stagedBlock is a block's new version whose chunk is stored and whose
// key is not written yet: a clone write stores its chunks before it takes
// its time (see View.write).
type stagedBlock struct {
	block           uint64
	ref             blockRef
	patch           *patch // written instead of ref when set
	logical, stored int64
}

// store stores data as block's new version (a hole when it is all zero)
// and returns what set must record. When old is not nil, data is chunk
// base, whose bytes old holds, with a run of bytes changed.
func (w *versionWriter) store(block uint64, data []byte, base blockstore.ID, old []byte) (stagedBlock, error) {
	if isZero(data) {
		return stagedBlock{block: block, ref: blockRef{kind: refZero}, logical: int64(len(data))}, nil
	}
	var res blockstore.PutResult
	var err error
	if old != nil {
		res, err = w.txn.PutDelta(data, base, old)
	} else {
		res, err = w.txn.Put(data)
	}
	if err != nil {
		return stagedBlock{}, err
	}
	w.s.cache.Add(res.ID, data)
	return stagedBlock{block: block, ref: blockRef{kind: refChunk, id: res.ID, place: res.Place}, logical: int64(len(data)), stored: res.Stored}, nil
}

// storePatch stores data as the bytes at off of block's new version,
// whose other bytes stay as they are (a patch; see keys.go). Nothing
// keeps data once it returns: it may be the writer's own buffer.
func (w *versionWriter) storePatch(block uint64, off uint32, data []byte) (stagedBlock, error) {
	p := &patch{off: off, n: uint32(len(data))}
	if isZero(data) {
		p.zero = true
		return stagedBlock{block: block, patch: p, logical: int64(len(data))}, nil
	}
	// Not added to the chunk cache: the copy was an eighth of a 4 KiB
	// write's CPU, and a write reads nothing back (a read of the block
	// gets the patch from the pack, through the page cache).
	res, err := w.txn.Put(data)
	if err != nil {
		return stagedBlock{}, err
	}
	p.id, p.place = res.ID, res.Place
	return stagedBlock{block: block, patch: p, logical: int64(len(data)), stored: res.Stored}, nil
}

// setStaged records what store or storePatch staged.
func (w *versionWriter) setStaged(sb stagedBlock) error {
	if sb.patch == nil {
		return w.set(sb.block, sb.ref, sb.logical, sb.stored)
	}
	w.key = versionKey(w.key, w.meta.ID, sb.block, w.t)
	if err := w.batch.Set(w.key, encodePatch(*sb.patch), nil); err != nil {
		return err
	}
	w.account(sb.block, sb.logical, sb.stored)
	return nil
}

// set records ref as block's new version.
func (w *versionWriter) set(block uint64, ref blockRef, logical, stored int64) error {
	w.key = versionKey(w.key, w.meta.ID, block, w.t)
	if err := w.batch.Set(w.key, encodeValue(ref), nil); err != nil {
		return err
	}
	w.account(block, logical, stored)
	return nil
}

// setRange records that blocks [r.first, r.end) read as zeroes from this
// version on (a range record, ranges.go): one key, however many blocks.
func (w *versionWriter) setRange(r zeroRange) error {
	r.t, r.kind = w.t, w.kind
	if err := w.batch.Set(rangeKey(w.meta.ID, w.t), r.marshal(), nil); err != nil {
		return err
	}
	if !w.s.ranged.Load() {
		if err := w.batch.Set(globalKey("format"), []byte(FormatVersion), nil); err != nil {
			return err
		}
	}
	bs := w.meta.BlockSize
	w.sum.Blocks += r.end - r.first
	w.sum.Bytes += uint64(min(int64(r.end)*bs, w.meta.Size) - int64(r.first)*bs)
	w.zr = &r
	return nil
}

func (w *versionWriter) account(block uint64, logical, stored int64) {
	w.runs.add(block)
	w.sum.Blocks++
	w.sum.Bytes += uint64(logical)
	w.sum.Stored += uint64(stored)
}

// begin commits, durably, the pending marker of a version written in
// parts (an import), before any of its chunks is stored: it says where in
// the packs they start, so that Open can undo the parts and give back
// their pack bytes after a crash or kill. Its chunks go to a discardable
// Txn (see blockstore.Txn.Discard).
func (w *versionWriter) begin() error {
	w.txn.Done() // unused: the parts go to a discardable one
	w.txn = w.s.chunks.NewDiscardableTxn()
	b := w.s.db.NewBatch()
	defer b.Close()
	b.Set(pendingKey(w.meta.ID, w.t), w.s.chunks.Tail().Marshal(), nil)
	if err := w.s.commit(b, pebble.Sync); err != nil {
		return err
	}
	w.pending = true
	return nil
}

// commitPart commits what is batched so far without making the version
// visible.
func (w *versionWriter) commitPart() error {
	if w.part == 0 && !w.pending {
		if err := w.batch.Set(pendingKey(w.meta.ID, w.t), nil, nil); err != nil {
			return err
		}
		w.pending = true
	}
	if err := w.writeRuns(); err != nil {
		return err
	}
	// The chunks' bytes must be durable before their index entries can
	// be: a later sync of the WAL, by any writer, would make the entries
	// durable too, and an entry whose bytes a crash lost would poison
	// every later import that deduplicates against it.
	if err := w.txn.AddTo(w.batch); err != nil {
		return err
	}
	if err := w.s.syncPacks(); err != nil {
		return err
	}
	if err := w.s.commit(w.batch, pebble.NoSync); err != nil {
		return err
	}
	w.txn.Committed()
	w.batch.Close()
	w.batch = w.s.db.NewBatch()
	return nil
}

func (w *versionWriter) writeRuns() error {
	if len(w.runs.r) == 0 {
		return nil
	}
	if err := w.batch.Set(timeKey(w.meta.ID, w.t, w.part), w.runs.marshal(), nil); err != nil {
		return err
	}
	w.part++
	w.runs = runs{}
	return nil
}

// commit makes the version visible. With sync, it is durable on return:
// pack data is synced before the batch that points at it.
func (w *versionWriter) commit(sync bool) error {
	defer w.batch.Close()
	if err := w.prepare(); err != nil {
		return err
	}
	opt := pebble.NoSync
	if sync {
		if err := w.s.syncPacks(); err != nil {
			return err
		}
		opt = pebble.Sync
	}
	return w.finish(opt)
}

// finish commits what prepare added to the batch (and the batch's
// other versions) and publishes w.meta.
func (w *versionWriter) finish(opt *pebble.WriteOptions) error {
	if err := w.s.commit(w.batch, opt); err != nil {
		return err
	}
	w.txn.Done()
	if w.zr != nil {
		w.s.ranged.Store(true)
	}
	w.s.publish(w.meta)
	return nil
}

// prepare adds to the batch what makes the version visible, all but the
// commit: its chunks' index entries, its time-index records, and the
// change to the volume's metadata (made to w.meta, which several
// versions committed in one batch share: see View.WriteMany).
func (w *versionWriter) prepare() error {
	// The index entries first, then the time-index records: the runs
	// record and the summary lie side by side in the index, and Pebble's
	// memtable finds where the second goes at once when they come one
	// after the other in a batch (a search of the memtable for each of a
	// 4 KiB clone write's keys was a sixth of its CPU).
	if err := w.txn.AddTo(w.batch); err != nil {
		return err
	}
	if err := w.writeRuns(); err != nil {
		return err
	}
	m := w.meta
	first := m.Versions == 0
	if first {
		m.First = w.t
	}
	m.Last = w.t
	m.Versions++
	if w.zr != nil {
		m.addRange(*w.zr)
	}
	m.LogicalBytes += int64(w.sum.Bytes)
	m.StoredBytes += int64(w.sum.Stored)
	if k := len(m.Sizes); k == 0 || m.Sizes[k-1].Size != m.Size {
		m.Sizes = append(m.Sizes, SizeChange{T: w.t, Size: m.Size})
	}
	w.sum.Kind = w.kind
	w.sum.Size = uint64(m.Size)
	b := w.batch
	b.Set(timeKey(m.ID, w.t, summaryPart), w.sum.marshal(), nil)
	if w.writesMeta(first) {
		b.Set(metaKey(m.ID), m.marshal(), nil)
		b.Set(globalKey("clock"), clockValue(w.t), nil)
	}
	if first {
		// They change only when a volume is made; every later version of
		// it would write them again as they are.
		b.Set(nameKey(m.Name), clockValue(int64(m.ID)), nil)
		b.Set(globalKey("next-id"), clockValue(int64(w.s.maxID())), nil)
	}
	if w.pending {
		b.Delete(pendingKey(m.ID, w.t), nil)
	}
	return nil
}

// maxUnsavedVersions bounds the clone writes of a volume committed
// without its metadata record. The summary record each version commits
// says all that the version changes in the metadata (its time, kind,
// bytes and size), so Open rolls the record forward over the summaries
// after its Last (rollForward): a 4 KiB write then adds its version key,
// its chunk's index entry and its two time-index records to Pebble's
// memtable, not also about 400 bytes of JSON and the clock, which were
// two thirds of the bytes it added and a sixth of its CPU at queue depth
// 32. The bound keeps that roll-forward short; Store.Close saves every
// record that is behind.
const maxUnsavedVersions = 1024

// writesMeta says whether commit writes the metadata record and the clock:
// always but for a clone write (lazy) of a volume that has versions and
// fewer than maxUnsavedVersions of them since its record was written.
func (w *versionWriter) writesMeta(first bool) bool {
	vs := w.lazy
	if vs == nil || first || w.pending || vs.unsaved >= maxUnsavedVersions {
		if vs != nil {
			vs.unsaved = 0
		}
		return true
	}
	vs.unsaved++
	return false
}

// abort drops what is batched; parts already committed are undone by
// undoPending.
func (w *versionWriter) abort() {
	w.batch.Close()
	w.txn.Done()
}

// discard gives back the pack bytes of a version that will never be
// committed, when they are the only ones written since it began (see
// blockstore.Txn.Discard); the parts it committed are undone after.
func (w *versionWriter) discard() {
	if ok, err := w.txn.Discard(); err != nil {
		w.s.log.Warn("giving back the space of a failed version", "err", err)
	} else if !ok {
		w.s.log.Info("the space of a failed version is kept: other writes came in between", "volume", w.meta.Name)
	}
}
