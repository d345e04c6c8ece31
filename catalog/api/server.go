package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/rewind-dev/rewind/catalog"
)

// ServerInfo is GET /v1/server: what the daemon serves and where.
type ServerInfo struct {
	Version string `json:"version"`
	NBD     string `json:"nbd"` // host:port, "" when NBD is off
	NBDTLS  bool   `json:"nbd_tls"`
	Mount   string `json:"mount"` // the --mount tree, "" when none
	Store   string `json:"store"` // the object store, "" for the data directory
	Data    string `json:"data"`
}

// Handler serves the routes of api and info, then extra (the daemon's
// own), on one table: Serve(append(Routes(api, info), extra...)).
func Handler(api catalog.API, info ServerInfo, extra ...Route) http.Handler {
	return Serve(append(Routes(api, info), extra...))
}

// Routes are the catalog's routes of the API, with /v1/server and
// /v1/openapi.json.
func Routes(api catalog.API, info ServerInfo) []Route {
	name := func(r *http.Request) string { return r.PathValue("name") }
	at := func(volume, when string) string {
		if when == "" {
			return volume
		}
		return volume + "@" + when
	}
	return []Route{
		{Method: "GET", Pattern: "/v1/openapi.json", Handler: http.HandlerFunc(serveOpenAPI)},
		{Method: "GET", Pattern: "/v1/server", Answer: ServerInfo{},
			Handler: OK(func(*http.Request) (any, error) { return info, nil })},
		{Method: "GET", Pattern: "/v1/volumes", Answer: []catalog.VolumeInfo{},
			Handler: OK(func(r *http.Request) (any, error) { return api.Volumes(r.Context()) })},
		{Method: "POST", Pattern: "/v1/volumes", Body: catalog.CreateRequest{}, Answer: catalog.VolumeInfo{},
			Handler: Created(func(r *http.Request) (any, string, error) {
				req, err := Decode[catalog.CreateRequest](r)
				if err != nil {
					return nil, "", err
				}
				v, err := api.CreateVolume(r.Context(), req)
				if err != nil {
					return nil, "", err
				}
				return v, volumePath(v.Name), nil
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}", Answer: catalog.VolumeInfo{},
			Handler: OK(func(r *http.Request) (any, error) { return volumeInfo(r.Context(), api, name(r)) })},
		{Method: "DELETE", Pattern: "/v1/volumes/{name}",
			Handler: NoContent(func(r *http.Request) error {
				force, err := boolQuery(r, "force")
				if err != nil {
					return err
				}
				return api.RemoveVolume(r.Context(), name(r), force)
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}/versions", Answer: []catalog.LogEntry{},
			Handler: OK(func(r *http.Request) (any, error) {
				q := r.URL.Query()
				limit, err := intQuery(r, "limit")
				if err != nil {
					return nil, err
				}
				return api.Log(r.Context(), catalog.LogRequest{Volume: name(r), Since: q.Get("since"), Until: q.Get("until"), Limit: limit})
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}/activity", Answer: catalog.Activity{},
			Handler: OK(func(r *http.Request) (any, error) {
				q := r.URL.Query()
				n, err := intQuery(r, "buckets")
				if err != nil {
					return nil, err
				}
				return api.Activity(r.Context(), catalog.ActivityRequest{Volume: name(r), Since: q.Get("since"), Until: q.Get("until"), Buckets: n})
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}/diff", Answer: catalog.DiffResult{},
			Handler: OK(func(r *http.Request) (any, error) {
				q := r.URL.Query()
				return api.Diff(r.Context(), at(name(r), q.Get("from")), at(name(r), q.Get("to")))
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}/points", Answer: []catalog.Point{},
			Handler: OK(func(r *http.Request) (any, error) { return api.Points(r.Context(), name(r)) })},
		{Method: "POST", Pattern: "/v1/volumes/{name}/points", Body: PointRequest{}, Answer: catalog.Point{},
			Handler: Created(func(r *http.Request) (any, string, error) {
				req, err := Decode[PointRequest](r)
				if err != nil {
					return nil, "", err
				}
				when := req.At
				if when == "" {
					when = "latest"
				}
				p, err := api.AddPoint(r.Context(), at(name(r), when), req.Label)
				if err != nil {
					return nil, "", err
				}
				return p, volumePath(p.Volume) + "/points/" + url.PathEscape(p.Label), nil
			})},
		{Method: "DELETE", Pattern: "/v1/volumes/{name}/points/{label}",
			Handler: NoContent(func(r *http.Request) error {
				return api.RemovePoint(r.Context(), name(r), r.PathValue("label"))
			})},
		{Method: "GET", Pattern: "/v1/volumes/{name}/retention", Answer: catalog.Retention{},
			Handler: OK(func(r *http.Request) (any, error) { return api.Retention(r.Context(), name(r)) })},
		{Method: "PUT", Pattern: "/v1/volumes/{name}/retention", Body: catalog.Retention{}, Answer: catalog.Retention{},
			Handler: OK(func(r *http.Request) (any, error) {
				req, err := Decode[catalog.Retention](r)
				if err != nil {
					return nil, err
				}
				if req.Volume != "" && req.Volume != name(r) {
					return nil, catalog.Errorf(catalog.ErrInvalid, "the body names volume %q, the path %q: leave the body's volume out", req.Volume, name(r))
				}
				req.Volume = name(r)
				return api.SetRetention(r.Context(), req)
			})},
		{Method: "GET", Pattern: "/v1/resolve", Answer: catalog.Resolved{},
			Handler: OK(func(r *http.Request) (any, error) {
				spec := r.URL.Query().Get("spec")
				if spec == "" {
					return nil, catalog.Errorf(catalog.ErrInvalid, "give the recovery point as ?spec=VOLUME@WHEN")
				}
				return api.Instant(r.Context(), spec)
			})},
		{Method: "POST", Pattern: "/v1/clones", Body: CloneRequest{}, Answer: catalog.VolumeInfo{},
			Handler: Created(func(r *http.Request) (any, string, error) {
				req, err := Decode[CloneRequest](r)
				if err != nil {
					return nil, "", err
				}
				if req.From == "" {
					return nil, "", catalog.Errorf(catalog.ErrInvalid, "give the instant to clone as \"from\": \"VOLUME@WHEN\"")
				}
				v, err := api.Clone(r.Context(), req.From, req.Name)
				if err != nil {
					return nil, "", err
				}
				return v, volumePath(v.Name), nil
			})},
		{Method: "GET", Pattern: "/v1/stats", Answer: catalog.Stats{},
			Handler: OK(func(r *http.Request) (any, error) { return api.Stats(r.Context()) })},
		{Method: "POST", Pattern: "/v1/prune", Body: catalog.PruneRequest{}, Answer: []catalog.PruneResult{},
			Handler: OK(func(r *http.Request) (any, error) {
				req, err := Decode[catalog.PruneRequest](r)
				if err != nil {
					return nil, err
				}
				return api.Prune(r.Context(), req)
			})},
		{Method: "POST", Pattern: "/v1/gc", Body: catalog.GCRequest{}, Answer: catalog.GCResult{},
			Handler: OK(func(r *http.Request) (any, error) {
				req, err := Decode[catalog.GCRequest](r)
				if err != nil {
					return nil, err
				}
				return api.GC(r.Context(), req)
			})},
		{Method: "POST", Pattern: "/v1/verify", Body: catalog.VerifyRequest{},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveVerify(api, w, r) })},
		{Method: "POST", Pattern: "/v1/imports", Body: catalog.ImportRequest{},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveImport(api, w, r) })},
		{Method: "POST", Pattern: "/v1/exports", Body: catalog.ExportRequest{},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveExport(api, w, r) })},
		{Method: "POST", Pattern: "/v1/replications", Body: catalog.ReplicateRequest{},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveReplicate(api, w, r) })},
	}
}

