package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/mount/proof"
	"github.com/rewind-dev/rewind/nbd"
)

// The daemon's side of rewind verify --fsck and --boot. They are served on
// the local socket only, to the users it serves (root and the owner of the
// data directory), as rewind mount is.

// VerifyRequest names the recovery point a verify call judges.
type VerifyRequest struct {
	Spec string `json:"spec"`
}

// VerifyTarget is a recovery point pinned to its instant, so that every
// check of one verify judges the same bytes even while writes go on.
type VerifyTarget struct {
	Volume  string       `json:"volume"`
	Instant catalog.Time `json:"instant"`
	Spec    string       `json:"spec"` // VOLUME@INSTANT
}

// verifyLocal refuses calls that did not come through the local socket.
func verifyLocal(ctx context.Context) error {
	if _, ok := api.PeerUID(ctx); !ok {
		return api.Forbiddenf("rewind verify --fsck and --boot are served on the local socket only")
	}
	return nil
}

// pin resolves VOLUME[@WHEN] (default @latest) to VOLUME@INSTANT.
func (d *daemon) pin(spec string) (VerifyTarget, error) {
	if !strings.Contains(spec, "@") {
		spec += "@latest"
	}
	v, t, _, err := d.svc.Resolve(spec)
	if err != nil {
		return VerifyTarget{}, err
	}
	return VerifyTarget{Volume: v.Name, Instant: catalog.Time(t), Spec: v.Name + "@" + catalog.Time(t).String()}, nil
}

// verifyRoutes are /v1/verify/*, the daemon's side of verify --fsck and
// --boot; stopping ends when the daemon begins to stop, and ends the
// checks and VMs' disks with it.
func (d *daemon) verifyRoutes(stopping context.Context) []api.Route {
	// call serves one verify call on the request's spec, local callers
	// only; a long one (a check, a VM's disk) also ends when the daemon
	// begins to stop.
	call := func(long bool, run func(ctx context.Context, spec string) (any, error)) http.Handler {
		return api.OK(func(r *http.Request) (any, error) {
			req, err := verifyRequest(r)
			if err != nil {
				return nil, err
			}
			ctx := r.Context()
			if long {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer context.AfterFunc(stopping, cancel)()
				defer cancel()
			}
			return run(ctx, req.Spec)
		})
	}
	return []api.Route{
		{Method: "POST", Pattern: "/v1/verify/resolve", Body: VerifyRequest{}, Answer: VerifyTarget{},
			Handler: call(false, func(_ context.Context, spec string) (any, error) { return d.pin(spec) })},
		{Method: "POST", Pattern: "/v1/verify/fsck", Body: VerifyRequest{}, Answer: proof.FsckReport{},
			Handler: call(true, func(ctx context.Context, spec string) (any, error) { return d.verifyFsck(ctx, spec) })},
		{Method: "POST", Pattern: "/v1/verify/nbd", Body: VerifyRequest{}, Answer: VerifyTarget{},
			Handler: call(true, func(ctx context.Context, spec string) (any, error) { return d.verifyNBD(ctx, spec) })},
	}
}

func verifyRequest(r *http.Request) (VerifyRequest, error) {
	if err := verifyLocal(r.Context()); err != nil {
		return VerifyRequest{}, err
	}
	return api.Decode[VerifyRequest](r)
}

// verifyFsck checks the filesystems of spec's instant on a throwaway
// overlay; the image counts as served meanwhile.
func (d *daemon) verifyFsck(ctx context.Context, spec string) (*proof.FsckReport, error) {
	t, err := d.pin(spec)
	if err != nil {
		return nil, err
	}
	img, _, err := d.openImage(t.Spec)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	d.log.Info("verify: checking filesystems", "spec", t.Spec)
	rep, err := proof.Fsck(ctx, img, d.mountOptions())
	if err != nil {
		return nil, err
	}
	d.log.Info("verify: filesystems checked", "spec", t.Spec, "pass", rep.Pass)
	return rep, nil
}

// verifyNBD serves spec's instant, read-only, as NBD on the connection
// the caller passed (the VM of verify --boot), until it closes. Whatever
// export the client asks for, it gets this one.
func (d *daemon) verifyNBD(ctx context.Context, spec string) (any, error) {
	f := api.PassedFile(ctx)
	if f == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "POST /v1/verify/nbd serves the connection passed with the call, and none was")
	}
	t, err := d.pin(spec)
	if err != nil {
		f.Close()
		return nil, err
	}
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: the passed descriptor is not a connection: %v", catalog.ErrInvalid, err)
	}
	srv := &nbd.Server{Resolver: pinnedExport{x: d.exports, spec: t.Spec}, Logger: d.log, ReplyTimeout: -1}
	d.log.Info("verify: serving a VM's disk", "spec", t.Spec)
	err = srv.ServeConn(ctx, nc)
	d.log.Info("verify: the VM's disk is closed", "spec", t.Spec, "err", err)
	return t, nil
}

// pinnedExport serves one read-only instant under any name.
type pinnedExport struct {
	x    *exports
	spec string
}

func (p pinnedExport) Open(ctx context.Context, _ string) (*nbd.Export, error) {
	ex, err := p.x.Open(ctx, p.spec)
	if err != nil {
		return nil, err
	}
	ex.ReadOnly = true
	return ex, nil
}

func (p pinnedExport) List(context.Context) ([]nbd.ExportInfo, error) {
	return []nbd.ExportInfo{{Name: p.spec, Description: "the instant rewind verify --boot starts"}}, nil
}
