package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
)

// verifySchedule scrubs the store every interval while the daemon
// serves (a verify job), repairing what parity rebuilds, and logs what
// damage touches. Its gauges, and parity's counters, are registered
// whether or not it runs.
type verifySchedule struct {
	runs, failures prometheus.Counter
}

func newVerifySchedule(reg *prometheus.Registry, svc *catalog.Service) *verifySchedule {
	v := &verifySchedule{
		runs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_verify_runs_total", Help: "Scheduled verify jobs run (serve --verify-every)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_verify_failures_total", Help: "Scheduled verify jobs that could not run to the end (the log says why)."}),
	}
	last := func(f func(*catalog.VerifyResult) float64) func() float64 {
		return func() float64 {
			if r := svc.LastVerify(); r != nil {
				return f(r)
			}
			return 0
		}
	}
	reg.MustRegister(v.runs, v.failures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_verify_last_run_timestamp_seconds", Help: "When the last verify ended (0: none yet)."},
			last(func(r *catalog.VerifyResult) float64 { return float64(r.Time) / 1e9 })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_verify_last_lost_chunks", Help: "Chunks the last verify found lost beyond repair."},
			last(func(r *catalog.VerifyResult) float64 { return float64(r.LostChunks) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_verify_last_repaired_units", Help: "Damaged units the last verify rebuilt from parity."},
			last(func(r *catalog.VerifyResult) float64 { return float64(r.Repaired) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_parity_repaired_units_total", Help: "Damaged units rebuilt from parity and rewritten (by reads and verify) since the daemon started."},
			func() float64 { return float64(svc.ParityStats().Repaired) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_parity_pending_packs", Help: "Sealed packs waiting for their parity."},
			func() float64 { return float64(svc.ParityStats().Pending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_chunks_damaged", Help: "Chunks known damaged beyond repair (reads of them fail until the data is stored again)."},
			func() float64 { return float64(svc.ParityStats().Damaged) }),
	)
	return v
}

// run is one round, run by daemon.every.
func (v *verifySchedule) run(ctx context.Context, d *daemon) {
	res, err := d.svc.Verify(ctx, catalog.VerifyRequest{Repair: true}, nil)
	v.runs.Inc()
	if err != nil {
		if ctx.Err() == nil {
			v.failures.Inc()
			d.log.Warn("scheduled verify", "err", err)
		}
		return
	}
	if res.Repaired > 0 {
		d.log.Warn("verify rebuilt damaged units from parity", "units", res.Repaired)
	}
	for _, a := range res.Affected {
		d.log.Error("verify: chunks lost beyond repair", "volume", a.Volume, "block_versions", a.BlockVersions,
			"first", a.First.String(), "last", a.Last.String(), "via", a.Via)
	}
	if !res.OK && len(res.Affected) == 0 {
		d.log.Error("verify: chunks lost beyond repair (no version reads them)", "chunks", res.LostChunks)
	}
}
