package remote

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"golang.org/x/sync/errgroup"
)

// Replication copies a store to a repository of its own (the target), in
// the layout the package comment describes, so that the target opens
// like any repository: packs first, as 4 MiB segments (packseg/NAME/OFF),
// then the index's files, the MANIFEST and the marker files last.
//
// A part already in the target with the right size is not sent again
// when the journal (a file on the source's side) says this source sent
// it: that is what makes a killed run resume where it was, and keeps
// the target's own writes (it may have been served in between) from
// passing for the source's. A part of a pack that may still change below
// its end (the pack being written) is compared by its checksum too.

// PartSize is the size of the parts packs are replicated in.
const PartSize = 4 << 20

// PackSource is a pack to replicate.
type PackSource struct {
	Name string // NNNNNNNN.pack
	Size int64
	// R reads the pack; when it is an io.Closer, it is closed once the
	// pack is copied (so that a store of many packs does not hold them
	// all open).
	R io.ReaderAt
	// Mutable: bytes below Size may still change (the pack being
	// written): a part counts as sent only with the same checksum.
	Mutable bool
}

// ReplicateOptions configure a Replicator.
type ReplicateOptions struct {
	Target  objstore.Backend
	Journal *Journal
	Limit   *Bucket // nil: no limit
	// Stop, checked before each part, ends the copy with its error (the
	// window closed).
	Stop     func() error
	Progress func(done, total int64)
	Logger   *slog.Logger
	// Parallel is how many parts of a pack go up at once (default 4).
	Parallel int
	// Lease, the replicator's on the target, bounds every upload and
	// delete there (see Lease); nil for none.
	Lease *Lease
}

// ReplicateStats says what a replication sent.
type ReplicateStats struct {
	BytesSent    int64 `json:"bytes_sent"`
	PartsSent    int64 `json:"parts_sent"`
	PartsSkipped int64 `json:"parts_skipped"`
	Packs        int   `json:"packs"`
	IndexFiles   int   `json:"index_files"`
}

// Replicator copies to one target.
type Replicator struct {
	o      ReplicateOptions
	c      conn
	target map[string]int64 // the target's objects and sizes, as listed at the start

	mu    sync.Mutex
	stats ReplicateStats
	done  int64
	total int64
}

// NewReplicator lists what the target holds.
func NewReplicator(ctx context.Context, o ReplicateOptions) (*Replicator, error) {
	r := &Replicator{o: o, c: newConn(o.Target, o.Logger, 0, false).withLease(o.Lease), target: map[string]int64{}}
	for _, p := range []string{packsPrefix + "/", segPrefix + "/", indexPrefix + "/"} {
		objs, err := r.c.list(p)
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", p, o.Target, err)
		}
		for _, ob := range objs {
			r.target[ob.Name] = ob.Size
		}
	}
	return r, nil
}

// Stats returns what was sent so far.
func (r *Replicator) Stats() ReplicateStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func (r *Replicator) advance(n int64) {
	r.mu.Lock()
	r.done += n
	done, total := r.done, r.total
	r.mu.Unlock()
	if r.o.Progress != nil {
		r.o.Progress(done, total)
	}
}

// AddTotal adds n bytes to the progress's total.
func (r *Replicator) AddTotal(n int64) {
	r.mu.Lock()
	r.total += n
	r.mu.Unlock()
}

