package recovery

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
	"time"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/timeline"
	"github.com/rewind-dev/rewind/timeline/hydrate"
)

// Options configure a Manager.
type Options struct {
	// Dir keeps the records and saved progress (DATA/recoveries).
	Dir    string
	Logger *slog.Logger
	// SaveInterval is how often a copy saves its progress (default 5 s).
	SaveInterval time.Duration
	// Copier options for tests; zero values take the copier's defaults.
	Granularity int64
	Workers     int
}

// Manager runs the recoveries of one data directory.
type Manager struct {
	svc *catalog.Service
	dir string
	log *slog.Logger
	opt Options
	ctx context.Context // ends when the daemon stops
	end context.CancelFunc
	wg  sync.WaitGroup
	// ops serialises Retry and Cancel, which both rewrite a recovery's
	// record after looking at its state.
	ops sync.Mutex
	mu  struct {
		sync.Mutex
		jobs map[string]*job // by recovered volume name
	}
}

// job is one recovery.
type job struct {
	m      *Manager
	view   *timeline.View
	disk   *Disk
	cp     *hydrate.Copier
	target *opened
	done   chan struct{} // closed when the copier's Run returns
	meter  rateMeter
	mu     struct {
		sync.Mutex
		rec *record
	}
}

// Request is `rewind recover VOLUME@WHEN --to TARGET`.
type Request struct {
	Spec   string `json:"spec"`
	Target string `json:"target"` // a path (for messages) or an NBD URI
	As     string `json:"as,omitempty"`
	Limit  int64  `json:"bwlimit,omitempty"` // bytes/s, 0 = unlimited
	// File is the target file or device, opened by the caller; nil for
	// an NBD URI. Created says the caller has just created it, empty:
	// it is sized to the volume and read as zeroes.
	File    *os.File `json:"-"`
	Created bool     `json:"created,omitempty"`
}

// Open loads the recoveries of dir and resumes those still copying.
func Open(svc *catalog.Service, o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = 5 * time.Second
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recoveries: %w", err)
	}
	ctx, end := context.WithCancel(context.Background())
	m := &Manager{svc: svc, dir: o.Dir, log: o.Logger, opt: o, ctx: ctx, end: end}
	m.mu.jobs = map[string]*job{}
	recs, err := m.load()
	if err != nil {
		end()
		return nil, err
	}
	for _, r := range recs {
		m.resume(r)
	}
	return m, nil
}

// Start begins a recovery. Nothing is left behind when it fails: no
// clone, no record, no copy.
func (m *Manager) Start(ctx context.Context, req Request) (*Status, error) {
	o, err := m.openTarget(ctx, req)
	if err != nil {
		return nil, err
	}
	st, err := m.start(ctx, req, o)
	if err != nil {
		o.close()
		return nil, err
	}
	return st, nil
}

func (m *Manager) openTarget(ctx context.Context, req Request) (*opened, error) {
	if req.Target == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "no target: give --to FILE, DEVICE or nbd://HOST:PORT/EXPORT")
	}
	if req.File == nil {
		if !isURI(req.Target) {
			return nil, catalog.Errorf(catalog.ErrInvalid, "target %s was not passed open; over the network a target must be an nbd:// URI", req.Target)
		}
		// Checked before dialling: an NBD server that takes one client
		// at a time would keep a second one waiting.
		key, err := nbdKey(req.Target)
		if err != nil {
			return nil, err
		}
		if err := m.checkFree(key, req.Target); err != nil {
			return nil, err
		}
		return dialTarget(ctx, m.ctx, req.Target, m.log)
	}
	return fromFile(req.File, req.Target)
}

