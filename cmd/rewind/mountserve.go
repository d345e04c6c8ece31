package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/protect"
	"github.com/rewind-dev/rewind/catalog/recovery"
	"github.com/rewind-dev/rewind/mount"
	"github.com/rewind-dev/rewind/timeline"
)

// fuseSource shows the catalog to the FUSE tree.
type fuseSource struct {
	svc *catalog.Service
	x   *exports
}

var _ mount.Source = (*fuseSource)(nil)

func (f *fuseSource) Volumes(ctx context.Context) ([]string, error) {
	vols, err := f.svc.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(vols))
	for i, v := range vols {
		out[i] = v.Name
	}
	return out, nil
}

// Instants lists the recovery points and the time of every version.
func (f *fuseSource) Instants(ctx context.Context, volume string) ([]string, error) {
	out, err := f.Points(ctx, volume)
	if err != nil {
		return nil, err
	}
	log, err := f.svc.Log(ctx, catalog.LogRequest{Volume: volume})
	if err != nil {
		return nil, err
	}
	for _, e := range log {
		out = append(out, e.Time.Compact())
	}
	return out, nil
}

func (f *fuseSource) Points(ctx context.Context, volume string) ([]string, error) {
	ps, err := f.svc.Points(ctx, volume)
	if err != nil {
		return nil, notExist(err)
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Label
	}
	return out, nil
}

func (f *fuseSource) Open(_ context.Context, name string) (mount.Image, bool, error) {
	if d := f.x.recovering(name); d != nil {
		f.x.hold(name, 1)
		return &recovery.Image{Disk: d, Release: func() { f.x.hold(name, -1) }}, true, nil
	}
	if d, err := f.x.protecting(name); err != nil {
		return nil, false, fmt.Errorf("%w: %w", syscall.EBUSY, err)
	} else if d != nil {
		f.x.hold(name, 1)
		return &protect.Image{Disk: d, Release: func() { f.x.hold(name, -1) }}, true, nil
	}
	view, err := f.svc.OpenView(name)
	if err != nil {
		return nil, false, notExist(err)
	}
	vol, _, _ := strings.Cut(name, "@")
	f.x.hold(vol, 1)
	return &servedImage{View: view, release: func() { f.x.hold(vol, -1) }}, view.Writable(), nil
}

// notExist turns "no such volume, label or instant" into ENOENT for FUSE.
func notExist(err error) error {
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadWhen) ||
		errors.Is(err, catalog.ErrBadName) || errors.Is(err, catalog.ErrConflict) {
		return fmt.Errorf("%w: %v", os.ErrNotExist, err)
	}
	return err
}

// servedImage is a view that counts as served while it is open.
type servedImage struct {
	*timeline.View
	once    sync.Once
	release func()
}

func (s *servedImage) Close() error {
	s.once.Do(s.release)
	return s.View.Close()
}

// mounts are the single-view mounts of rewind mount, by directory.
type mounts struct {
	mu struct {
		sync.Mutex
		byDir map[string]*activeMount
	}
}

type activeMount struct {
	m   *mount.Mount
	img mount.Image
	res MountResult
	// made is set when the daemon made the directory (a mount over
	// HTTP); it removes it at unmount.
	made bool
}

// MountRequest is POST /v1/mounts (rewind mount). Without Dir the daemon
// mounts at DATA/mounts/VOLUME@INSTANT, a directory it makes.
type MountRequest struct {
	Spec  string `json:"spec"`
	Dir   string `json:"dir,omitempty"`
	Files bool   `json:"files,omitempty"`
	RW    bool   `json:"rw,omitempty"`
	As    string `json:"as,omitempty"`
}

