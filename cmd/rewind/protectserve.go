package main

import (
	"context"
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/protect"
)

// ProtectRequest is rewind protect and unprotect, sent to the daemon.
// The primary travels as a descriptor beside it.
type ProtectRequest struct {
	Volume  string `json:"volume"`
	Primary string `json:"primary,omitempty"`
	Size    int64  `json:"size,omitempty"`
}

func decodeProtect(body json.RawMessage) (ProtectRequest, error) {
	return decodeBody[ProtectRequest](body)
}

// protect starts a protection. The primary comes as a descriptor the
// caller opened on the local socket; over --http there is none, and the
// call is refused (the daemon opens no path for a caller).
func (d *daemon) protect(ctx context.Context, body json.RawMessage) (any, error) {
	f := api.PassedFile(ctx)
	r, err := decodeProtect(body)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	return d.exports.prot.Protect(ctx, protect.Request{Volume: r.Volume, Primary: r.Primary, Size: r.Size, File: f})
}

func (d *daemon) unprotect(_ context.Context, body json.RawMessage) (any, error) {
	r, err := decodeProtect(body)
	if err != nil {
		return nil, err
	}
	return d.exports.prot.Unprotect(r.Volume)
}

func (d *daemon) protectStatus(_ context.Context, _ json.RawMessage) (any, error) {
	return d.exports.prot.List(), nil
}

// protectCollector reports every protection to Prometheus, read at each
// scrape.
type protectCollector struct{ prot *protect.Manager }

var (
	protWrites  = prometheus.NewDesc("rewind_protect_writes_total", "Writes (zeroing included) recorded and written to the primary since the daemon started serving it.", []string{"volume"}, nil)
	protBytes   = prometheus.NewDesc("rewind_protect_written_bytes_total", "Bytes written through the protection since the daemon started serving it.", []string{"volume"}, nil)
	protFlushes = prometheus.NewDesc("rewind_protect_flushes_total", "Flushes of the timeline and the primary.", []string{"volume"}, nil)
	protErrors  = prometheus.NewDesc("rewind_protect_errors_total", "Requests that failed: not recorded, or refused by the primary.", []string{"volume"}, nil)
	protUp      = prometheus.NewDesc("rewind_protect_up", "1 while the protection is served, 0 when it failed to resume.", []string{"volume"}, nil)
)

func (c protectCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{protWrites, protBytes, protFlushes, protErrors, protUp} {
		ch <- d
	}
}

func (c protectCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.prot.List() {
		ch <- prometheus.MustNewConstMetric(protWrites, prometheus.CounterValue, float64(s.Writes), s.Name)
		ch <- prometheus.MustNewConstMetric(protBytes, prometheus.CounterValue, float64(s.Written), s.Name)
		ch <- prometheus.MustNewConstMetric(protFlushes, prometheus.CounterValue, float64(s.Flushes), s.Name)
		ch <- prometheus.MustNewConstMetric(protErrors, prometheus.CounterValue, float64(s.Errors), s.Name)
		up := 0.0
		if s.State == protect.StateProtected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(protUp, prometheus.GaugeValue, up, s.Name)
	}
}