// send puts data as name through the bucket, and journals it. Stop is
// asked first, for a pack's part only: once the index is being sent, it
// is sent whole.
func (r *Replicator) send(ctx context.Context, name string, data io.ReaderAt, size int64, sum string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := r.c.retry("put "+name, func(context.Context) error {
		var attempt int64
		lr := &limitedReader{ctx: ctx, r: io.NewSectionReader(data, 0, size), b: r.o.Limit, sent: func(n int64) {
			attempt += n
			r.mu.Lock()
			r.stats.BytesSent += n
			r.mu.Unlock()
			r.advance(n)
		}}
		err := r.c.leased(ctx, func(ctx context.Context) error { return r.o.Target.Put(ctx, name, lr, size) })
		if err != nil {
			// The progress counts this part again on the next attempt.
			r.mu.Lock()
			r.done -= attempt
			r.mu.Unlock()
		}
		return err
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stats.PartsSent++
	r.target[name] = size
	r.mu.Unlock()
	return r.o.Journal.Record(name, size, sum)
}

func (r *Replicator) skip(size int64) {
	r.mu.Lock()
	r.stats.PartsSkipped++
	r.mu.Unlock()
	r.advance(size)
}

func partName(pack string, off int64) string { return segName(segPrefix, pack, off) }

func checksum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

// CopyPacks sends the parts of packs the target lacks.
func (r *Replicator) CopyPacks(ctx context.Context, packs []PackSource) error {
	for _, p := range packs {
		r.AddTotal(p.Size)
	}
	buf := make([]byte, PartSize)
	for _, p := range packs {
		err := r.copyPack(ctx, p, buf)
		if c, ok := p.R.(io.Closer); ok {
			c.Close()
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.stats.Packs++
		r.mu.Unlock()
	}
	return nil
}

func (r *Replicator) copyPack(ctx context.Context, p PackSource, buf []byte) error {
	parts := (p.Size + PartSize - 1) / PartSize
	whole, hasWhole := r.target[packsPrefix+"/"+p.Name]
	if hasWhole && whole == p.Size && r.journaledAll(p, buf) {
		// A data directory that opened the target for writing made the
		// parts this source sent one object (see Packs): the same bytes.
		r.mu.Lock()
		r.stats.PartsSkipped += parts
		r.mu.Unlock()
		r.advance(p.Size)
		return nil
	}
	// Whatever else the target holds of this pack goes first: a whole
	// object would be read instead of the parts, and segments off the
	// grid would be read over them.
	if hasWhole {
		if err := r.del(packsPrefix + "/" + p.Name); err != nil {
			return err
		}
	}
	prefix := segPrefix + "/" + p.Name + "/"
	for name := range r.targetUnder(prefix) {
		_, off, ok := parseSeg(strings.TrimPrefix(name, segPrefix+"/"))
		if ok && off%PartSize == 0 && off < p.Size {
			continue
		}
		if err := r.del(name); err != nil {
			return err
		}
	}
	// Parts go up side by side (an object store takes several PUTs at
	// once faster than one after another); the pack is read part by part
	// here, in order.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cmp.Or(r.o.Parallel, parallelParts))
	for i := range parts {
		off := i * PartSize
		n := min(PartSize, p.Size-off)
		name := partName(p.Name, off)
		b := make([]byte, n)
		// A part sent while its pack was being written is compared by
		// checksum, as long as the journal has one for it.
		e, journaled := r.o.Journal.entry(name)
		read, sum := false, ""
		if p.Mutable || e.sum != "" {
			if err := readFull(p.R, b, off, p.Name); err != nil {
				g.Wait()
				return err
			}
			read, sum = true, checksum(b)
		}
		if size, ok := r.targetSize(name); ok && size == n && journaled && e.size == n && e.sum == sum {
			r.skip(n)
			continue
		}
		if !read {
			if err := readFull(p.R, b, off, p.Name); err != nil {
				g.Wait()
				return err
			}
		}
		if !p.Mutable {
			sum = "" // it does not change any more
		}
		if r.o.Stop != nil {
			// The window closed: what is on its way arrives, no more.
			if err := r.o.Stop(); err != nil {
				g.Wait()
				return err
			}
		}
		g.Go(func() error { return r.send(gctx, name, bytes.NewReader(b), n, sum) })
		if gctx.Err() != nil {
			break
		}
	}
	return g.Wait()
}

// parallelParts is how many parts of a pack go up at once.
const parallelParts = 4

func (r *Replicator) targetSize(name string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.target[name]
	return s, ok
}

func readFull(f io.ReaderAt, b []byte, off int64, name string) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read pack %s at %d: %w", name, off, err)
}

// journaledAll reports whether the journal has every part of p sent, at
// its size and, where it has a checksum, with the bytes p has now.
func (r *Replicator) journaledAll(p PackSource, buf []byte) bool {
	for off := int64(0); off < p.Size; off += PartSize {
		n := min(PartSize, p.Size-off)
		e, ok := r.o.Journal.entry(partName(p.Name, off))
		if !ok || e.size != n || (p.Mutable && e.sum == "") {
			return false
		}
		if e.sum != "" {
			if readFull(p.R, buf[:n], off, p.Name) != nil || checksum(buf[:n]) != e.sum {
				return false
			}
		}
	}
	return true
}

func (r *Replicator) targetUnder(prefix string) map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for n, s := range r.target {
		if strings.HasPrefix(n, prefix) {
			out[n] = s
		}
	}
	return out
}

func (r *Replicator) del(name string) error {
	if err := r.c.del(name); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.target, name)
	r.mu.Unlock()
	return nil
}

// indexOrder sorts an index's files in the order they are sent: tables,
// then the rest, then the MANIFEST, then the marker files that name it.
func indexOrder(name string) int {
	switch {
	case strings.HasSuffix(name, ".sst"):
		return 0
	case strings.HasPrefix(name, "MANIFEST-"):
		return 2
	case strings.HasPrefix(name, "marker."):
		return 3
	}
	return 1
}

