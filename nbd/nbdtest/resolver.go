package nbdtest

import (
	"context"
	"fmt"
	"sync"

	"github.com/rewind-dev/rewind/nbd"
)

// Resolver serves a fixed set of exports and counts opens and releases.
// Open returns a copy of the registered export whose Release is counted
// (and calls the registered Release, if any).
type Resolver struct {
	mu struct {
		sync.Mutex
		exports  map[string]*nbd.Export
		order    []string
		opens    map[string]int
		releases map[string]int
	}
}

var _ nbd.Resolver = (*Resolver)(nil)

// NewResolver returns a Resolver serving exports by their names.
func NewResolver(exports ...*nbd.Export) *Resolver {
	r := &Resolver{}
	r.mu.exports = make(map[string]*nbd.Export)
	r.mu.opens = make(map[string]int)
	r.mu.releases = make(map[string]int)
	for _, e := range exports {
		r.mu.exports[e.Name] = e
		r.mu.order = append(r.mu.order, e.Name)
	}
	return r
}

func (r *Resolver) Open(ctx context.Context, name string) (*nbd.Export, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.mu.exports[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", nbd.ErrUnknownExport, name)
	}
	r.mu.opens[name]++
	cp := *e
	cp.Release = func() {
		r.mu.Lock()
		r.mu.releases[name]++
		r.mu.Unlock()
		if e.Release != nil {
			e.Release()
		}
	}
	return &cp, nil
}

func (r *Resolver) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var list []nbd.ExportInfo
	for _, name := range r.mu.order {
		list = append(list, nbd.ExportInfo{Name: name, Description: r.mu.exports[name].Description})
	}
	return list, nil
}

// Opens returns how often name was opened.
func (r *Resolver) Opens(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.opens[name]
}

// Releases returns how often an export opened as name was released.
func (r *Resolver) Releases(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.releases[name]
}

// TotalOpens returns the number of Open calls that succeeded.
func (r *Resolver) TotalOpens() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.mu.opens {
		n += v
	}
	return n
}
