package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/protect"
	"github.com/rewind-dev/rewind/catalog/recovery"
	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/timeline"
)

// exports resolves NBD export names to timeline views and counts what is
// being served, so that rewind volume rm can refuse.
type exports struct {
	svc  *catalog.Service
	rec  *recovery.Manager // recovered volumes are served through their Disk
	prot *protect.Manager  // and protected ones through theirs
	mu   struct {
		sync.Mutex
		served map[string]int // volume -> open exports
	}
}

var _ nbd.Resolver = (*exports)(nil)

func newExports(svc *catalog.Service) *exports {
	x := &exports{svc: svc}
	x.mu.served = map[string]int{}
	return x
}

func (x *exports) inUse(volume string) bool {
	x.mu.Lock()
	served := x.mu.served[volume] > 0
	x.mu.Unlock()
	return served || (x.rec != nil && x.rec.Busy(volume)) || (x.prot != nil && x.prot.Busy(volume))
}

// protecting returns the Disk of a protected volume named bare, or nil;
// an error for one not served yet (its start compares its primary with
// its timeline after an unclean stop), which is not served in the
// Disk's place either.
func (x *exports) protecting(name string) (*protect.Disk, error) {
	if x.prot == nil {
		return nil, nil
	}
	return x.prot.Serve(name)
}

// recovering returns the Disk of a recovered volume named bare, or nil.
func (x *exports) recovering(name string) *recovery.Disk {
	if x.rec == nil {
		return nil
	}
	return x.rec.Disk(name)
}

func (x *exports) hold(volume string, delta int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.mu.served[volume] += delta
}

// Open serves VOLUME@WHEN read-only, VOLUME as a clone's writable head or
// the newest version of any other volume.
func (x *exports) Open(_ context.Context, name string) (*nbd.Export, error) {
	if d := x.recovering(name); d != nil {
		return x.diskExport(name, "instant recovery", d, d.BlockSize()), nil
	}
	if d, err := x.protecting(name); err != nil {
		return nil, err
	} else if d != nil {
		return x.diskExport(name, "protected: every write recorded", d, d.BlockSize()), nil
	}
	view, err := x.svc.OpenView(name)
	if err != nil {
		if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadName) || errors.Is(err, catalog.ErrBadWhen) {
			return nil, fmt.Errorf("%w: %v", nbd.ErrUnknownExport, err)
		}
		return nil, err
	}
	vol, _, _ := strings.Cut(name, "@")
	x.hold(vol, 1)
	m, _ := view.Volume()
	label := vol // the volume as named, which resolved; metrics name it
	if m != nil {
		label = m.Name
	}
	desc := fmt.Sprintf("%s as of %s", vol, catalog.Time(view.Time()))
	if view.Writable() {
		desc = fmt.Sprintf("%s (writable clone of %s)", vol, m.Name)
	}
	bare := !strings.Contains(name, "@")
	return &nbd.Export{
		Name:        name,
		Description: desc,
		Backend:     viewBackend{view},
		ReadOnly:    !view.Writable(),
		BlockSize:   uint32(view.BlockSize()),
		// Views at an instant never change and a clone's head is one
		// shared state, so every connection sees the same disk. A bare
		// name of an imported volume is its newest version when opened,
		// which a later import can change between connections.
		MultiConn:   !bare || view.Writable(),
		MetricsName: label,
		Release: func() {
			view.Close()
			x.hold(vol, -1)
		},
	}, nil
}

// diskExport serves a daemon job's Disk (a recovery's, a protection's):
// one Backend behind every connection to the name, counted as served.
func (x *exports) diskExport(name, what string, d nbd.Backend, blockSize int64) *nbd.Export {
	x.hold(name, 1)
	return &nbd.Export{
		Name:        name,
		Description: fmt.Sprintf("%s (%s)", name, what),
		Backend:     d,
		BlockSize:   uint32(blockSize),
		MultiConn:   true,
		MetricsName: name,
		Release:     func() { x.hold(name, -1) },
	}
}

// List shows every volume and each of its recovery points.
func (x *exports) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	vols, err := x.svc.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	var out []nbd.ExportInfo
	for _, v := range vols {
		desc := fmt.Sprintf("%s volume, %d bytes, %s to %s", v.Kind, v.Size, v.First, v.Last)
		out = append(out, nbd.ExportInfo{Name: v.Name, Description: desc})
		points, err := x.svc.Points(ctx, v.Name)
		if err != nil {
			return nil, err
		}
		for _, p := range points {
			out = append(out, nbd.ExportInfo{Name: v.Name + "@" + p.Label, Description: "recovery point at " + p.Time.String()})
		}
	}
	return out, nil
}

// viewBackend serves a timeline view over NBD.
type viewBackend struct{ *timeline.View }

func (b viewBackend) Extents(off, n int64) ([]nbd.Extent, error) {
	ex, err := b.View.Extents(off, n)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.Extent, len(ex))
	for i, e := range ex {
		out[i] = nbd.Extent{Offset: e.Offset, Length: e.Length, Hole: e.Hole}
	}
	return out, nil
}

// FastZero: zeroing whole blocks only writes hole markers.
func (b viewBackend) FastZero(off, n int64) bool {
	bs := b.View.BlockSize()
	return b.View.Writable() && off%bs == 0 && n%bs == 0
}
