package protect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/timeline"
)

// intentLog is a protection's write-intent bitmap (DATA/protected/
// NAME.intent), as RAID keeps one: the regions of intentRegion bytes
// where a write may have reached the timeline and not the primary, or
// the other way round. A write marks its regions, durably, before it
// touches either (a region already marked costs nothing); a region is
// cleared, lazily, once no write is in progress there and a FLUSH that
// began after its last write ended succeeded. After an unclean stop the
// next start compares only the marked regions, not the whole primary.
//
// A write that the timeline took and the primary refused, and whose
// undo failed too (Disk.diverged), marks every region for good: the
// next start compares all of it.
type intentLog struct {
	path       string
	f          *os.File
	size, gran int64
	log        *slog.Logger
	save       syncer // shares the file's writes among the writes waiting for one
	clears     sync.WaitGroup

	mu struct {
		sync.Mutex
		marked []bool // regions marked now
		// gen counts the changes of each region's mark, savedGen is the
		// one the file holds: a marked region whose two differ is not
		// marked on disk yet.
		gen, savedGen []uint64
		inflight      []int32  // writes in progress in each region
		lastEnd       []uint64 // clock when the last write there ended
		clock         uint64
		flushed       uint64 // clock at the start of the newest FLUSH that succeeded
		all           bool   // every region is marked for good
		cleared       time.Time
		clearing      bool
		closed        bool
	}
}

// intentRegion is what a bit of the bitmap covers: a 1 TiB disk has
// 16,384, 2 KiB of file. intentClearEvery is how often at most marked
// regions are cleared (each clear is a write and sync of the file, off
// the I/O path). Tests set both.
var (
	intentRegion     int64 = 64 << 20
	intentClearEvery       = 10 * time.Second
)

const intentMagic = "rewind intent 1\n"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func intentPath(dir, name string) string { return filepath.Join(dir, name+".intent") }

// newIntentLog starts an empty bitmap for a volume of size bytes at
// path, durably, replacing whatever was there.
func newIntentLog(path string, size int64, log *slog.Logger) (*intentLog, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write-intent bitmap: %w", err)
	}
	n := int((size + intentRegion - 1) / intentRegion)
	l := &intentLog{path: path, f: f, size: size, gran: intentRegion, log: log}
	l.mu.marked, l.mu.gen, l.mu.savedGen = make([]bool, n), make([]uint64, n), make([]uint64, n)
	l.mu.inflight, l.mu.lastEnd = make([]int32, n), make([]uint64, n)
	l.mu.cleared = time.Now()
	if err := l.write(); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// loadIntent reads the bitmap at path for a volume of size bytes: the
// ranges it marks, or ok false when it cannot be counted on (missing,
// damaged, another size, or marked whole): then everything must be
// compared.
func loadIntent(path string, size int64) (ranges []timeline.Range, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("write-intent bitmap: %w", err)
	}
	hdr := len(intentMagic) + 8 + 8 + 1
	if len(b) < hdr+4 || !bytes.HasPrefix(b, []byte(intentMagic)) {
		return nil, false, nil
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, false, nil
	}
	p := body[len(intentMagic):]
	gotSize, gran, all := int64(binary.BigEndian.Uint64(p)), int64(binary.BigEndian.Uint64(p[8:])), p[16] != 0
	bits := p[17:]
	n := int((size + gran - 1) / max(gran, 1))
	if gotSize != size || gran <= 0 || all || len(bits) != (n+7)/8 {
		return nil, false, nil
	}
	for r := range n {
		if bits[r/8]&(1<<(r%8)) == 0 {
			continue
		}
		off := int64(r) * gran
		rg := timeline.Range{Offset: off, Length: min(gran, size-off)}
		if k := len(ranges); k > 0 && ranges[k-1].Offset+ranges[k-1].Length == off {
			ranges[k-1].Length += rg.Length
			continue
		}
		ranges = append(ranges, rg)
	}
	return ranges, true, nil
}

// regions returns the regions [lo, hi) that [off, off+n) touches.
func (l *intentLog) regions(off, n int64) (int, int) {
	return int(off / l.gran), int((off + max(n, 1) + l.gran - 1) / l.gran)
}

