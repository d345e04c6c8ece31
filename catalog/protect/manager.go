package protect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/timeline"
)

// Options configure a Manager.
type Options struct {
	// Dir keeps the records (DATA/protected).
	Dir    string
	Logger *slog.Logger
}

// Manager runs the protections of one data directory.
type Manager struct {
	svc *catalog.Service
	tl  *timeline.Store
	dir string
	log *slog.Logger
	// ctx ends the comparisons that resume protections after an unclean
	// stop (Close cancels it); resuming counts them.
	ctx      context.Context
	cancel   context.CancelFunc
	resuming sync.WaitGroup
	mu       struct {
		sync.Mutex
		jobs     map[string]*job     // by volume name
		starting map[string]struct{} // names Protect is making
	}
}

// job is one protection; disk and p are nil when it failed to start,
// and while it resumes (compare is set then).
type job struct {
	rec     record
	p       *primary
	disk    *Disk
	compare *comparison
}

// comparison is the progress of the comparison that resumes a
// protection after an unclean stop: the offset it reached, and the bytes
// it reads in all.
type comparison struct {
	offset, bytes atomic.Int64
}

// Request is `rewind protect VOLUME --primary PATH [--size SIZE]`.
type Request struct {
	Volume  string `json:"volume"`
	Primary string `json:"primary"` // the path, for messages and restarts
	// Size is the size of the protected disk; 0 takes the primary's. A
	// file smaller than Size is grown to it.
	Size int64 `json:"size,omitempty"`
	// File is the primary, opened read-write by the caller. Protect owns
	// it: it is closed when the protection ends or fails to start.
	File *os.File `json:"-"`
}

// Status is what `rewind protect` prints and metrics report.
type Status struct {
	Name    string       `json:"name"`
	Primary string       `json:"primary"`
	Kind    string       `json:"kind"`
	Size    int64        `json:"size"`
	State   string       `json:"state"`
	Reason  string       `json:"reason,omitempty"`
	Created catalog.Time `json:"created"`
	// Counted since the daemon started serving it.
	Writes  int64 `json:"writes"`
	Written int64 `json:"written_bytes"`
	Flushes int64 `json:"flushes"`
	Errors  int64 `json:"errors"`
	// Grouped counts the writes recorded together with others, in one
	// pack write and one commit (see recorder).
	Grouped int64 `json:"grouped_writes"`
	// Queued counts the small writes acknowledged and not recorded yet
	// (see recorder): what the history lags behind the primary.
	Queued int64 `json:"queued_writes"`
	// While resuming: how far through the volume the comparison is
	// (bytes from its start), and the bytes of the primary it reads in
	// all (the regions the write-intent bitmap marks).
	CompareOffset int64 `json:"compare_offset,omitempty"`
	CompareBytes  int64 `json:"compare_bytes,omitempty"`
}

// Open loads the protections of dir and serves each again. One that
// stopped cleanly is served on return. One that did not is compared
// with its timeline first, in the background: it shows as resuming
// until then, and the daemon serves everything else meanwhile (a large
// primary whose regions all had unflushed writes takes as long as
// reading it). Close, or ctx's end, interrupts the comparisons; the next
// start compares again.
func Open(ctx context.Context, svc *catalog.Service, o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("protections: %w", err)
	}
	m := &Manager{svc: svc, tl: svc.Timeline(), dir: o.Dir, log: o.Logger}
	m.mu.jobs = map[string]*job{}
	m.mu.starting = map[string]struct{}{}
	recs, err := m.load()
	if err != nil {
		return nil, err
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	for _, r := range recs {
		if r.Clean {
			m.resume(m.ctx, r, nil)
			continue
		}
		c := &comparison{}
		m.mu.Lock() // an earlier one's comparison may be ending
		m.mu.jobs[r.Name] = &job{rec: *r, compare: c}
		m.mu.Unlock()
		m.resuming.Add(1)
		go func() {
			defer m.resuming.Done()
			m.resume(m.ctx, r, c)
		}()
	}
	return m, nil
}