// CopyIndex sends the index files in dir (a checkpoint, closed), each as
// one segment, then deletes the target's index files dir does not hold.
// A table the source's index made (fromSource) is skipped when the
// journal has it sent at its size: Pebble never writes a table again, nor
// reuses its number. A table made in the snapshot itself is always sent,
// and journalled as such: its number may be the source's later.
func (r *Replicator) CopyIndex(ctx context.Context, dir string, fromSource map[string]bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	sizes := map[string]int64{}
	for _, e := range ents {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		names = append(names, e.Name())
		sizes[e.Name()] = fi.Size()
		r.AddTotal(fi.Size())
	}
	sort.SliceStable(names, func(i, j int) bool {
		if a, b := indexOrder(names[i]), indexOrder(names[j]); a != b {
			return a < b
		}
		return names[i] < names[j]
	})
	for _, base := range names {
		size := sizes[base]
		name := segName(indexPrefix, base, 0)
		others := r.targetUnder(indexPrefix + "/" + base + "/")
		delete(others, name)
		sum := ""
		if !fromSource[base] {
			sum = "snapshot"
		}
		if got, ok := r.target[name]; ok && got == size && len(others) == 0 && indexOrder(base) == 0 && sum == "" && r.o.Journal.Has(name, size, "") {
			r.skip(size)
			r.mu.Lock()
			r.stats.IndexFiles++
			r.mu.Unlock()
			continue
		}
		for o := range others {
			if err := r.del(o); err != nil {
				return err
			}
		}
		f, err := os.Open(filepath.Join(dir, base))
		if err != nil {
			return err
		}
		err = r.send(ctx, name, f, size, sum)
		f.Close()
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.stats.IndexFiles++
		r.mu.Unlock()
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	for name := range r.targetUnder(indexPrefix + "/") {
		if base, _, ok := parseSeg(strings.TrimPrefix(name, indexPrefix+"/")); ok && keep[base] {
			continue
		}
		if err := r.del(name); err != nil {
			return err
		}
	}
	return nil
}

// DropPacksExcept deletes the target's packs that are not in keep: the
// source collected them, and the index just sent references none.
func (r *Replicator) DropPacksExcept(keep map[string]bool) error {
	for name := range r.targetUnder(packsPrefix + "/") {
		if !keep[strings.TrimPrefix(name, packsPrefix+"/")] {
			if err := r.del(name); err != nil {
				return err
			}
		}
	}
	for name := range r.targetUnder(segPrefix + "/") {
		if base, _, ok := parseSeg(strings.TrimPrefix(name, segPrefix+"/")); !ok || !keep[base] {
			if err := r.del(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Forget drops from the journal what the target no longer holds (after a
// complete run deleted it), so that the journal does not grow with every
// run.
func (r *Replicator) Forget() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.o.Journal
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for name := range j.sent {
		if _, ok := r.target[name]; !ok {
			delete(j.sent, name)
		}
	}
	return j.rewriteLocked()
}

// Journal remembers the objects a source sent to one target: a file of
// lines "NAME SIZE SUM", appended as parts arrive.
type Journal struct {
	path string

	mu   sync.Mutex
	f    *os.File
	sent map[string]journalEntry
}

type journalEntry struct {
	size int64
	sum  string
}

// OpenJournal opens (creating it) the journal at path.
func OpenJournal(path string) (*Journal, error) {
	j := &Journal{path: path, sent: map[string]journalEntry{}}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			parts := strings.Fields(sc.Text())
			if len(parts) != 3 {
				continue // a line cut by a crash
			}
			size, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil {
				continue
			}
			sum := parts[2]
			if sum == "-" {
				sum = ""
			}
			j.sent[parts[0]] = journalEntry{size, sum}
		}
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := j.rewriteLocked(); err != nil {
		return nil, err
	}
	return j, nil
}

// rewriteLocked writes the journal anew, one line per object, and opens
// it for appending.
func (j *Journal) rewriteLocked() error {
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
	tmp := j.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for name, e := range j.sent {
		fmt.Fprintln(w, journalLine(name, e))
	}
	if err := errors.Join(w.Flush(), f.Close(), os.Rename(tmp, j.path)); err != nil {
		return err
	}
	j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o640)
	return err
}

func journalLine(name string, e journalEntry) string {
	sum := e.sum
	if sum == "" {
		sum = "-"
	}
	return fmt.Sprintf("%s %d %s", name, e.size, sum)
}

// Has reports whether name was sent with size and checksum sum ("" for
// none).
func (j *Journal) Has(name string, size int64, sum string) bool {
	e, ok := j.entry(name)
	return ok && e.size == size && e.sum == sum
}

func (j *Journal) entry(name string) (journalEntry, bool) {
	if j == nil {
		return journalEntry{}, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	e, ok := j.sent[name]
	return e, ok
}

// Record notes that name was sent.
func (j *Journal) Record(name string, size int64, sum string) error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	e := journalEntry{size, sum}
	j.sent[name] = e
	_, err := fmt.Fprintln(j.f, journalLine(name, e))
	return err
}

// Close closes the journal's file.
func (j *Journal) Close() error {
	if j == nil || j.f == nil {
		return nil
	}
	return j.f.Close()
}
