package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rewind-dev/rewind/blockstore/remote"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/nbd"
)

// nbdMetrics reports NBD traffic to Prometheus. Series are labelled by
// volume (the export's MetricsName), never by the name a client sent:
// VOLUME@WHEN takes any instant, and a client could otherwise add series
// without end. Names that resolve to nothing are only counted.
type nbdMetrics struct {
	conns    *prometheus.GaugeVec
	opened   *prometheus.CounterVec
	refused  *prometheus.CounterVec
	unknown  prometheus.Counter
	held     prometheus.Gauge
	waiting  prometheus.Gauge
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// Each request's series by volume and command, looked up once: a
	// lookup by label values hashes and checks them all, three times a
	// request, a few percent of the daemon's CPU at 40,000 requests a
	// second. It holds at most volumes x commands entries.
	series sync.Map // requestKey → *requestSeries
}

type requestKey struct{ volume, cmd string }

type requestSeries struct {
	ok, bytes prometheus.Counter
	latency   prometheus.Observer
}

var _ nbd.Metrics = (*nbdMetrics)(nil)

func newNBDMetrics(reg prometheus.Registerer) *nbdMetrics {
	m := &nbdMetrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rewind_nbd_connections",
			Help: "NBD connections open now, by volume."}, []string{"export"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_connections_total",
			Help: "NBD connections opened, by volume."}, []string{"export"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_connections_refused_total",
			Help: "NBD connections closed on arrival, by limit reached (server_limit: --max-conns, client_limit: --max-conns-per-client)."},
			[]string{"reason"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{Name: "rewind_nbd_unknown_exports_total",
			Help: "Export names NBD clients asked for that name no volume."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rewind_nbd_buffer_bytes",
			Help: "Payload bytes NBD connections hold now, against --buffer-memory."}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rewind_nbd_buffer_waiting",
			Help: "NBD requests waiting for --buffer-memory now; their connections read no more requests meanwhile."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_requests_total",
			Help: "NBD requests answered, by volume, command and result."}, []string{"export", "cmd", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_nbd_bytes_total",
			Help: "Bytes NBD requests asked for, by volume and command."}, []string{"export", "cmd"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rewind_nbd_request_seconds",
			Help:    "NBD request latency, from request to reply, by volume and command.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2.5, 14)}, []string{"export", "cmd"}),
	}
	reg.MustRegister(m.conns, m.opened, m.refused, m.unknown, m.held, m.waiting, m.requests, m.bytes, m.latency)
	return m
}

func (m *nbdMetrics) ConnRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

func (m *nbdMetrics) UnknownExport() { m.unknown.Inc() }

func (m *nbdMetrics) BufferMemory(held int64, waiting int) {
	m.held.Set(float64(held))
	m.waiting.Set(float64(waiting))
}

func (m *nbdMetrics) ConnOpened(volume string) {
	m.conns.WithLabelValues(volume).Inc()
	m.opened.WithLabelValues(volume).Inc()
}

func (m *nbdMetrics) ConnClosed(volume string) { m.conns.WithLabelValues(volume).Dec() }

func (m *nbdMetrics) Request(volume, cmd string, bytes int64, d time.Duration, err error) {
	k := requestKey{volume, cmd}
	v, ok := m.series.Load(k)
	if !ok {
		v, _ = m.series.LoadOrStore(k, &requestSeries{
			ok:      m.requests.WithLabelValues(volume, cmd, "ok"),
			bytes:   m.bytes.WithLabelValues(volume, cmd),
			latency: m.latency.WithLabelValues(volume, cmd),
		})
	}
	rs := v.(*requestSeries)
	if err != nil {
		m.requests.WithLabelValues(volume, cmd, "error").Inc()
	} else {
		rs.ok.Inc()
	}
	rs.bytes.Add(float64(bytes))
	rs.latency.Observe(d.Seconds())
}

// registerStoreMetrics reports what the store holds, from the volumes'
// metadata (no scan of the chunk index).
func registerStoreMetrics(reg prometheus.Registerer, svc *catalog.Service) {
	sum := func(f func(v *catalog.VolumeInfo) float64) func() float64 {
		return func() float64 {
			vols, err := svc.Volumes(context.Background())
			if err != nil {
				return 0
			}
			var n float64
			for i := range vols {
				n += f(&vols[i])
			}
			return n
		}
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_volumes", Help: "Volumes in the store."},
			sum(func(*catalog.VolumeInfo) float64 { return 1 })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_versions", Help: "Versions recorded, all volumes."},
			sum(func(v *catalog.VolumeInfo) float64 { return float64(v.Versions) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_logical_bytes", Help: "Bytes all versions recorded, before dedup and compression."},
			sum(func(v *catalog.VolumeInfo) float64 { return float64(v.LogicalBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_stored_bytes", Help: "Bytes the volumes' versions added to the chunk store."},
			sum(func(v *catalog.VolumeInfo) float64 { return float64(v.StoredBytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_fold_pending_blocks",
			Help: "Blocks whose runs of patches wait to be folded into whole blocks, or whose patches wait to be laid next to each other in block order (both done while no write comes)."},
			func() float64 { return float64(svc.Timeline().FoldsPending()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_chunk_index_lookups_total",
			Help: "Chunks that reads looked up in the chunk index: the places that versions keep and the cache of locations spare the rest."},
			func() float64 { return float64(svc.IndexLookups()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_objstore_uploaded_bytes_total",
			Help: "Bytes uploaded to the object store (--store): packs, their ranges, the index."},
			func() float64 { return float64(remote.Stats.UploadedBytes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_objstore_downloaded_bytes_total",
			Help: "Bytes read from the object store (--store)."},
			func() float64 { return float64(remote.Stats.DownloadedBytes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_objstore_requests_total",
			Help: "Calls to the object store (--store), retries included."},
			func() float64 { return float64(remote.Stats.Requests.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rewind_objstore_retries_total",
			Help: "Calls to the object store that were retries of a failed one."},
			func() float64 { return float64(remote.Stats.Retries.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_objstore_cache_bytes",
			Help: "Bytes of pack blocks kept in the local cache (--store-cache bounds it)."},
			func() float64 { return float64(svc.Store().CacheBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rewind_store_writable",
			Help: "1 while the store takes writes; 0 once it stopped (its disk filled up, or the index could not commit) until rewind restarts."},
			func() float64 {
				if svc.Writable() != nil {
					return 0
				}
				return 1
			}),
	)
}