// WaitResumed waits for the comparisons that Open started.
func (m *Manager) WaitResumed() { m.resuming.Wait() }

// beforeCompare, when set (by tests), runs as a comparison begins.
var beforeCompare func(ctx context.Context, name string)

// resume serves a protection again after a restart, comparing it first
// (c) after an unclean stop. One that cannot be served is marked failed
// with the reason; its volume stays readable, and the next start tries
// again. One whose comparison a stop interrupted stays as it is.
func (m *Manager) resume(ctx context.Context, r *record, c *comparison) {
	err := m.resumeErr(ctx, r, c)
	if err == nil {
		return
	}
	if ctx.Err() != nil {
		m.log.Info("protection not resumed: the daemon stopped during the comparison; the next start compares again", "volume", r.Name)
		return
	}
	m.log.Error("protection cannot resume; the volume's history stays readable", "volume", r.Name, "primary", r.Primary, "err", err)
	r.State, r.Reason = StateFailed, "after a restart: "+err.Error()
	if serr := m.save(r); serr != nil {
		m.log.Error("saving protection", "err", serr)
	}
	m.mu.Lock()
	m.mu.jobs[r.Name] = &job{rec: *r}
	m.mu.Unlock()
}

func (m *Manager) resumeErr(ctx context.Context, r *record, c *comparison) error {
	if _, err := m.tl.Volume(r.Name); err != nil {
		return fmt.Errorf("volume %s: %w", r.Name, err)
	}
	p, err := reopenPrimary(r)
	if err != nil {
		return err
	}
	if !r.Clean {
		// Writes since the last flush may be in one and not the other:
		// the primary wins, its differing blocks become a new version.
		// The write-intent bitmap says where such writes may be.
		marked, ok, err := loadIntent(intentPath(m.dir, r.Name), r.Size)
		if err != nil {
			p.close()
			return err
		}
		opts := timeline.ImportOptions{Name: r.Name, Source: p.f, Size: r.Size, Data: p.importRanges(r.Size), SkipUnchanged: true}
		var compared int64 = r.Size
		if ok {
			opts.Changed, compared = marked, 0
			for _, rg := range marked {
				compared += rg.Length
			}
		}
		if c != nil {
			c.bytes.Store(compared)
			opts.Progress = func(done, _ int64) { c.offset.Store(done) }
		}
		if beforeCompare != nil {
			beforeCompare(ctx, r.Name)
		}
		if !ok || len(marked) > 0 {
			res, err := m.tl.Import(ctx, opts)
			if err != nil {
				p.close()
				return fmt.Errorf("compare the primary with the timeline: %w", err)
			}
			if res.Blocks == 0 {
				m.log.Warn("protection stopped uncleanly: the primary and the timeline agree", "volume", r.Name,
					"compared_bytes", compared, "blocks", 0)
			} else {
				m.log.Warn("protection stopped uncleanly: recorded what the primary holds and the timeline did not", "volume", r.Name,
					"compared_bytes", compared, "blocks", res.Blocks, "at", catalog.Time(res.Time))
			}
		} else {
			m.log.Warn("protection stopped uncleanly, with no write in progress or unflushed: nothing to compare", "volume", r.Name)
		}
	}
	r.Clean, r.State, r.Reason = false, StateProtected, ""
	if err := m.save(r); err != nil {
		p.close()
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.startLocked(r, p); err != nil {
		p.close()
		return err
	}
	m.log.Info("protection resumed", "volume", r.Name, "primary", r.Primary)
	return nil
}

// importRanges lists where the primary may hold data in [0, size).
func (p *primary) importRanges(size int64) []timeline.Range {
	data, ok := p.dataRanges(0, size)
	if !ok {
		return nil
	}
	out := make([]timeline.Range, len(data))
	for i, r := range data {
		out[i] = timeline.Range{Offset: r[0], Length: r[1] - r[0]}
	}
	return out
}

// startLocked serves r on p.
func (m *Manager) startLocked(r *record, p *primary) error {
	vol, err := m.tl.Volume(r.Name)
	if err != nil {
		return err
	}
	view, err := m.tl.Head(vol.ID)
	if err != nil {
		return err
	}
	if view.Size() != r.Size {
		view.Close()
		return fmt.Errorf("the volume %s has %d bytes, its protection %d", r.Name, view.Size(), r.Size)
	}
	il, err := newIntentLog(intentPath(m.dir, r.Name), r.Size, m.log.With("volume", r.Name))
	if err != nil {
		view.Close()
		return err
	}
	d := &Disk{view: view, p: p, size: r.Size, bs: view.BlockSize(), intent: il}
	d.rec = newRecorder(view, d.bs, func(err error) {
		m.log.Error("recording the writes of a protected volume failed; its history misses them until the daemon restarts and compares the primary with it", "volume", r.Name, "err", err)
		d.diverge()
	})
	m.mu.jobs[r.Name] = &job{rec: *r, p: p, disk: d}
	return nil
}

// Protect starts protecting a primary as a new volume: the volume is
// made from the primary's content, then served. Nothing is left behind
// when it fails: no volume, no record, the primary as it was.
func (m *Manager) Protect(ctx context.Context, req Request) (*Status, error) {
	if req.File == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "primary %s was not passed open; run rewind protect on the daemon's machine (its local socket), not over --http", req.Primary)
	}
	st, err := m.protect(ctx, req)
	if err != nil {
		req.File.Close()
	}
	return st, err
}

