package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rewind-dev/rewind/blockstore/hugemem"
	"github.com/rewind-dev/rewind/blockstore/remote"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/api/console"
	"github.com/rewind-dev/rewind/catalog/protect"
	"github.com/rewind-dev/rewind/catalog/recovery"
	"github.com/rewind-dev/rewind/mount"
	"github.com/rewind-dev/rewind/nbd"
)

type serveCmd struct {
	NBD         string        `help:"Serve NBD on this address (empty: no NBD)." default:"127.0.0.1:10809" placeholder:"ADDR"`
	Mount       string        `help:"Mount the whole history as a FUSE tree here." placeholder:"DIR"`
	HTTP        string        `help:"Serve Prometheus /metrics (open) and the API (bearer token) on this address; HTTPS with --tls-cert." placeholder:"ADDR" name:"http"`
	TLSCert     string        `help:"Server certificate (PEM); makes TLS mandatory for NBD." type:"existingfile" name:"tls-cert" placeholder:"FILE"`
	TLSKey      string        `help:"Server key (PEM)." type:"existingfile" name:"tls-key" placeholder:"FILE"`
	TLSClientCA string        `help:"Require client certificates signed by this CA (PEM)." type:"existingfile" name:"tls-client-ca" placeholder:"FILE"`
	MaxConns    int           `help:"Most NBD connections served at once." default:"512"`
	HTTPToken   string        `help:"File holding the bearer token of the API on --http (default DATA/api-token, made at first start)." name:"http-token-file" type:"path" placeholder:"FILE"`
	HTTPHosts   []string      `help:"A name the --http port answers to besides its address, localhost and IP addresses (repeat for more)." name:"http-host" placeholder:"NAME"`
	DebugPprof  bool          `help:"Serve Go's profiler at /debug/pprof on --http (behind the token)." name:"debug-pprof"`
	CacheSize   Size          `help:"Memory for decoded chunks (hot data is served from memory)." default:"1GiB" placeholder:"SIZE"`
	NoHugePages bool          `help:"Do not ask for transparent huge pages for the chunk cache and read buffers: faster on a virtual machine whose host takes free guest memory back (see docs/benchmarks.md)." name:"no-huge-pages"`
	PruneEvery  time.Duration `help:"Prune every volume that has a retention policy this often (0: only rewind prune does)." default:"1h" name:"prune-every" placeholder:"DURATION"`
	GCEvery     time.Duration `help:"Collect garbage (chunks no version references) this often (0: only rewind gc does)." default:"1h" name:"gc-every" placeholder:"DURATION"`
	VerifyEvery time.Duration `help:"Scrub the store (rewind verify --repair) this often (0: only rewind verify does)." default:"24h" name:"verify-every" placeholder:"DURATION"`

	// Replication to a second site (rewind replicate, on a schedule).
	ReplicateTo       string        `help:"Replicate the store to this target (s3://BUCKET[/PREFIX] or a directory) every --replicate-every." name:"replicate-to" placeholder:"URL"`
	ReplicateEndpoint string        `help:"The replication target's S3 endpoint, when it is not AWS_ENDPOINT_URL's." name:"replicate-endpoint" placeholder:"URL"`
	ReplicateEvery    time.Duration `help:"How often to replicate (default 1h with --replicate-to)." name:"replicate-every" placeholder:"DURATION"`
	ReplicateBWLimit  Rate          `help:"Replicate at most this many bytes a second (e.g. 2MiB/s)." name:"replicate-bwlimit" placeholder:"RATE"`
	ReplicateWindow   string        `help:"Replicate only between these local times, HH:MM-HH:MM (may wrap midnight)." name:"replicate-window" placeholder:"HH:MM-HH:MM"`

	store string // the global --store, for GET /v1/server

	// Limits on what NBD clients can make the daemon hold.
	MaxConnsPerClient int           `help:"Most NBD connections from one IP address (negative: no limit)." default:"64" name:"max-conns-per-client"`
	BufferMemory      Size          `help:"Memory for NBD read and write payloads, all connections together; a connection waiting for it stops reading requests." default:"256MiB" placeholder:"SIZE"`
	ReplyTimeout      time.Duration `help:"Close an NBD connection whose client takes none of its replies for this long, giving its memory back; a client that keeps reading, however slowly, is never cut off (0: never)." default:"2m" name:"reply-timeout" placeholder:"DURATION"`
}

// daemon is a running rewind serve.
type daemon struct {
	log     *slog.Logger
	svc     *catalog.Service
	exports *exports
	nbd     *nbd.Server
	sock    *api.Socket
	web     *http.Server
	mounts  mounts
	console consoleLink
	metrics *apiMetrics
	stops   []func(ctx context.Context) error // run in reverse on shutdown
}

