package main

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rewind-dev/rewind/catalog/api"
)

// apiMetrics counts the API's calls by route (the pattern, a fixed set:
// never the path a client sent), and the requests the --http guard
// refused before any route, and the console's sign-ins.
type apiMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	refused  *prometheus.CounterVec
	signins  *prometheus.CounterVec
}

func newAPIMetrics(reg prometheus.Registerer) *apiMetrics {
	m := &apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_api_requests_total",
			Help: "API calls answered, by transport (socket or http), method, route pattern and status code."},
			[]string{"transport", "method", "route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rewind_api_request_seconds",
			Help:    "Time to answer an API call (streamed calls: until the last line), by method and route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}, []string{"method", "route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_api_refused_total",
			Help: "Requests on --http /v1 refused before reaching a call (401: no or a wrong token or session; 403: a foreign Host or Origin, or no CSRF token; 415), by status code."},
			[]string{"code"}),
		signins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rewind_console_signins_total",
			Help: "Sign-ins to the web console, by result (ok or refused: a wrong token)."}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.seconds, m.refused, m.signins)
	m.signins.WithLabelValues("ok")
	m.signins.WithLabelValues("refused")
	return m
}

// reachedKey marks, in a request's context, that a route answered it.
type reachedKey struct{}

// routes wraps every route's handler to count its calls.
func (m *apiMetrics) routes(rs []api.Route) []api.Route {
	for i := range rs {
		r := rs[i]
		next := r.Handler
		rs[i].Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if reached, ok := req.Context().Value(reachedKey{}).(*bool); ok {
				*reached = true
			}
			transport := "http"
			if _, ok := api.PeerUID(req.Context()); ok {
				transport = "socket"
			}
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			start := time.Now()
			next.ServeHTTP(sw, req)
			m.seconds.WithLabelValues(r.Method, r.Pattern).Observe(time.Since(start).Seconds())
			m.requests.WithLabelValues(transport, r.Method, r.Pattern, strconv.Itoa(sw.code)).Inc()
		})
	}
	return rs
}

// guarded counts the requests that next (the guard in front of the
// routes) answered without reaching one.
func (m *apiMetrics) guarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		reached := new(bool)
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, req.WithContext(context.WithValue(req.Context(), reachedKey{}, reached)))
		if !*reached && sw.code >= 400 && sw.code != http.StatusNotFound && sw.code != http.StatusMethodNotAllowed {
			m.refused.WithLabelValues(strconv.Itoa(sw.code)).Inc()
		}
	})
}

// signIn counts a console sign-in.
func (m *apiMetrics) signIn(ok bool) {
	if ok {
		m.signins.WithLabelValues("ok").Inc()
	} else {
		m.signins.WithLabelValues("refused").Inc()
	}
}

// statusWriter remembers the status code; it flushes and unwraps, so
// that streamed answers and http.ResponseController still work.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
