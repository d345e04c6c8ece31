package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/mount"
	"github.com/rewind-dev/rewind/nbd"
)

type serveCmd struct {
	NBD         string `help:"Serve NBD on this address (empty: no NBD)." default:"127.0.0.1:10809" placeholder:"ADDR"`
	Mount       string `help:"Mount the whole history as a FUSE tree here." placeholder:"DIR"`
	HTTP        string `help:"Serve Prometheus /metrics (and the API) on this address." placeholder:"ADDR" name:"http"`
	TLSCert     string `help:"Server certificate (PEM); makes TLS mandatory for NBD." type:"existingfile" name:"tls-cert" placeholder:"FILE"`
	TLSKey      string `help:"Server key (PEM)." type:"existingfile" name:"tls-key" placeholder:"FILE"`
	TLSClientCA string `help:"Require client certificates signed by this CA (PEM)." type:"existingfile" name:"tls-client-ca" placeholder:"FILE"`
	MaxConns    int    `help:"Most NBD connections served at once." default:"512"`
	CacheSize   Size   `help:"Memory for decoded chunks (hot data is served from memory)." default:"1GiB" placeholder:"SIZE"`

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
	sock    *http.Server
	web     *http.Server
	mounts  mounts
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
	svc, err := catalog.Open(catalog.Options{Dir: e.dataDir, Logger: log, CacheBytes: int64(c.CacheSize), Compression: e.globals.Compression})
	if err != nil {
		return err
	}
	svc.WarmIndex()
	d := &daemon{log: log, svc: svc, exports: newExports(svc)}
	svc.SetInUse(d.exports.inUse)
	err = d.start(e.ctx, c, tlsConf, filepath.Join(e.dataDir, "rewind.sock"))
	if err == nil {
		log.Info("rewind is serving", "data", e.dataDir, "nbd", c.NBD, "http", c.HTTP, "mount", c.Mount)
		<-e.ctx.Done()
		log.Info("stopping: finishing in-flight requests")
	}
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

// start opens every listener; on error, what started is stopped by Run.
func (d *daemon) start(ctx context.Context, c *serveCmd, tlsConf *tls.Config, sockPath string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreMetrics(reg, d.svc)
	if err := mount.CleanupStale(filepath.Join(d.svc.Dir(), "run"), d.log); err != nil {
		d.log.Warn("cleaning up the mounts of a previous daemon", "err", err)
	}
	handler := api.Handler(d.svc, map[string]func(context.Context, json.RawMessage) (any, error){
		"mount":  d.mount,
		"umount": d.umount,
	})

	sl, err := listenSocket(sockPath)
	if err != nil {
		return err
	}
	d.sock = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go d.sock.Serve(sl)
	d.stops = append(d.stops, func(ctx context.Context) error {
		err := d.sock.Shutdown(ctx)
		os.Remove(sockPath)
		return err
	})

	if c.NBD != "" {
		l, err := net.Listen("tcp", c.NBD)
		if err != nil {
			return fmt.Errorf("listen for NBD on %s: %w (is another server using the port? choose another with --nbd)", c.NBD, err)
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

	if c.HTTP != "" {
		l, err := net.Listen("tcp", c.HTTP)
		if err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w (choose another with --http)", c.HTTP, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/v1/", handler)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		d.web = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go d.web.Serve(l)
		d.stops = append(d.stops, d.web.Shutdown)
	}
	return d.startMount(ctx, c)
}

// listenSocket listens on the daemon's socket, replacing a stale one that
// a killed daemon left.
func listenSocket(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: a daemon already serves %s", catalog.ErrBusy, path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
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