func (c *serveCmd) Run(e *env) error {
	log := e.logger()
	if c.ReplyTimeout < 0 {
		return fmt.Errorf("--reply-timeout %v is negative: give a duration such as 2m, or 0 to never close a connection for it", c.ReplyTimeout)
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return err
	}
	if err := c.checkReplicate(); err != nil {
		return err
	}
	o := e.catalogOptions(log)
	c.store = o.Store
	o.CacheBytes = int64(c.CacheSize)
	hugemem.SetHugePages(!c.NoHugePages)
	svc, err := catalog.Open(o)
	if err != nil {
		return err
	}
	svc.WarmIndex()
	d := &daemon{log: log, svc: svc, exports: newExports(svc)}
	svc.SetInUse(d.exports.inUse)
	rec, err := recovery.Open(svc, recovery.Options{Dir: filepath.Join(e.dataDir, "recoveries"), Logger: log})
	if err != nil {
		svc.Close()
		return err
	}
	d.exports.rec = rec
	// Stopped last of all, once no export or mount uses a Disk: the
	// copies save their progress and resume at the next start.
	d.stops = append(d.stops, func(context.Context) error { return rec.Close() })
	prot, err := protect.Open(e.ctx, svc, protect.Options{Dir: filepath.Join(e.dataDir, "protected"), Logger: log})
	if err != nil {
		rec.Close()
		svc.Close()
		return err
	}
	d.exports.prot = prot
	svc.SetSettle(prot.Settle)
	svc.SetRemoveCheck(func(volume string) error {
		if err := prot.RemoveCheck(volume); err != nil {
			return err
		}
		return rec.RemoveCheck(volume)
	})
	// Likewise: each protection flushes both sides and is recorded clean.
	d.stops = append(d.stops, func(context.Context) error { return prot.Close() })
	err = d.start(e.ctx, c, tlsConf, filepath.Join(e.dataDir, "rewind.sock"))
	if err == nil {
		log.Info("rewind is serving", "data", e.dataDir, "nbd", c.NBD, "http", c.HTTP, "mount", c.Mount)
		<-e.ctx.Done()
		log.Info("stopping: finishing in-flight requests")
	}
	// An object store that does not answer would hold the stop for
	// minutes (each upload is retried for two): past this, what is not
	// uploaded is left to the next start, or named in the stop's error.
	remote.StopRetryingBy(time.Now().Add(stopRetryGrace))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := len(d.stops) - 1; i >= 0; i-- {
		if serr := d.stops[i](ctx); serr != nil && !errors.Is(serr, nbd.ErrServerClosed) {
			log.Error("stopping", "err", serr)
		}
	}
	if cerr := svc.Close(); cerr != nil {
		return errors.Join(err, cerr)
	}
	if err == nil {
		log.Info("stopped cleanly; every acknowledged write is on disk")
	}
	return err
}

// stopRetryGrace is how long a stopping daemon goes on retrying calls of
// an object store that fail.
const stopRetryGrace = 15 * time.Second

// start opens every listener; on error, what started is stopped by Run.
func (d *daemon) start(ctx context.Context, c *serveCmd, tlsConf *tls.Config, sockPath string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreMetrics(reg, d.svc)
	reg.MustRegister(recoveryCollector{d.exports.rec})
	reg.MustRegister(protectCollector{d.exports.prot})
	if err := mount.CleanupStale(filepath.Join(d.svc.Dir(), "run"), d.log); err != nil {
		d.log.Warn("cleaning up the mounts of a previous daemon", "err", err)
	}
	info := api.ServerInfo{Version: version(), Data: d.svc.Dir(), Store: c.store, NBDTLS: c.NBD != "" && tlsConf != nil}
	if c.Mount != "" {
		info.Mount, _ = filepath.Abs(c.Mount)
	}
	var nbdListener net.Listener
	if c.NBD != "" {
		l, err := net.Listen("tcp", c.NBD)
		if err != nil {
			return fmt.Errorf("listen for NBD on %s: %w (is another server using the port? choose another with --nbd)", c.NBD, err)
		}
		nbdListener, info.NBD = l, l.Addr().String()
	}
	d.metrics = newAPIMetrics(reg)
	handler := api.Serve(d.metrics.routes(d.routes(ctx, info)))

	sock, err := api.ListenSocket(sockPath, handler)
	if err != nil {
		if nbdListener != nil {
			nbdListener.Close()
		}
		return err
	}
	d.sock = sock
	go d.sock.Serve()
	d.stops = append(d.stops, d.sock.Shutdown)

	if l := nbdListener; l != nil {
		if tlsConf == nil {
			warnIfExposed(d.log, "NBD", l.Addr())
		}
		d.nbd = &nbd.Server{Resolver: d.exports, TLSConfig: tlsConf, Logger: d.log, MaxConns: c.MaxConns,
			MaxConnsPerClient: c.MaxConnsPerClient, BufferMemory: int64(c.BufferMemory),
			ReplyTimeout: c.ReplyTimeout, Metrics: newNBDMetrics(reg)}
		if c.ReplyTimeout == 0 {
			d.nbd.ReplyTimeout = -1 // never
		}
		go func() {
			if err := d.nbd.Serve(l); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
				d.log.Error("NBD server stopped", "err", err)
			}
		}()
		d.stops = append(d.stops, d.nbd.Shutdown)
	}

	d.every(c.PruneEvery, newPruneSchedule(reg).run)
	d.every(c.VerifyEvery, newVerifySchedule(reg, d.svc).run)
	d.every(c.GCEvery, newGCSchedule(reg, d.svc).run)
	if c.ReplicateTo != "" {
		d.every(c.ReplicateEvery, newReplicateSchedule(reg, d.svc, c).run)
	}

	if c.HTTP != "" {
		if err := d.startHTTP(c, handler, reg, tlsConf); err != nil {
			return err
		}
	}
	return d.startMount(ctx, c)
}

