package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
)

// gcSchedule runs a garbage collection every interval while the daemon
// serves, and reports each run to the log and to metrics. The gauges of
// the last collection read the record any run leaves (rewind gc too).
type gcSchedule struct {
	runs, failures, removed, freed prometheus.Counter
}

func newGCSchedule(reg *prometheus.Registry, svc *catalog.Service) *gcSchedule {
	g := &gcSchedule{
		runs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_gc_runs_total", Help: "Scheduled garbage collections run (serve --gc-every)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_gc_failures_total", Help: "Scheduled garbage collections that failed (the log says why)."}),
		removed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_gc_removed_chunks_total", Help: "Chunks scheduled garbage collections removed."}),
		freed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_gc_freed_bytes_total", Help: "Pack bytes scheduled garbage collections gave back to the filesystem."}),
	}
	last := func(f func(*catalog.GCResult) float64) func() float64 {
		return func() float64 {
			if r := svc.LastGC(); r != nil {
				return f(r)
			}
			return 0
		}
	}
	reg.MustRegister(g.runs, g.failures, g.removed, g.freed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_gc_last_run_timestamp_seconds", Help: "When the last garbage collection ended (0: none yet)."},
			last(func(r *catalog.GCResult) float64 { return float64(r.Time) / 1e9 })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_gc_last_freed_bytes", Help: "Pack bytes the last garbage collection gave back."},
			last(func(r *catalog.GCResult) float64 { return float64(r.FreedBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_gc_last_removed_chunks", Help: "Chunks the last garbage collection removed."},
			last(func(r *catalog.GCResult) float64 { return float64(r.Removed) })),
	)
	return g
}

// run is one round, run by daemon.every.
func (g *gcSchedule) run(ctx context.Context, d *daemon) {
	res, err := d.svc.GC(ctx, catalog.GCRequest{})
	if errors.Is(err, catalog.ErrConflict) {
		return // rewind gc or verify is running
	}
	g.runs.Inc()
	if err != nil {
		if ctx.Err() == nil {
			g.failures.Inc()
			d.log.Warn("scheduled gc", "err", err)
		}
		return
	}
	g.removed.Add(float64(res.Removed))
	g.freed.Add(float64(res.FreedBytes))
	d.log.Info("collected garbage", "removed_chunks", res.Removed, "freed_bytes", res.FreedBytes,
		"packs_rewritten", res.PacksRewritten, "packs_removed", res.PacksRemoved, "seconds", res.Seconds)
}
