package main

import (
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/recovery"
)

// RecoverRequest is POST /v1/recoveries (rewind recover). The target
// file or device, when there is one, travels as a descriptor beside it.
type RecoverRequest struct {
	From    string `json:"from"` // VOLUME@WHEN
	Target  string `json:"target"`
	As      string `json:"as,omitempty"`
	Limit   int64  `json:"bwlimit,omitempty"`
	Created bool   `json:"created,omitempty"`
}

// RecoverLimit is PATCH /v1/recoveries/{name} (rewind recover bwlimit).
type RecoverLimit struct {
	Limit int64 `json:"bwlimit"`
}

// RecoverRetry is POST /v1/recoveries/{name}/retry (rewind recover
// retry): the target to copy into now, as in RecoverRequest, a new
// bandwidth limit if not null, and whether to go on from the saved
// progress (into the same target) instead of the beginning.
type RecoverRetry struct {
	Target  string `json:"target"`
	Limit   *int64 `json:"bwlimit,omitempty"`
	Created bool   `json:"created,omitempty"`
	Resume  bool   `json:"resume,omitempty"`
}

// recoveryRoutes are /v1/recoveries.
func (d *daemon) recoveryRoutes() []api.Route {
	name := func(r *http.Request) string { return r.PathValue("name") }
	return []api.Route{
		{Method: "GET", Pattern: "/v1/recoveries", Answer: []recovery.Status{},
			Handler: api.OK(func(*http.Request) (any, error) { return d.exports.rec.List(), nil })},
		{Method: "POST", Pattern: "/v1/recoveries", Body: RecoverRequest{}, Answer: recovery.Status{},
			Handler: api.Created(func(r *http.Request) (any, string, error) {
				st, err := d.recover(r)
				if err != nil {
					return nil, "", err
				}
				return st, recoveryPath(st.Name), nil
			})},
		{Method: "GET", Pattern: "/v1/recoveries/{name}", Answer: recovery.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) {
				for _, s := range d.exports.rec.List() {
					if s.Name == name(r) {
						return s, nil
					}
				}
				return nil, catalog.Errorf(catalog.ErrNotFound, "no recovery of a volume named %s (see GET /v1/recoveries)", name(r))
			})},
		{Method: "PATCH", Pattern: "/v1/recoveries/{name}", Body: RecoverLimit{}, Answer: recovery.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) {
				req, err := api.Decode[RecoverLimit](r)
				if err != nil {
					return nil, err
				}
				return d.exports.rec.SetLimit(name(r), req.Limit)
			})},
		{Method: "POST", Pattern: "/v1/recoveries/{name}/cutover", Answer: recovery.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) { return d.exports.rec.Cutover(r.Context(), name(r)) })},
		{Method: "POST", Pattern: "/v1/recoveries/{name}/retry", Body: RecoverRetry{}, Answer: recovery.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) { return d.retryRecovery(r, name(r)) })},
		{Method: "DELETE", Pattern: "/v1/recoveries/{name}", Answer: recovery.Status{},
			Handler: api.OK(func(r *http.Request) (any, error) { return d.exports.rec.Cancel(name(r)) })},
	}
}

// recover starts a recovery. Over the local socket a file target comes
// as a descriptor the caller opened; over --http only nbd:// targets
// are taken (the daemon opens no path for a caller).
func (d *daemon) recover(r *http.Request) (*recovery.Status, error) {
	return withPassedFile(r, func(req RecoverRequest, f *os.File) (*recovery.Status, error) {
		return d.exports.rec.Start(r.Context(), recovery.Request{Spec: req.From, Target: req.Target, As: req.As, Limit: req.Limit,
			File: f, Created: req.Created})
	})
}

// retryRecovery starts a failed or cancelled copy again; the target
// travels as recover's does.
func (d *daemon) retryRecovery(r *http.Request, name string) (*recovery.Status, error) {
	return withPassedFile(r, func(req RecoverRetry, f *os.File) (*recovery.Status, error) {
		if req.Limit != nil && *req.Limit < 0 {
			return nil, catalog.Errorf(catalog.ErrInvalid, "a negative bandwidth limit")
		}
		return d.exports.rec.Retry(r.Context(), name, recovery.RetryRequest{Target: req.Target, File: f, Created: req.Created,
			Limit: req.Limit, Resume: req.Resume})
	})
}

// recoveryCollector reports every recovery to Prometheus, read at each
// scrape.
type recoveryCollector struct{ rec *recovery.Manager }

var (
	recTotal  = prometheus.NewDesc("rewind_recovery_size_bytes", "Size of the recovered volume.", []string{"volume"}, nil)
	recDone   = prometheus.NewDesc("rewind_recovery_done_bytes", "Bytes of the recovered volume known to be on the target.", []string{"volume"}, nil)
	recDirty  = prometheus.NewDesc("rewind_recovery_dirty_bytes", "Bytes still to copy to the target.", []string{"volume"}, nil)
	recCopied = prometheus.NewDesc("rewind_recovery_copied_bytes_total", "Bytes the copier wrote to the target since the daemon started it, rewrites included.", []string{"volume"}, nil)
	recRate   = prometheus.NewDesc("rewind_recovery_rate_bytes_per_second", "Average copy rate since the daemon started the copy.", []string{"volume"}, nil)
	recLimit  = prometheus.NewDesc("rewind_recovery_bwlimit_bytes_per_second", "The copy's bandwidth limit (0: none).", []string{"volume"}, nil)
	recState  = prometheus.NewDesc("rewind_recovery_state", "1 for the recovery's state: copying, converged, cut over, failed or cancelled.", []string{"volume", "state"}, nil)
)

func (c recoveryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{recTotal, recDone, recDirty, recCopied, recRate, recLimit, recState} {
		ch <- d
	}
}

func (c recoveryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.rec.List() {
		ch <- prometheus.MustNewConstMetric(recTotal, prometheus.GaugeValue, float64(s.Total), s.Name)
		ch <- prometheus.MustNewConstMetric(recDone, prometheus.GaugeValue, float64(s.Done), s.Name)
		ch <- prometheus.MustNewConstMetric(recDirty, prometheus.GaugeValue, float64(s.Dirty), s.Name)
		ch <- prometheus.MustNewConstMetric(recCopied, prometheus.CounterValue, float64(s.Copied), s.Name)
		ch <- prometheus.MustNewConstMetric(recRate, prometheus.GaugeValue, s.Rate, s.Name)
		ch <- prometheus.MustNewConstMetric(recLimit, prometheus.GaugeValue, float64(s.Limit), s.Name)
		for _, st := range []string{recovery.StateCopying, recovery.StateConverged, recovery.StateCutOver, recovery.StateFailed, recovery.StateCancelled} {
			v := 0.0
			if s.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(recState, prometheus.GaugeValue, v, s.Name, st)
		}
	}
}