func (m *Manager) protect(ctx context.Context, req Request) (*Status, error) {
	if err := catalog.CheckVolumeName(req.Volume); err != nil {
		return nil, err
	}
	if req.Size < 0 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "--size %d is negative", req.Size)
	}
	// The name is reserved, not the lock held, while the volume is made:
	// an import of a large disk takes a while, and exports look up their
	// Disk under the lock.
	m.mu.Lock()
	_, running := m.mu.jobs[req.Volume]
	_, starting := m.mu.starting[req.Volume]
	if !running && !starting {
		m.mu.starting[req.Volume] = struct{}{}
	}
	m.mu.Unlock()
	if running || starting {
		return nil, catalog.Errorf(catalog.ErrExists, "%s is protected already; choose another name (rewind unprotect %s ends it)", req.Volume, req.Volume)
	}
	defer func() {
		m.mu.Lock()
		delete(m.mu.starting, req.Volume)
		m.mu.Unlock()
	}()
	if _, err := m.tl.Volume(req.Volume); err == nil {
		return nil, catalog.Errorf(catalog.ErrExists, "volume %q exists; choose another name for the protected volume", req.Volume)
	}
	p, err := lockPrimary(req.File, req.Primary)
	if err != nil {
		return nil, err
	}
	size := req.Size
	if size == 0 {
		size = p.size
	}
	if size == 0 {
		p.close()
		return nil, catalog.Errorf(catalog.ErrInvalid, "primary %s is empty; give --size to grow it to the disk's size", req.Primary)
	}
	grown := false
	if size > p.size {
		if p.kind != KindFile {
			p.close()
			return nil, catalog.Errorf(catalog.ErrInvalid, "--size %d is larger than the device %s (%d bytes)", size, req.Primary, p.size)
		}
		if err := p.f.Truncate(size); err != nil {
			p.close()
			return nil, fmt.Errorf("grow %s to %d bytes: %w", req.Primary, size, err)
		}
		grown = true
	}
	undo := func() {
		if grown {
			p.f.Truncate(p.size)
		}
		p.close()
	}
	res, err := m.tl.Import(ctx, timeline.ImportOptions{Name: req.Volume, Source: p.f, Size: size,
		Kind: timeline.KindProtected, Data: p.importRanges(size)})
	if err != nil {
		undo()
		if errors.Is(err, timeline.ErrExists) {
			return nil, catalog.Errorf(catalog.ErrExists, "volume %q exists; choose another name for the protected volume", req.Volume)
		}
		return nil, fmt.Errorf("record the primary %s as %s: %w", req.Primary, req.Volume, err)
	}
	r := &record{Name: req.Volume, Primary: req.Primary, Kind: p.kind, Dev: p.dev, Ino: p.ino, Rdev: p.rdev,
		Size: size, State: StateProtected, Created: catalog.Time(res.Time)}
	if p.kind == KindFile && grown {
		p.size = size
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err = m.save(r)
	if err == nil {
		if err = m.startLocked(r, p); err != nil {
			m.forget(r.Name)
		}
	}
	if err != nil {
		undo()
		if rerr := m.tl.RemoveVolume(req.Volume); rerr != nil {
			m.log.Error("removing the volume of a protection that did not start", "volume", req.Volume, "err", rerr)
		}
		return nil, err
	}
	m.log.Info("protection started", "volume", req.Volume, "primary", req.Primary, "size", size,
		"blocks", res.Blocks, "stored", res.Stored)
	st := m.mu.jobs[req.Volume].status()
	return &st, nil
}

