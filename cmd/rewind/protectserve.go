package main

import (
	"net/http"
	"net/url"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/protect"
)

// ProtectRequest is POST /v1/protections (rewind protect). The primary
// travels as a descriptor beside it.
type ProtectRequest struct {
	Volume  string `json:"volume"`
	Primary string `json:"primary,omitempty"`
	Size    int64  `json:"size,omitempty"`
}

// protectionRoutes are /v1/protections.
func (d *daemon) protectionRoutes() []api.Route {
	volume := func(r *http.Request) string { return r.PathValue("volume") }
	return []api.Route{
		{Method: "GET", Pattern: "/v1/protections", Answer: []protect.Status{},
			Handler: api.OK(func(*http.Request) (any, error) { return d.exports.prot.List(), nil })},
		{Method: "POST", Pattern: "/v1/protections", Body: ProtectRequest{}, Answer: protect.Status{},
			Handler: api.Created(func(r *http.Request) (any, string, error) {
				st, err := d.protect(r)
				if err != nil {
					return nil, "", err
				}
				return st, "/v1/protections/" + url.PathEscape(st.Name), nil
			})},
		{Method: "GET", Pattern: "/v1/protections/{volume}", Answer: protect.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) {
				for _, s := range d.exports.prot.List() {
					if s.Name == volume(r) {
						return s, nil
					}
				}
				return nil, catalog.Errorf(catalog.ErrNotFound, "%s is not protected (rewind protect status lists the protections)", volume(r))
			})},
		{Method: "DELETE", Pattern: "/v1/protections/{volume}", Answer: protect.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) { return d.exports.prot.Unprotect(volume(r)) })},
	}
}

// protect starts a protection. The primary comes as a descriptor the
// caller opened on the local socket; over --http there is none, and the
// call is refused (the daemon opens no path for a caller).
func (d *daemon) protect(r *http.Request) (*protect.Status, error) {
	return withPassedFile(r, func(req ProtectRequest, f *os.File) (*protect.Status, error) {
		return d.exports.prot.Protect(r.Context(), protect.Request{Volume: req.Volume, Primary: req.Primary, Size: req.Size, File: f})
	})
}

// protectCollector reports every protection to Prometheus, read at each
// scrape.
type protectCollector struct{ prot *protect.Manager }

var (
	protWrites  = prometheus.NewDesc("rewind_protect_writes_total", "Writes (zeroing included) recorded and written to the primary since the daemon started serving it.", []string{"volume"}, nil)
	protBytes   = prometheus.NewDesc("rewind_protect_written_bytes_total", "Bytes written through the protection since the daemon started serving it.", []string{"volume"}, nil)
	protFlushes = prometheus.NewDesc("rewind_protect_flushes_total", "Flushes of the timeline and the primary.", []string{"volume"}, nil)
	protErrors  = prometheus.NewDesc("rewind_protect_errors_total", "Requests that failed: not recorded, or refused by the primary.", []string{"volume"}, nil)
	protGrouped = prometheus.NewDesc("rewind_protect_grouped_writes_total", "Writes recorded together with others that arrived meanwhile (one pack write and one commit for the group).", []string{"volume"}, nil)
	protQueued  = prometheus.NewDesc("rewind_protect_queued_writes", "Small writes acknowledged and not recorded in the timeline yet (recorded behind their replies; a FLUSH waits for them).", []string{"volume"}, nil)
	protUp      = prometheus.NewDesc("rewind_protect_up", "1 while the protection is served, 0 when it failed to resume or is resuming.", []string{"volume"}, nil)
	protResume  = prometheus.NewDesc("rewind_protect_resuming", "1 while the start compares the primary with the timeline after an unclean stop (not served yet).", []string{"volume"}, nil)
	protCompare = prometheus.NewDesc("rewind_protect_compare_offset_bytes", "How far through the volume that comparison is.", []string{"volume"}, nil)
)

func (c protectCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{protWrites, protBytes, protFlushes, protErrors, protGrouped, protQueued, protUp, protResume, protCompare} {
		ch <- d
	}
}

func (c protectCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.prot.List() {
		ch <- prometheus.MustNewConstMetric(protWrites, prometheus.CounterValue, float64(s.Writes), s.Name)
		ch <- prometheus.MustNewConstMetric(protBytes, prometheus.CounterValue, float64(s.Written), s.Name)
		ch <- prometheus.MustNewConstMetric(protFlushes, prometheus.CounterValue, float64(s.Flushes), s.Name)
		ch <- prometheus.MustNewConstMetric(protErrors, prometheus.CounterValue, float64(s.Errors), s.Name)
		ch <- prometheus.MustNewConstMetric(protGrouped, prometheus.CounterValue, float64(s.Grouped), s.Name)
		ch <- prometheus.MustNewConstMetric(protQueued, prometheus.GaugeValue, float64(s.Queued), s.Name)
		up := 0.0
		if s.State == protect.StateProtected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(protUp, prometheus.GaugeValue, up, s.Name)
		resuming := 0.0
		if s.State == protect.StateResuming {
			resuming = 1
		}
		ch <- prometheus.MustNewConstMetric(protResume, prometheus.GaugeValue, resuming, s.Name)
		ch <- prometheus.MustNewConstMetric(protCompare, prometheus.GaugeValue, float64(s.CompareOffset), s.Name)
	}
}
