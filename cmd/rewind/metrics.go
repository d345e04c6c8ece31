package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/nbd"
)

// nbdMetrics reports NBD traffic to Prometheus.
type nbdMetrics struct {
	conns    *prometheus.GaugeVec
	opened   *prometheus.CounterVec
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

var _ nbd.Metrics = (*nbdMetrics)(nil)

func newNBDMetrics(reg prometheus.Registerer) *nbdMetrics {
	m := &nbdMetrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rewind_nbd_connections",
			Help: "NBD connections open now, by export."}, []string{"export"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_connections_total",
			Help: "NBD connections opened, by export."}, []string{"export"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_requests_total",
			Help: "NBD requests answered, by export, command and result."}, []string{"export", "cmd", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_bytes_total",
			Help: "Bytes NBD requests asked for, by export and command."}, []string{"export", "cmd"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rewind_nbd_request_seconds",
			Help:    "NBD request latency, from request to reply, by export and command.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2.5, 14)}, []string{"export", "cmd"}),
	}
	reg.MustRegister(m.conns, m.opened, m.requests, m.bytes, m.latency)
	return m
}

func (m *nbdMetrics) ConnOpened(export string) {
	m.conns.WithLabelValues(export).Inc()
	m.opened.WithLabelValues(export).Inc()
}

func (m *nbdMetrics) ConnClosed(export string) { m.conns.WithLabelValues(export).Dec() }

func (m *nbdMetrics) Request(export, cmd string, bytes int64, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.requests.WithLabelValues(export, cmd, result).Inc()
	m.bytes.WithLabelValues(export, cmd).Add(float64(bytes))
	m.latency.WithLabelValues(export, cmd).Observe(d.Seconds())
}