// begin marks [off, off+n) before a write or zeroing of it, and returns
// once the bitmap says so on disk; end must follow.
func (l *intentLog) begin(off, n int64) error {
	lo, hi := l.regions(off, n)
	l.mu.Lock()
	l.mu.clock++
	need := false
	for r := lo; r < hi; r++ {
		l.mu.inflight[r]++
		if !l.mu.marked[r] {
			l.mu.marked[r] = true
			l.mu.gen[r]++
		}
		need = need || l.mu.savedGen[r] != l.mu.gen[r]
	}
	l.mu.Unlock()
	if !need {
		return nil
	}
	if err := l.save.sync(l.write); err != nil {
		l.end(off, n)
		return fmt.Errorf("mark the write in the write-intent bitmap: %w", err)
	}
	return nil
}

// end ends a write that begin marked.
func (l *intentLog) end(off, n int64) {
	lo, hi := l.regions(off, n)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.clock++
	for r := lo; r < hi; r++ {
		l.mu.inflight[r]--
		l.mu.lastEnd[r] = l.mu.clock
	}
}

// flushStart is called as a FLUSH begins; flushed(it) once it succeeded.
func (l *intentLog) flushStart() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.clock++
	return l.mu.clock
}

// flushed notes a FLUSH that began at at and succeeded, and clears the
// regions it settled, in the background, at most every intentClearEvery.
func (l *intentLog) flushed(at uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.flushed = max(l.mu.flushed, at)
	if l.mu.clearing || l.mu.all || l.mu.closed || time.Since(l.mu.cleared) < intentClearEvery {
		return
	}
	l.mu.clearing = true
	l.clears.Add(1)
	go l.clear()
}

// clear unmarks the regions with no write in progress whose last write
// ended before a FLUSH that succeeded began, and saves the bitmap.
func (l *intentLog) clear() {
	defer l.clears.Done()
	l.mu.Lock()
	changed := false
	for r := range l.mu.marked {
		if l.mu.marked[r] && l.mu.inflight[r] == 0 && l.mu.lastEnd[r] < l.mu.flushed {
			l.mu.marked[r] = false
			l.mu.gen[r]++
			changed = true
		}
	}
	l.mu.Unlock()
	var err error
	if changed {
		err = l.save.sync(l.write)
	}
	l.mu.Lock()
	l.mu.clearing, l.mu.cleared = false, time.Now()
	l.mu.Unlock()
	if err != nil {
		l.log.Warn("clearing the write-intent bitmap (the regions stay marked)", "file", l.path, "err", err)
	}
}

// markAll marks every region for good.
func (l *intentLog) markAll() error {
	l.mu.Lock()
	l.mu.all = true
	for r := range l.mu.gen {
		l.mu.marked[r] = true
		l.mu.gen[r]++
	}
	l.mu.Unlock()
	return l.save.sync(l.write)
}

// write writes the bitmap as it is now to the file and syncs it; what it
// wrote counts as on disk once it returns.
func (l *intentLog) write() error {
	l.mu.Lock()
	snap := append([]bool(nil), l.mu.marked...)
	gens := append([]uint64(nil), l.mu.gen...)
	all := l.mu.all
	l.mu.Unlock()
	var b bytes.Buffer
	b.WriteString(intentMagic)
	var hdr [17]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(l.size))
	binary.BigEndian.PutUint64(hdr[8:], uint64(l.gran))
	if all {
		hdr[16] = 1
	}
	b.Write(hdr[:])
	bits := make([]byte, (len(snap)+7)/8)
	for r, m := range snap {
		if m || all {
			bits[r/8] |= 1 << (r % 8)
		}
	}
	b.Write(bits)
	b.Write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(b.Bytes(), castagnoli)))
	if _, err := l.f.WriteAt(b.Bytes(), 0); err != nil {
		return err
	}
	if err := l.f.Truncate(int64(b.Len())); err != nil {
		return err
	}
	if err := l.f.Sync(); err != nil {
		return err
	}
	l.mu.Lock()
	copy(l.mu.savedGen, gens) // writes run one at a time (save): newer each time
	l.mu.Unlock()
	return nil
}

// close closes the file once a clear under way is done; I/O has ended.
func (l *intentLog) close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	l.mu.closed = true
	l.mu.Unlock()
	l.clears.Wait()
	return l.f.Close()
}

func removeIntent(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
