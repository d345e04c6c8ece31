package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/rewind-dev/rewind/catalog"
)

// Handler serves api over HTTP. Extra holds daemon-only calls (mount,
// umount, ...) by name; they get the raw request body.
func Handler(api catalog.API, extra map[string]func(ctx context.Context, body json.RawMessage) (any, error)) http.Handler {
	calls := map[string]func(ctx context.Context, body json.RawMessage) (any, error){
		"volumes": func(ctx context.Context, _ json.RawMessage) (any, error) { return api.Volumes(ctx) },
		"stats":   func(ctx context.Context, _ json.RawMessage) (any, error) { return api.Stats(ctx) },
		"create":  decodeThen(func(ctx context.Context, r catalog.CreateRequest) (any, error) { return api.CreateVolume(ctx, r) }),
		"remove":  decodeThen(func(ctx context.Context, r nameReq) (any, error) { return nil, api.RemoveVolume(ctx, r.Name, r.Force) }),
		"log":     decodeThen(func(ctx context.Context, r catalog.LogRequest) (any, error) { return api.Log(ctx, r) }),
		"diff":    decodeThen(func(ctx context.Context, r diffReq) (any, error) { return api.Diff(ctx, r.From, r.To) }),
		"point-add": decodeThen(func(ctx context.Context, r pointReq) (any, error) {
			return api.AddPoint(ctx, r.Spec, r.Label)
		}),
		"points": decodeThen(func(ctx context.Context, r pointReq) (any, error) { return api.Points(ctx, r.Volume) }),
		"point-rm": decodeThen(func(ctx context.Context, r pointReq) (any, error) {
			return nil, api.RemovePoint(ctx, r.Volume, r.Label)
		}),
		"clone": decodeThen(func(ctx context.Context, r cloneReq) (any, error) { return api.Clone(ctx, r.Spec, r.Name) }),
		"retention-set": decodeThen(func(ctx context.Context, r catalog.Retention) (any, error) {
			return api.SetRetention(ctx, r)
		}),
		"retention": decodeThen(func(ctx context.Context, r nameReq) (any, error) { return api.Retention(ctx, r.Name) }),
		"prune":     decodeThen(func(ctx context.Context, r catalog.PruneRequest) (any, error) { return api.Prune(ctx, r) }),
		"gc":        decodeThen(func(ctx context.Context, r catalog.GCRequest) (any, error) { return api.GC(ctx, r) }),
	}
	for k, v := range extra {
		calls[k] = v
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/{method}", func(w http.ResponseWriter, r *http.Request) {
		method := r.PathValue("method")
		switch method {
		case "import":
			serveImport(api, w, r)
			return
		case "export":
			serveExport(api, w, r)
			return
		case "verify":
			serveVerify(api, w, r)
			return
		case "replicate":
			serveReplicate(api, w, r)
			return
		}
		call, ok := calls[method]
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("%w: unknown call %q", catalog.ErrInvalid, method))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		res, err := call(r.Context(), body)
		if err != nil {
			writeError(w, statusOf(err), err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	})
	return mux
}

func decodeThen[T any](f func(context.Context, T) (any, error)) func(context.Context, json.RawMessage) (any, error) {
	return func(ctx context.Context, body json.RawMessage) (any, error) {
		var req T
		if len(body) > 0 {
			if err := json.Unmarshal(body, &req); err != nil {
				return nil, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err)
			}
		}
		return f(ctx, req)
	}
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
	if isStream(r) {
		serveImportStream(api, w, r)
		return
	}
	var req catalog.ImportRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err))
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
			writeError(w, http.StatusBadRequest, fmt.Errorf("%w: block_size %q is not a number of bytes", catalog.ErrInvalid, bs))
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
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err))
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
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err))
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
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: bad request: %v", catalog.ErrInvalid, err))
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