func (m *Manager) start(ctx context.Context, req Request, o *opened) (*Status, error) {
	src, at, sp, err := m.svc.Resolve(req.Spec)
	if err != nil {
		return nil, err
	}
	if sp.Bare {
		return nil, catalog.Errorf(catalog.ErrBadWhen, "recover needs an instant: VOLUME@WHEN (for example %s@latest or %s@-10m)", sp.Volume, sp.Volume)
	}
	name := req.As
	if name == "" {
		name = fmt.Sprintf("%s-recovered-%s", sp.Volume, strings.ToLower(catalog.Time(m.svc.Timeline().Now().UnixNano()).Compact()))
		name = strings.ReplaceAll(name, ".", "")
	}
	if err := catalog.CheckVolumeName(name); err != nil {
		return nil, err
	}
	if err := fitTarget(o, req.Created, src.SizeAt(at), req.Target, req.Spec); err != nil {
		return nil, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkFreeLocked(o.key, req.Target); err != nil {
		return nil, err
	}
	if _, ok := m.mu.jobs[name]; ok {
		return nil, catalog.Errorf(catalog.ErrExists, "a recovery named %s exists; choose another name with --as", name)
	}
	// The instant resolved above, not the spec again: a relative WHEN
	// moves.
	if _, err := m.svc.Clone(ctx, fmt.Sprintf("%s@%s", src.Name, catalog.Time(at)), name); err != nil {
		return nil, err
	}
	r := &record{Name: name, Source: req.Spec, From: src.Name, At: catalog.Time(at), Target: req.Target,
		Kind: o.kind, Dev: o.dev, Ino: o.ino, Rdev: o.rdev, Zeroed: req.Created && o.kind == KindFile,
		Limit: req.Limit, State: StateCopying, Created: catalog.Time(time.Now().UnixNano())}
	os.Remove(m.progressPath(name))
	if err := m.save(r); err != nil {
		m.svc.RemoveVolume(ctx, name, true)
		return nil, err
	}
	if err := m.startJobLocked(r, o, false); err != nil {
		m.forget(name)
		m.svc.RemoveVolume(ctx, name, true)
		return nil, err
	}
	m.log.Info("recovery started", "volume", name, "from", req.Spec, "target", req.Target, "bwlimit", req.Limit)
	st := m.mu.jobs[name].status()
	return &st, nil
}

// fitTarget sizes a target the caller has just created (an empty file)
// to size, and refuses one smaller than size; what names the volume in
// the message.
func fitTarget(o *opened, created bool, size int64, target, what string) error {
	if created && o.kind == KindFile && o.t.Size() == 0 {
		f := o.t.(*hydrate.FileTarget).File()
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("size target %s to %d bytes: %w", target, size, err)
		}
		t, err := hydrate.NewFileTarget(f)
		if err != nil {
			return err
		}
		o.t = t
	}
	if ts := o.t.Size(); ts < size {
		return catalog.Errorf(catalog.ErrInvalid, "target %s has %d bytes and %s needs %d; give a target of at least %d bytes (or a new file)",
			target, ts, what, size, size)
	}
	return nil
}

// checkFree fails when a running recovery copies into or serves key.
func (m *Manager) checkFree(key, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checkFreeLocked(key, target)
}

func (m *Manager) checkFreeLocked(key, target string) error {
	for _, j := range m.mu.jobs {
		if j.target != nil && j.target.key == key && j.active() {
			return catalog.Errorf(catalog.ErrConflict, "target %s is in use by the recovery %s; choose another target or cancel that recovery",
				target, j.record().Name)
		}
	}
	return nil
}

func (m *Manager) startJob(r *record, o *opened, resumed bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.startJobLocked(r, o, resumed)
}

// startJobLocked opens the clone's head, makes the copier (resuming its
// saved progress), and starts it.
func (m *Manager) startJobLocked(r *record, o *opened, resumed bool) error {
	view, err := m.svc.OpenView(r.Name)
	if err != nil {
		return err
	}
	cp, err := m.newCopier(r, view, o)
	if err != nil {
		view.Close()
		return err
	}
	if resumed {
		if err := m.redirty(r.Name, view, cp); err != nil {
			view.Close()
			return err
		}
	}
	if err := cp.Checkpoint(); err != nil { // the zero bitmap is saved before the first copy
		view.Close()
		return err
	}
	followLost(o, cp)
	j := &job{m: m, view: view, cp: cp, target: o, disk: &Disk{view: view, cp: cp}, done: make(chan struct{})}
	j.mu.rec = r
	m.mu.jobs[r.Name] = j
	m.wg.Add(1)
	go j.run()
	return nil
}

// redirty marks dirty, in a copier that resumed saved progress, every
// block the clone wrote since that progress was saved: its bitmap may
// not have heard of them.
func (m *Manager) redirty(name string, view *timeline.View, cp *hydrate.Copier) error {
	wm, ok := cp.Resumed()
	if !ok {
		return nil
	}
	last := view.Time()
	if last <= wm {
		return nil
	}
	vol, err := view.Volume()
	if err != nil {
		return err
	}
	changed, err := m.svc.Timeline().Diff(vol.ID, wm, last)
	if err != nil {
		return fmt.Errorf("blocks written since the saved progress: %w", err)
	}
	for _, c := range changed {
		cp.MarkDirty(c.Offset, c.Length)
	}
	m.log.Info("recovery resumes", "volume", name, "redirtied_ranges", len(changed))
	return nil
}