// volumeInfo is one volume's row of the list.
func volumeInfo(ctx context.Context, api catalog.API, name string) (*catalog.VolumeInfo, error) {
	vols, err := api.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	for i := range vols {
		if vols[i].Name == name {
			return &vols[i], nil
		}
	}
	return nil, catalog.Errorf(catalog.ErrNotFound, "no volume %q (see GET /v1/volumes)", name)
}

func volumePath(name string) string { return "/v1/volumes/" + url.PathEscape(name) }

// boolQuery reads ?key=true|false (absent: false).
func boolQuery(r *http.Request, key string) (bool, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, catalog.Errorf(catalog.ErrInvalid, "%s=%q: give %s=true or %s=false", key, s, key, key)
	}
	return b, nil
}

// intQuery reads ?key=N (absent: 0).
func intQuery(r *http.Request, key string) (int, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, catalog.Errorf(catalog.ErrInvalid, "%s=%q: give a whole number, 0 or more", key, s)
	}
	return n, nil
}

func statusOf(err error) int {
	if errors.Is(err, ErrForbidden) {
		return http.StatusForbidden
	}
	switch catalog.Class(err) {
	case "invalid":
		return http.StatusBadRequest
	case "not_found":
		return http.StatusNotFound
	case "exists", "conflict", "busy":
		return http.StatusConflict
	case "no_space":
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(encodeError(err))
}

// streamer writes JSON lines, flushing each.
type streamer struct {
	mu sync.Mutex
	w  http.ResponseWriter
	f  http.Flusher
}

func newStreamer(w http.ResponseWriter) *streamer {
	w.Header().Set("Content-Type", "application/x-ndjson")
	f, _ := w.(http.Flusher)
	return &streamer{w: w, f: f}
}

func (s *streamer) line(l streamLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	json.NewEncoder(s.w).Encode(l)
	if s.f != nil {
		s.f.Flush()
	}
}

func (s *streamer) progress(done, total int64) {
	s.line(streamLine{Progress: &progress{done, total}})
}

func (s *streamer) finish(res any, err error) {
	if err != nil {
		e := encodeError(err)
		s.line(streamLine{Error: &e})
		return
	}
	b, _ := json.Marshal(res)
	s.line(streamLine{Result: b})
}

func serveImport(api catalog.API, w http.ResponseWriter, r *http.Request) {
	if isRaw(r) {
		serveImportStream(api, w, r)
		return
	}
	var req catalog.ImportRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, catalog.Errorf(catalog.ErrInvalid, "bad request: %v", err))
		return
	}
	// An nbd:// source is a network address the daemon dials; any other
	// source comes open from the caller.
	if req.File = passedFile(r.Context()); req.File == nil && !catalog.IsNBDURI(req.Source) {
		writeError(w, http.StatusBadRequest, errNoFile("import", req.Source))
		return
	}
	if req.File != nil {
		defer req.File.Close()
	}
	s := newStreamer(w)
	res, err := api.Import(r.Context(), req, s.progress)
	s.finish(res, err)
}

