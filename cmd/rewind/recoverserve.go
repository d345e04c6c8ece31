package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/recovery"
)

// RecoverRequest is rewind recover and its subcommands, sent to the
// daemon. The target file or device, when there is one, travels as a
// descriptor beside it.
type RecoverRequest struct {
	Spec    string `json:"spec,omitempty"`
	Target  string `json:"target,omitempty"`
	As      string `json:"as,omitempty"`
	Limit   int64  `json:"bwlimit,omitempty"`
	Created bool   `json:"created,omitempty"`
	Name    string `json:"name,omitempty"`
}

// decodeBody decodes a daemon call's JSON body (empty: the zero value).
func decodeBody[T any](body json.RawMessage) (T, error) {
	var r T
	if len(body) > 0 {
		if err := json.Unmarshal(body, &r); err != nil {
			return r, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err)
		}
	}
	return r, nil
}

func decodeRecover(body json.RawMessage) (RecoverRequest, error) {
	return decodeBody[RecoverRequest](body)
}

// recover starts a recovery. Over the local socket a file target comes
// as a descriptor the caller opened; over --http only nbd:// targets
// are taken (the daemon opens no path for a caller).
func (d *daemon) recover(ctx context.Context, body json.RawMessage) (any, error) {
	f := api.PassedFile(ctx)
	r, err := decodeRecover(body)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	st, err := d.exports.rec.Start(ctx, recovery.Request{Spec: r.Spec, Target: r.Target, As: r.As, Limit: r.Limit,
		File: f, Created: r.Created})
	if err != nil && f != nil {
		f.Close() // Start owns it only on success
	}
	return st, err
}

func (d *daemon) recoverStatus(_ context.Context, body json.RawMessage) (any, error) {
	r, err := decodeRecover(body)
	if err != nil {
		return nil, err
	}
	all := d.exports.rec.List()
	if r.Name == "" {
		return all, nil
	}
	for _, s := range all {
		if s.Name == r.Name {
			return []recovery.Status{s}, nil
		}
	}
	return nil, fmt.Errorf("%w: no recovery of a volume named %s", catalog.ErrNotFound, r.Name)
}

func (d *daemon) recoverCutover(ctx context.Context, body json.RawMessage) (any, error) {
	r, err := decodeRecover(body)
	if err != nil {
		return nil, err
	}
	return d.exports.rec.Cutover(ctx, r.Name)
}

func (d *daemon) recoverCancel(_ context.Context, body json.RawMessage) (any, error) {
	r, err := decodeRecover(body)
	if err != nil {
		return nil, err
	}
	return d.exports.rec.Cancel(r.Name)
}

func (d *daemon) recoverLimit(_ context.Context, body json.RawMessage) (any, error) {
	r, err := decodeRecover(body)
	if err != nil {
		return nil, err
	}
	return d.exports.rec.SetLimit(r.Name, r.Limit)
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