// newCopier makes the copier of r from view into o's target, resuming
// the progress saved in DATA/recoveries/NAME.progress if there is one.
func (m *Manager) newCopier(r *record, view *timeline.View, o *opened) (*hydrate.Copier, error) {
	return hydrate.New(view, o.t, hydrate.Options{
		Granularity:  m.opt.Granularity,
		Workers:      m.opt.Workers,
		Rate:         r.Limit,
		TargetZeroed: r.Zeroed,
		Store:        hydrate.FileStore{Path: m.progressPath(r.Name)},
		SaveInterval: m.opt.SaveInterval,
		Watermark:    func() int64 { return view.Time() },
		FlushSource:  view.Flush,
		Logger:       m.log.With("recovery", r.Name),
	})
}

// followLost makes an NBD target report the writes a broken connection
// acknowledged without a FLUSH, so that cp copies them again.
func followLost(o *opened, cp *hydrate.Copier) {
	if nt, ok := o.t.(*nbdTarget); ok {
		nt.setLost(cp.MarkDirty)
	}
}

// startCutOver serves a recovery that was cut over before a restart.
func (m *Manager) startCutOver(r *record, o *opened) error {
	view, err := m.svc.OpenView(r.Name)
	if err != nil {
		return err
	}
	d := &Disk{view: view}
	d.mu.target = o.t
	j := &job{m: m, view: view, target: o, disk: d, done: closed()}
	j.mu.rec = r
	m.mu.Lock()
	m.mu.jobs[r.Name] = j
	m.mu.Unlock()
	return nil
}

// run runs the copier and records how it ended.
func (j *job) run() {
	defer j.m.wg.Done()
	defer close(j.done)
	err := j.cp.Run(j.m.ctx)
	switch {
	case err == nil, errors.Is(err, hydrate.ErrCancelled):
		return // Cutover or Cancel records the state
	case j.m.ctx.Err() != nil:
		return // the daemon stops: the copy resumes at the next start
	}
	j.m.log.Error("recovery copy failed; the volume is still served from the clone", "volume", j.record().Name, "err", err)
	j.setState(StateFailed, err.Error())
	j.target.close()
}

func (j *job) record() record {
	j.mu.Lock()
	defer j.mu.Unlock()
	return *j.mu.rec
}

func (j *job) setState(state, reason string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.mu.rec.State, j.mu.rec.Reason = state, reason
	if state == StateCutOver {
		t := catalog.Time(time.Now().UnixNano())
		j.mu.rec.CutOver = &t
	}
	return j.m.save(j.mu.rec)
}

// active reports whether the job still copies into its target or serves it.
func (j *job) active() bool {
	s := j.record().State
	return s == StateCopying || s == StateCutOver
}

// get returns the job of a recovered volume.
func (m *Manager) get(name string) (*job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.mu.jobs[name]
	if !ok {
		return nil, catalog.Errorf(catalog.ErrNotFound, "no recovery of a volume named %s (rewind recover status lists them)", name)
	}
	return j, nil
}