// serveImportStream imports the request's body: the bytes of the image,
// with the volume and the options in the query (volume, at, block_size).
// It answers with one JSON line, the result or the error, once the whole
// body is read: no progress, which a client still sending could not read.
func serveImportStream(api catalog.API, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := catalog.ImportRequest{Volume: q.Get("volume"), Source: "the request body", At: q.Get("at"),
		Stream: r.Body, Size: r.ContentLength}
	if bs := q.Get("block_size"); bs != "" {
		n, err := strconv.ParseInt(bs, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, catalog.Errorf(catalog.ErrInvalid, "block_size %q is not a number of bytes", bs))
			return
		}
		req.BlockSize = n
	}
	res, err := api.Import(r.Context(), req, nil)
	newStreamer(w).finish(res, err)
}

// errNoFile refuses an import or export that names a path without
// passing it open: the daemon opens no path for a caller.
func errNoFile(what, path string) error {
	return fmt.Errorf("%w: %s of %s: the daemon opens no path for a caller; pass the file open over the local socket (rewind %s does)",
		catalog.ErrInvalid, what, path, what)
}

func serveExport(api catalog.API, w http.ResponseWriter, r *http.Request) {
	var req catalog.ExportRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, catalog.Errorf(catalog.ErrInvalid, "bad request: %v", err))
		return
	}
	if req.Dest != "-" {
		if req.File = passedFile(r.Context()); req.File == nil {
			writeError(w, http.StatusBadRequest, errNoFile("export", req.Dest))
			return
		}
		defer req.File.Close()
		s := newStreamer(w)
		res, err := api.Export(r.Context(), req, nil, s.progress)
		s.finish(res, err)
		return
	}
	// Raw bytes; a failure after the first byte goes in the trailer.
	w.Header().Set("Trailer", "X-Rewind-Error")
	w.Header().Set("Content-Type", "application/octet-stream")
	_, err := api.Export(r.Context(), req, w, nil)
	if err != nil {
		b, _ := json.Marshal(encodeError(err))
		w.Header().Set("X-Rewind-Error", strings.ReplaceAll(string(b), "\n", " "))
	}
}

// serveVerify runs a scrub, streaming its progress.
func serveVerify(api catalog.API, w http.ResponseWriter, r *http.Request) {
	var req catalog.VerifyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, catalog.Errorf(catalog.ErrInvalid, "bad request: %v", err))
		return
	}
	s := newStreamer(w)
	res, err := api.Verify(r.Context(), req, s.progress)
	s.finish(res, err)
}

// serveReplicate runs a replication, streaming its progress.
func serveReplicate(api catalog.API, w http.ResponseWriter, r *http.Request) {
	var req catalog.ReplicateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, catalog.Errorf(catalog.ErrInvalid, "bad request: %v", err))
		return
	}
	if err := checkTargetOwner(r.Context(), req.To); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	s := newStreamer(w)
	res, err := api.Replicate(r.Context(), req, s.progress)
	s.finish(res, err)
}

// checkTargetOwner lets a caller of the local socket other than root
// replicate to a directory only when it owns the directory (or, for one
// not made yet, the nearest directory above it that is there): the
// daemon, root, would otherwise write where the caller may not. Over TCP,
// where no caller's uid is known, only s3:// targets are taken.
func checkTargetOwner(ctx context.Context, to string) error {
	if strings.HasPrefix(to, "s3://") {
		return nil
	}
	uid, ok := PeerUID(ctx)
	if !ok {
		return Forbiddenf("replicate to a directory (%s) is served on the local socket only; over HTTP, give an s3:// target", to)
	}
	if uid == 0 {
		return nil
	}
	dir := filepath.Clean(strings.TrimPrefix(to, "file://"))
	for {
		st, err := os.Stat(dir)
		if err == nil {
			if owner := st.Sys().(*syscall.Stat_t).Uid; owner != uid {
				return Forbiddenf("%s belongs to uid %d, not to you (uid %d): replicate to a directory you own", dir, owner, uid)
			}
			return nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return Forbiddenf("%s: no directory above it could be checked", to)
		}
		dir = parent
	}
}