// MountResult says what was mounted.
type MountResult struct {
	Dir     string   `json:"dir"`
	Spec    string   `json:"spec"`
	Files   bool     `json:"files"`
	Clone   string   `json:"clone,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
}

// startMount mounts the FUSE tree for --mount, after cleaning up what a
// killed predecessor left, and registers the mount and umount calls.
func (d *daemon) startMount(ctx context.Context, c *serveCmd) error {
	d.mounts.mu.byDir = map[string]*activeMount{}
	d.stops = append(d.stops, func(context.Context) error { return d.unmountAll() })
	if c.Mount == "" {
		return nil
	}
	dir, err := filepath.Abs(c.Mount)
	if err != nil {
		return err
	}
	m, err := mount.MountTree(dir, &fuseSource{svc: d.svc, x: d.exports}, d.mountOptions())
	if err != nil {
		return fmt.Errorf("--mount %s: %w", c.Mount, err)
	}
	d.stops = append(d.stops, func(context.Context) error { return m.Unmount() })
	return nil
}

func (d *daemon) mountOptions() mount.Options {
	return mount.Options{StateDir: filepath.Join(d.svc.Dir(), "run"), Logger: d.log}
}

// mountRoutes are /v1/mounts.
func (d *daemon) mountRoutes() []api.Route {
	return []api.Route{
		{Method: "GET", Pattern: "/v1/mounts", Answer: []MountResult{},
			Handler: api.OK(func(*http.Request) (any, error) { return d.mountList(), nil })},
		{Method: "POST", Pattern: "/v1/mounts", Body: MountRequest{}, Answer: MountResult{},
			Handler: api.Created(func(r *http.Request) (any, string, error) {
				req, err := api.Decode[MountRequest](r)
				if err != nil {
					return nil, "", err
				}
				res, err := d.mount(r.Context(), req)
				if err != nil {
					return nil, "", err
				}
				return res, "/v1/mounts?" + url.Values{"dir": {res.Dir}}.Encode(), nil
			})},
		{Method: "DELETE", Pattern: "/v1/mounts",
			Handler: api.NoContent(func(r *http.Request) error { return d.umount(r.URL.Query().Get("dir")) })},
	}
}

// mountList lists the single-view mounts, by directory.
func (d *daemon) mountList() []MountResult {
	d.mounts.mu.Lock()
	defer d.mounts.mu.Unlock()
	out := make([]MountResult, 0, len(d.mounts.mu.byDir))
	for _, am := range d.mounts.mu.byDir {
		out = append(out, am.res)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dir < out[j].Dir })
	return out
}

// mountDir makes DATA/mounts/VOLUME@INSTANT (0700, the daemon's) for a
// mount that names no directory: the daemon opens no path a caller names
// over HTTP, so the caller gets one of the daemon's.
func (d *daemon) mountDir(spec string) (string, error) {
	at, err := d.svc.Instant(context.Background(), spec)
	if err != nil {
		return "", err
	}
	parent := filepath.Join(d.svc.Dir(), "mounts")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	dir := filepath.Join(parent, at.Spec)
	d.mounts.mu.Lock()
	_, taken := d.mounts.mu.byDir[dir]
	d.mounts.mu.Unlock()
	if taken {
		return "", catalog.Errorf(catalog.ErrExists, "%s is mounted already, at %s: use it, or unmount it first (DELETE /v1/mounts?dir=%s)",
			at.Spec, dir, url.QueryEscape(dir))
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return dir, nil
}

// mount carries out rewind mount.
func (d *daemon) mount(ctx context.Context, r MountRequest) (_ *MountResult, err error) {
	made := false
	if r.Dir == "" {
		if r.Dir, err = d.mountDir(r.Spec); err != nil {
			return nil, err
		}
		made = true
		defer func() {
			if err != nil {
				os.Remove(r.Dir)
			}
		}()
	} else {
		if !filepath.IsAbs(r.Dir) {
			return nil, catalog.Errorf(catalog.ErrInvalid, "mount point %q must be an absolute path", r.Dir)
		}
		if err := checkMountOwner(ctx, r.Dir); err != nil {
			return nil, err
		}
	}
	res := &MountResult{Dir: r.Dir, Spec: r.Spec, Files: r.Files}
	spec := r.Spec
	if r.RW {
		if r.Files {
			return nil, catalog.Errorf(catalog.ErrInvalid, "--files --rw is not supported yet: mount --rw and loop-mount its disk.img, or use --files alone")
		}
		name := r.As
		if name == "" {
			sp, err := catalog.ParseSpec(r.Spec, d.svc.Timeline().Now())
			if err != nil {
				return nil, err
			}
			name = fmt.Sprintf("%s-rw-%s", sp.Volume, catalog.Time(d.svc.Timeline().Now().UnixNano()).Compact())
			name = strings.NewReplacer(".", "", "Z", "z").Replace(name)
		}
		if _, err := d.svc.Clone(ctx, r.Spec, name); err != nil {
			return nil, err
		}
		spec, res.Clone = name, name
	}
	img, writable, err := d.openImage(spec)
	if err != nil {
		return nil, err
	}
	opts := d.mountOptions()
	opts.Live = !strings.Contains(spec, "@") && !writable
	var m *mount.Mount
	if r.Files {
		m, err = mount.MountFiles(r.Dir, img, opts)
	} else {
		m, err = mount.MountImage(r.Dir, img, writable, opts)
	}
	if errors.Is(err, mount.ErrNoFilesystem) {
		err = catalog.Errorf(catalog.ErrInvalid, "%s: %v", spec, err)
	}
	if err != nil {
		img.Close()
		return nil, err
	}
	for _, s := range m.Skipped() {
		res.Skipped = append(res.Skipped, s.Error())
	}
	d.mounts.mu.Lock()
	d.mounts.mu.byDir[r.Dir] = &activeMount{m: m, img: img, res: *res, made: made}
	d.mounts.mu.Unlock()
	d.log.Info("mounted", "spec", spec, "dir", r.Dir, "files", r.Files)
	return res, nil
}

// openImage opens spec for rewind mount: a recovered volume's Disk, or a
// view; either counts as served until closed.
func (d *daemon) openImage(spec string) (mount.Image, bool, error) {
	if disk := d.exports.recovering(spec); disk != nil {
		d.exports.hold(spec, 1)
		return &recovery.Image{Disk: disk, Release: func() { d.exports.hold(spec, -1) }}, true, nil
	}
	if disk, err := d.exports.protecting(spec); err != nil {
		return nil, false, err
	} else if disk != nil {
		d.exports.hold(spec, 1)
		return &protect.Image{Disk: disk, Release: func() { d.exports.hold(spec, -1) }}, true, nil
	}
	view, err := d.svc.OpenView(spec)
	if err != nil {
		return nil, false, err
	}
	vol, _, _ := strings.Cut(spec, "@")
	d.exports.hold(vol, 1)
	return &servedImage{View: view, release: func() { d.exports.hold(vol, -1) }}, view.Writable(), nil
}

// checkMountOwner lets a caller of the local socket mount onto dir only
// when the caller is root or owns dir; the daemon, root, would otherwise
// cover any empty directory for anyone. Calls that did not come through
// the socket (no peer uid) may not mount at all.
func checkMountOwner(ctx context.Context, dir string) error {
	uid, ok := api.PeerUID(ctx)
	if !ok {
		return api.Forbiddenf("rewind mount is served on the local socket only")
	}
	if uid == 0 {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return catalog.Errorf(catalog.ErrInvalid, "mount point %s: %v", dir, err)
	}
	if owner := st.Sys().(*syscall.Stat_t).Uid; owner != uid {
		return api.Forbiddenf("mount point %s belongs to uid %d, not to you (uid %d): mount onto a directory you own",
			dir, owner, uid)
	}
	return nil
}

// umount carries out rewind umount.
func (d *daemon) umount(dir string) error {
	if dir == "" {
		return catalog.Errorf(catalog.ErrInvalid, "name the mount to unmount: DELETE /v1/mounts?dir=/abs/dir")
	}
	d.mounts.mu.Lock()
	am, ok := d.mounts.mu.byDir[dir]
	delete(d.mounts.mu.byDir, dir)
	d.mounts.mu.Unlock()
	if !ok {
		return catalog.Errorf(catalog.ErrNotFound, "nothing of rewind's is mounted on %s (see GET /v1/mounts)", dir)
	}
	err := am.m.Unmount()
	am.img.Close()
	if err == nil && am.made {
		os.Remove(dir)
	}
	return err
}

func (d *daemon) unmountAll() error {
	d.mounts.mu.Lock()
	all := d.mounts.mu.byDir
	d.mounts.mu.byDir = map[string]*activeMount{}
	d.mounts.mu.Unlock()
	var errs []error
	for dir, am := range all {
		if err := am.m.Unmount(); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
		}
		am.img.Close()
		if am.made {
			os.Remove(dir)
		}
	}
	return errors.Join(errs...)
}