// Unprotect ends a protection: acknowledged writes are made durable in
// both, the export stops taking I/O, the primary is closed and unlocked.
// The volume and its history stay.
func (m *Manager) Unprotect(name string) (*Status, error) {
	m.mu.Lock()
	j, ok := m.mu.jobs[name]
	resuming := ok && j.compare != nil
	var unrecorded error
	if ok && !resuming && j.disk != nil {
		// Writes acknowledged and not recorded would be missing from
		// history for good once the protection is gone: only the
		// comparison of a restart can record them.
		unrecorded = j.disk.Settle()
	}
	if ok && !resuming && unrecorded == nil {
		delete(m.mu.jobs, name)
	}
	m.mu.Unlock()
	if !ok {
		return nil, catalog.Errorf(catalog.ErrNotFound, "%s is not protected (rewind volume list shows the protected volumes)", name)
	}
	if unrecorded != nil {
		return nil, catalog.Errorf(catalog.ErrConflict, "%s cannot be unprotected: %v; restart the daemon (it records what the primary holds), then unprotect", name, unrecorded)
	}
	if resuming {
		// Ending it halfway would leave the history without what the
		// primary kept and the timeline lost.
		return nil, catalog.Errorf(catalog.ErrConflict, "%s is resuming its protection %s; unprotect it once that ends (rewind protect status %s)",
			name, j.compare.String(j.rec.Size), name)
	}
	st := j.status()
	var err error
	if j.disk != nil {
		err = errors.Join(j.disk.close(), j.disk.intent.close())
	}
	err = errors.Join(err, j.p.close(), m.forget(name), removeIntent(intentPath(m.dir, name)))
	if err != nil {
		return nil, fmt.Errorf("unprotect %s: %w", name, err)
	}
	m.log.Info("protection ended; the volume keeps its history", "volume", name)
	st.State = "unprotected"
	return &st, nil
}

func (j *job) status() Status {
	r := j.rec
	st := Status{Name: r.Name, Primary: r.Primary, Kind: r.Kind, Size: r.Size, State: r.State, Reason: r.Reason, Created: r.Created}
	if c := j.compare; c != nil {
		st.State, st.CompareOffset, st.CompareBytes = StateResuming, c.offset.Load(), c.bytes.Load()
		st.Reason = c.String(r.Size)
	}
	if d := j.disk; d != nil {
		st.Writes, st.Written = d.stats.writes.Load(), d.stats.written.Load()
		st.Flushes, st.Errors = d.stats.flushes.Load(), d.stats.errors.Load()
		st.Grouped, st.Queued = d.rec.grouped.Load(), d.rec.queued()
		if err := d.rec.failure(); err != nil {
			st.State, st.Reason = StateFailed, "recording writes failed: "+err.Error()+"; restart the daemon to compare the primary with the timeline"
		} else if n, err := d.rec.stall(); err != nil {
			st.Reason = fmt.Sprintf("%d acknowledged writes wait to be recorded: %v", n, err)
		}
	}
	return st
}