// Cutover waits until the target holds what the export holds, then
// makes the export serve the target.
func (m *Manager) Cutover(ctx context.Context, name string) (*Status, error) {
	j, err := m.get(name)
	if err != nil {
		return nil, err
	}
	switch r := j.record(); r.State {
	case StateCutOver:
		st := j.status()
		return &st, nil
	case StateCopying:
	default:
		return nil, catalog.Errorf(catalog.ErrConflict, "the recovery of %s is %s%s; there is nothing to cut over", name, r.State, reasonSuffix(r.Reason))
	}
	// From now on each write reaches the target before it is
	// acknowledged, so what is dirty only shrinks, however busy the
	// workload.
	j.cp.SetMode(hydrate.ModeWriteBlocking)
	resume, err := j.cp.Cutover(ctx, func() func() {
		resume := j.disk.pause()
		return resume
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("cutover of %s interrupted before it happened; the copy goes on: %w", name, err)
		}
		return nil, fmt.Errorf("cutover of %s: %w", name, err)
	}
	// I/O is paused, the target is flushed and equal to the clone. The
	// clone's history is made durable and the cutover recorded before
	// the export switches.
	if err := errors.Join(j.view.Flush(), j.setState(StateCutOver, "")); err != nil {
		resume()
		j.setState(StateFailed, "cutover could not be recorded: "+err.Error())
		return nil, fmt.Errorf("cutover of %s could not be recorded, so the export stays on the clone: %w", name, err)
	}
	j.disk.switchTo(j.target.t)
	if nt, ok := j.target.t.(*nbdTarget); ok {
		nt.setLost(nil) // the export's own writes now: an NBD client's to flush
	}
	resume()
	m.log.Info("recovery cut over: the export now reads and writes the target", "volume", name, "target", j.record().Target)
	<-j.done
	os.Remove(m.progressPath(name))
	st := j.status()
	return &st, nil
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// Cancel stops a copy. The export keeps serving the clone.
func (m *Manager) Cancel(name string) (*Status, error) {
	m.ops.Lock()
	defer m.ops.Unlock()
	j, err := m.get(name)
	if err != nil {
		return nil, err
	}
	switch r := j.record(); r.State {
	case StateCutOver:
		return nil, catalog.Errorf(catalog.ErrConflict, "%s was cut over to %s; the workload runs on the target, there is no copy to cancel", name, r.Target)
	case StateCancelled:
		st := j.status()
		return &st, nil
	}
	if j.cp != nil {
		j.cp.Cancel()
		j.target.interrupt() // a target being dialled again fails at once
		<-j.done
	}
	if err := j.setState(StateCancelled, ""); err != nil {
		return nil, err
	}
	j.target.close() // unlocks a file target for another recovery
	os.Remove(m.progressPath(name))
	m.log.Info("recovery cancelled; the volume is served from its clone", "volume", name)
	st := j.status()
	return &st, nil
}

// SetLimit changes a copy's bandwidth limit while it runs.
func (m *Manager) SetLimit(name string, rate int64) (*Status, error) {
	if rate < 0 {
		return nil, catalog.Errorf(catalog.ErrInvalid, "a negative rate")
	}
	j, err := m.get(name)
	if err != nil {
		return nil, err
	}
	if j.cp == nil || j.record().State != StateCopying {
		return nil, catalog.Errorf(catalog.ErrConflict, "the recovery of %s is not copying", name)
	}
	j.cp.SetRate(rate)
	j.mu.Lock()
	j.mu.rec.Limit = rate
	err = m.save(j.mu.rec)
	j.mu.Unlock()
	if err != nil {
		return nil, err
	}
	st := j.status()
	return &st, nil
}

// Disk returns what serves the export name, when it names a recovered
// volume (copying, cut over, or with its copy ended, so that a retry
// follows every client's writes); nil otherwise.
func (m *Manager) Disk(name string) *Disk {
	if strings.Contains(name, "@") {
		return nil
	}
	m.mu.Lock()
	j := m.mu.jobs[name]
	m.mu.Unlock()
	if j == nil || j.disk == nil {
		return nil
	}
	return j.disk
}

// Busy reports whether volume is a recovery that is copying or cut over:
// it is served (a volume rm without --force is refused).
func (m *Manager) Busy(volume string) bool {
	m.mu.Lock()
	j := m.mu.jobs[volume]
	m.mu.Unlock()
	return j != nil && j.active()
}

// RemoveCheck refuses the removal of a volume whose recovery is copying
// (for catalog.Service.SetRemoveCheck). Removing a recovered volume that
// was cut over, cancelled or failed ends its recovery: the target is
// closed and left as it is, and the record goes.
func (m *Manager) RemoveCheck(volume string) error {
	m.mu.Lock()
	j := m.mu.jobs[volume]
	m.mu.Unlock()
	if j == nil {
		return nil
	}
	if r := j.record(); r.State == StateCopying {
		return catalog.Errorf(catalog.ErrConflict, "%s is being recovered into %s; cancel the copy first (rewind recover cancel %s)",
			volume, r.Target, volume)
	}
	m.forgetJob(volume)
	return nil
}

// forgetJob ends a recovery that no longer copies and drops its record.
func (m *Manager) forgetJob(volume string) {
	m.mu.Lock()
	j := m.mu.jobs[volume]
	delete(m.mu.jobs, volume)
	m.mu.Unlock()
	if j == nil {
		return
	}
	j.target.close()
	if j.view != nil {
		j.view.Close()
		j.view = nil
	}
	m.forget(volume)
}

// Close stops every copy, saving its progress, and closes the targets.
// Exports must be closed first.
func (m *Manager) Close() error {
	m.end()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, j := range m.mu.jobs {
		if j.target != nil && j.record().State == StateCutOver {
			if _, dead := j.target.t.(deadTarget); !dead {
				// The export wrote the target directly: what it
				// acknowledged is made durable before the daemon goes.
				errs = append(errs, j.target.t.Flush())
			}
		}
		errs = append(errs, j.target.close())
		if j.view != nil {
			errs = append(errs, j.view.Close())
		}
	}
	return errors.Join(errs...)
}

// List returns the status of every recovery, by name.
func (m *Manager) List() []Status {
	m.mu.Lock()
	jobs := make([]*job, 0, len(m.mu.jobs))
	for _, j := range m.mu.jobs {
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.status())
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Dir is where the records are kept.
func (m *Manager) Dir() string { return filepath.Clean(m.dir) }
