package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/rewind-dev/rewind/catalog"
)

// Route is one resource route of the API: what the OpenAPI document
// describes and what Serve answers.
type Route struct {
	Method  string // GET, POST, PUT, PATCH or DELETE
	Pattern string // /v1/volumes/{name}
	Handler http.Handler
	// Body and Answer are values of the Go types of the request body and
	// of the JSON answer (nil: none, raw or streamed): the OpenAPI check
	// compares their JSON fields with the document's schemas.
	Body, Answer any
}

// Serve answers routes, the one implementation of the API on the socket
// and on --http. A path no route has answers 404, a method the path does
// not take 405, both with the JSON error shape.
func Serve(routes []Route) http.Handler {
	mux := http.NewServeMux()
	for _, r := range routes {
		mux.Handle(r.Method+" "+r.Pattern, r.Handler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// ServeMux's own 404 or 405 (with its Allow header), in our shape.
		rec := &statusRecorder{header: http.Header{}}
		mux.ServeHTTP(rec, r)
		if allow := rec.Header().Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.Code == http.StatusMethodNotAllowed {
			writeError(w, rec.Code, catalog.Errorf(catalog.ErrInvalid, "%s %s is not a call of the API (it takes %s; see /v1/openapi.json)",
				r.Method, r.URL.Path, rec.Header().Get("Allow")))
			return
		}
		writeError(w, http.StatusNotFound, catalog.Errorf(catalog.ErrNotFound, "%s %s is not a call of the API: see /v1/openapi.json",
			r.Method, r.URL.Path))
	})
}

// OK answers 200 with f's answer as JSON.
func OK(f func(r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := f(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// Created answers 201 with f's answer as JSON and its Location.
func Created(f func(r *http.Request) (res any, location string, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, loc, err := f(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		w.Header().Set("Location", loc)
		writeJSON(w, http.StatusCreated, res)
	})
}

// NoContent answers 204 when f succeeds.
func NoContent(f func(r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(r); err != nil {
			WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// Decode reads a request's JSON body into a T; an empty body is T's zero
// value, a malformed one an error of class catalog.ErrInvalid.
func Decode[T any](r *http.Request) (T, error) {
	var v T
	err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&v)
	if err != nil && !errors.Is(err, io.EOF) {
		return v, catalog.Errorf(catalog.ErrInvalid, "the request body is not the JSON this call takes (see /v1/openapi.json): %v", err)
	}
	return v, nil
}

// WriteError answers err with its status and the JSON error shape.
func WriteError(w http.ResponseWriter, err error) { writeError(w, statusOf(err), err) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// isRaw reports whether a request's body is raw bytes, not JSON.
func isRaw(r *http.Request) bool {
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "application/octet-stream")
}

// statusRecorder keeps what ServeMux answers to a request no route takes
// (its status and Allow header), to answer it again in the API's shape.
type statusRecorder struct {
	header http.Header
	Code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.Code = code }