// String says where the comparison is, for a volume of size bytes.
func (c *comparison) String(size int64) string {
	if c.bytes.Load() == 0 && c.offset.Load() == 0 {
		return "after an unclean stop; reading the write-intent bitmap"
	}
	return fmt.Sprintf("after an unclean stop, comparing the primary with the timeline: %d%% through the volume (%d MiB of the primary to read in all)",
		c.offset.Load()*100/max(size, 1), (c.bytes.Load()+1<<20-1)>>20)
}

// Serve returns what serves the export name: the Disk of a protected
// volume being served; an error that says so for one still being
// compared after an unclean stop (its newest version may lack what the
// primary kept: it must not be served in the Disk's place); nil, nil
// otherwise (VOLUME@WHEN is history). One lookup, so that a comparison
// ending between two cannot let a client past both.
func (m *Manager) Serve(name string) (*Disk, error) {
	if strings.Contains(name, "@") {
		return nil, nil
	}
	m.mu.Lock()
	j := m.mu.jobs[name]
	m.mu.Unlock()
	switch {
	case j == nil:
		return nil, nil
	case j.compare != nil:
		return nil, catalog.Errorf(catalog.ErrConflict, "%s is resuming its protection %s; it is served when that ends (rewind protect status %s)",
			name, j.compare.String(j.rec.Size), name)
	}
	return j.disk, nil
}

// Disk returns what serves the export name, when it names a protected
// volume being served; nil otherwise (VOLUME@WHEN is history).
func (m *Manager) Disk(name string) *Disk {
	if strings.Contains(name, "@") {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if j := m.mu.jobs[name]; j != nil {
		return j.disk
	}
	return nil
}

// Settle returns once the writes acknowledged so far on a protected
// volume's disk are in its timeline (see Disk.Settle); at once for any
// other volume.
func (m *Manager) Settle(volume string) error {
	if d := m.Disk(volume); d != nil {
		return d.Settle()
	}
	return nil
}

// Busy reports whether volume is served by a protection.
func (m *Manager) Busy(volume string) bool { return m.Disk(volume) != nil }

// RemoveCheck refuses the removal of a protected volume (for
// catalog.Service.SetRemoveCheck).
func (m *Manager) RemoveCheck(volume string) error {
	m.mu.Lock()
	_, ok := m.mu.jobs[volume]
	m.mu.Unlock()
	if ok {
		return catalog.Errorf(catalog.ErrConflict, "%s is protected; end the protection first (rewind unprotect %s)", volume, volume)
	}
	return nil
}

// List returns the status of every protection, by name.
func (m *Manager) List() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.mu.jobs))
	for _, j := range m.mu.jobs {
		out = append(out, j.status())
	}
	m.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Close ends serving: each Disk makes what it acknowledged durable in
// both, and a protection whose primary and timeline are then equal is
// recorded clean, so the next start skips comparing them. Exports must
// be closed first. Comparisons in progress are interrupted: those
// protections stay unclean, and the next start compares them again.
func (m *Manager) Close() error {
	m.cancel()
	m.resuming.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, j := range m.mu.jobs {
		if j.disk == nil {
			continue
		}
		err := j.disk.close()
		if err == nil && !j.disk.diverged.Load() {
			r := j.rec
			r.Clean = true
			err = m.save(&r)
		}
		errs = append(errs, err, j.disk.intent.close(), j.p.close())
	}
	m.mu.jobs = map[string]*job{}
	return errors.Join(errs...)
}

// Dir is where the records are kept.
func (m *Manager) Dir() string { return filepath.Clean(m.dir) }
