package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
)

// pruneSchedule runs prune over every volume with a retention policy
// every interval, while the daemon serves, and reports each run to the
// log and to metrics.
type pruneSchedule struct {
	runs, removed, blocks, failures prometheus.Counter
	last                            prometheus.Gauge
}

func newPruneSchedule(reg *prometheus.Registry) *pruneSchedule {
	p := &pruneSchedule{
		runs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_prune_runs_total", Help: "Scheduled prunes run (serve --prune-every)."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_prune_failures_total", Help: "Scheduled prunes that failed (the log says why)."}),
		removed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_prune_removed_versions_total", Help: "Versions scheduled prunes removed."}),
		blocks:   prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_prune_removed_block_versions_total", Help: "Block versions scheduled prunes deleted."}),
		last:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "rewind_prune_last_run_timestamp_seconds", Help: "When the last scheduled prune ended (0: none yet)."}),
	}
	reg.MustRegister(p.runs, p.failures, p.removed, p.blocks, p.last)
	return p
}

// run is one round, run by daemon.every.
func (p *pruneSchedule) run(ctx context.Context, d *daemon) {
	res, err := d.svc.Prune(ctx, catalog.PruneRequest{})
	p.runs.Inc()
	p.last.SetToCurrentTime()
	if err != nil {
		p.failures.Inc()
		d.log.Warn("scheduled prune", "err", err)
	}
	for _, r := range res {
		p.removed.Add(float64(r.Removed))
		p.blocks.Add(float64(r.Blocks))
		if r.Removed > 0 {
			d.log.Info("pruned by the volume's retention policy", "volume", r.Volume, "removed", r.Removed,
				"kept", r.Kept, "block_versions", r.Blocks)
		}
	}
}
