package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/catalog"
)

// checkReplicate validates the --replicate-* flags before anything
// starts, and sets --replicate-every's default.
func (c *serveCmd) checkReplicate() error {
	if c.ReplicateTo == "" {
		for _, f := range [][2]string{{"--replicate-endpoint", c.ReplicateEndpoint}, {"--replicate-window", c.ReplicateWindow}} {
			if f[1] != "" {
				return fmt.Errorf("%s goes with --replicate-to: add --replicate-to URL, or drop %s", f[0], f[0])
			}
		}
		if c.ReplicateEvery != 0 || c.ReplicateBWLimit != 0 {
			return errors.New("--replicate-every and --replicate-bwlimit go with --replicate-to: add --replicate-to URL, or drop them")
		}
		return nil
	}
	c.ReplicateTo = absPath(c.ReplicateTo)
	if _, err := catalog.ParseWindow(c.ReplicateWindow); err != nil {
		return fmt.Errorf("--replicate-window: %w", err)
	}
	switch {
	case c.ReplicateEvery < 0:
		return fmt.Errorf("--replicate-every %v is negative: give a duration such as 1h", c.ReplicateEvery)
	case c.ReplicateEvery == 0:
		c.ReplicateEvery = time.Hour
	}
	return nil
}

// replicateSchedule replicates the store every interval while the daemon
// serves (serve --replicate-to), inside its window, and reports each run
// to the log and to metrics. The lag reads what any run to the same
// target left (rewind replicate too).
type replicateSchedule struct {
	req                  catalog.ReplicateRequest
	win                  catalog.Window
	sent, runs, failures prometheus.Counter
	last                 prometheus.Gauge
}

func newReplicateSchedule(reg *prometheus.Registry, svc *catalog.Service, c *serveCmd) *replicateSchedule {
	win, _ := catalog.ParseWindow(c.ReplicateWindow) // checked by checkReplicate
	r := &replicateSchedule{
		req: catalog.ReplicateRequest{To: c.ReplicateTo, Endpoint: c.ReplicateEndpoint, BWLimit: int64(c.ReplicateBWLimit), Window: c.ReplicateWindow},
		win: win,
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_replicate_bytes_sent_total",
			Help: "Bytes scheduled replications sent to the target (serve --replicate-to)."}),
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_replicate_runs_total",
			Help: "Scheduled replications run."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_replicate_failures_total",
			Help: "Scheduled replications that failed (the log says why)."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rewind_replicate_last_run_timestamp_seconds",
			Help: "When the last scheduled replication ended (0: none yet)."}),
	}
	reg.MustRegister(r.sent, r.runs, r.failures, r.last,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_replicate_lag_seconds",
			Help: "How far the target is behind: now minus the time of the newest snapshot that fully arrived (-1: none yet)."},
			func() float64 {
				t, ok := svc.LastReplicated(c.ReplicateTo)
				if !ok {
					return -1
				}
				return time.Since(t).Seconds()
			}))
	return r
}

// run is one round, run by daemon.every.
func (r *replicateSchedule) run(ctx context.Context, d *daemon) {
	if !r.win.Open(time.Now()) {
		return
	}
	res, err := d.svc.Replicate(ctx, r.req, nil)
	if errors.Is(err, catalog.ErrConflict) && ctx.Err() == nil {
		d.log.Info("scheduled replication skipped", "reason", err)
		return
	}
	r.runs.Inc()
	r.last.SetToCurrentTime()
	if err != nil {
		if ctx.Err() == nil {
			r.failures.Inc()
			d.log.Warn("scheduled replication", "to", r.req.To, "err", err)
		}
		return
	}
	r.sent.Add(float64(res.BytesSent))
	d.log.Info("replicated", "to", res.To, "complete", res.Complete, "bytes_sent", res.BytesSent, "parts_sent", res.PartsSent,
		"parts_skipped", res.PartsSkipped, "seconds", res.Seconds, "lag_seconds", res.LagSeconds, "stopped", res.Stopped)
}