// routes is the API's one route table: the catalog's, then the daemon's
// own (recoveries, protections, mounts, verify/*). stopping ends when
// the daemon begins to stop.
func (d *daemon) routes(stopping context.Context, info api.ServerInfo) []api.Route {
	rs := api.Routes(d.svc, info)
	rs = append(rs, d.recoveryRoutes()...)
	rs = append(rs, d.protectionRoutes()...)
	rs = append(rs, d.mountRoutes()...)
	rs = append(rs, d.consoleRoutes()...)
	return append(rs, d.verifyRoutes(stopping)...)
}

// version is the daemon's version: the module's, as built.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// startHTTP serves /metrics, open to all, the API behind the bearer
// token (or a console session) and the checks of api.Guard, and the web
// console at /; HTTPS with the NBD certificate when one is given.
func (d *daemon) startHTTP(c *serveCmd, handler http.Handler, reg *prometheus.Registry, tlsConf *tls.Config) error {
	tokenFile := c.HTTPToken
	if tokenFile == "" {
		tokenFile = filepath.Join(d.svc.Dir(), "api-token")
	}
	token, err := api.LoadToken(tokenFile, true)
	if err != nil {
		return err
	}
	sessions := api.NewSessions(token)
	if err := sessions.KeepRevocations(filepath.Join(d.svc.Dir(), "console-signouts")); err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.HTTP)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w (choose another with --http)", c.HTTP, err)
	}
	remote := api.Remote{Token: token, Addr: c.HTTP, Hosts: c.HTTPHosts, Sessions: sessions}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/v1/", d.metrics.guarded(api.Guard(handler, remote)))
	mux.Handle("/", console.Handler(remote, d.metrics.signIn))
	if c.DebugPprof {
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index)
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", api.Guard(prof, remote))
	}
	d.web = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	if tlsConf != nil {
		conf := tlsConf.Clone()
		conf.ClientAuth, conf.ClientCAs = tls.NoClientCert, nil // the token authenticates
		l = tls.NewListener(l, conf)
	} else {
		warnIfExposed(d.log, "HTTP", l.Addr())
	}
	go d.web.Serve(l)
	d.stops = append(d.stops, d.web.Shutdown)
	d.console.set(l.Addr(), tlsConf != nil, token, c.HTTPHosts)
	d.log.Info("API on HTTP needs the bearer token; rewind console prints the console's sign-in link", "token_file", tokenFile, "tls", tlsConf != nil)
	return nil
}

// warnIfExposed warns of a plain-text listener that other machines reach.
func warnIfExposed(log *slog.Logger, what string, a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn(what+" listens beyond this machine without TLS: tokens and data cross the network in clear; give --tls-cert and --tls-key", "addr", a.String())
	}
}

func (c *serveCmd) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" && c.TLSKey == "" {
		if c.TLSClientCA != "" {
			return nil, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if c.TLSCert == "" || c.TLSKey == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCA != "" {
		pem, err := os.ReadFile(c.TLSClientCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.TLSClientCA)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// every runs fn every interval (none when it is 0) while the daemon
// serves; a shutdown cancels the round under way and waits for it.
func (d *daemon) every(interval time.Duration, fn func(ctx context.Context, d *daemon)) {
	if interval <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fn(ctx, d)
		}
	}()
	d.stops = append(d.stops, func(context.Context) error { cancel(); <-done; return nil })
}
