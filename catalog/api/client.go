package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-dev/rewind/catalog"
)

// Client is a catalog.API that calls the daemon on its socket.
type Client struct {
	socket string
	http   *http.Client
}

var _ catalog.API = (*Client)(nil)

// Dial connects to the daemon's socket. It fails at once when no daemon
// accepts there, and with an error of class ErrForbidden when the socket
// exists but this process may not connect (the caller must not then open
// the data directory itself).
func Dial(socket string) (*Client, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if errors.Is(err, os.ErrPermission) {
		return nil, &refusal{fmt.Sprintf("%s serves root and the owner of %s only (permission denied)", socket, filepath.Dir(socket))}
	}
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}, nil
}

// withFile returns an HTTP client whose one connection starts by passing
// f (SCM_RIGHTS, attached to the marker byte); it is not reused.
func (c *Client) withFile(f *os.File) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", c.socket)
		if err != nil {
			return nil, err
		}
		var werr error
		raw, err := f.SyscallConn()
		if err == nil {
			err = raw.Control(func(fd uintptr) {
				_, _, werr = conn.(*net.UnixConn).WriteMsgUnix([]byte{marker}, unix.UnixRights(int(fd)), nil)
			})
		}
		if err = errors.Join(err, werr); err != nil {
			conn.Close()
			return nil, fmt.Errorf("pass %s to the daemon: %w", f.Name(), err)
		}
		return conn, nil
	}}
	return &http.Client{Transport: tr}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// do calls method path (with query) with req as its JSON body (none when
// nil), on a connection of its own that passes f when f is not nil. An
// answer other than 2xx becomes the error it carries.
func (c *Client) do(ctx context.Context, method, path string, req any, f *os.File) (*http.Response, error) {
	var body io.Reader
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	r, err := http.NewRequestWithContext(ctx, method, "http://rewind"+path, body)
	if err != nil {
		return nil, err
	}
	if req != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	hc := c.http
	if f != nil {
		hc = c.withFile(f)
	}
	resp, err := hc.Do(r)
	if err != nil {
		return nil, fmt.Errorf("the daemon did not answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var eb errorBody
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == "" {
			return nil, fmt.Errorf("the daemon answered %s", resp.Status)
		}
		return nil, decodeError(eb)
	}
	return resp, nil
}

// Call calls method path (e.g. "GET", "/v1/mounts") with req as its
// JSON body (nil: none) and decodes the answer into out (if not nil).
func (c *Client) Call(ctx context.Context, method, path string, req, out any) error {
	return c.CallWithFile(ctx, method, path, req, nil, out)
}

// CallWithFile is Call on a connection of its own that passes f to the
// daemon first (see PassedFile); with f nil it is Call.
func (c *Client) CallWithFile(ctx context.Context, method, path string, req any, f *os.File, out any) error {
	resp, err := c.do(ctx, method, path, req, f)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// stream reads a streamed answer, reporting progress, into out.
func (c *Client) stream(ctx context.Context, path string, req, out any, f *os.File, p catalog.ProgressFunc) error {
	resp, err := c.do(ctx, http.MethodPost, path, req, f)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var l streamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("bad answer from the daemon: %w", err)
		}
		switch {
		case l.Progress != nil:
			if p != nil {
				p(l.Progress.Done, l.Progress.Total)
			}
		case l.Error != nil:
			return decodeError(*l.Error)
		case l.Result != nil:
			return json.Unmarshal(l.Result, out)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the daemon ended the answer early")
}

// vpath is /v1/volumes/NAME followed by sub.
func vpath(name, sub string) string { return "/v1/volumes/" + url.PathEscape(name) + sub }

// query appends the non-empty values of kv (key, value, ...) to path.
func query(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// splitSpec cuts VOLUME[@WHEN].
func splitSpec(spec string) (volume, when string) {
	volume, when, _ = strings.Cut(spec, "@")
	return volume, when
}

func (c *Client) Import(ctx context.Context, r catalog.ImportRequest, p catalog.ProgressFunc) (*catalog.ImportResult, error) {
	out := new(catalog.ImportResult)
	return out, c.stream(ctx, "/v1/imports", r, out, r.File, p)
}

func (c *Client) Volumes(ctx context.Context) ([]catalog.VolumeInfo, error) {
	var out []catalog.VolumeInfo
	return out, c.Call(ctx, http.MethodGet, "/v1/volumes", nil, &out)
}

func (c *Client) CreateVolume(ctx context.Context, r catalog.CreateRequest) (*catalog.VolumeInfo, error) {
	out := new(catalog.VolumeInfo)
	return out, c.Call(ctx, http.MethodPost, "/v1/volumes", r, out)
}

func (c *Client) RemoveVolume(ctx context.Context, name string, force bool) error {
	f := ""
	if force {
		f = "true"
	}
	return c.Call(ctx, http.MethodDelete, query(vpath(name, ""), "force", f), nil, nil)
}

func (c *Client) Log(ctx context.Context, r catalog.LogRequest) ([]catalog.LogEntry, error) {
	var out []catalog.LogEntry
	limit := ""
	if r.Limit != 0 {
		limit = strconv.Itoa(r.Limit)
	}
	return out, c.Call(ctx, http.MethodGet, query(vpath(r.Volume, "/versions"), "since", r.Since, "until", r.Until, "limit", limit), nil, &out)
}

// Activity counts a volume's versions per interval.
func (c *Client) Activity(ctx context.Context, r catalog.ActivityRequest) (*catalog.Activity, error) {
	out := new(catalog.Activity)
	n := ""
	if r.Buckets != 0 {
		n = strconv.Itoa(r.Buckets)
	}
	return out, c.Call(ctx, http.MethodGet, query(vpath(r.Volume, "/activity"), "since", r.Since, "until", r.Until, "buckets", n), nil, out)
}

// Instant resolves VOLUME[@WHEN] to its instant.
func (c *Client) Instant(ctx context.Context, spec string) (*catalog.Resolved, error) {
	out := new(catalog.Resolved)
	return out, c.Call(ctx, http.MethodGet, query("/v1/resolve", "spec", spec), nil, out)
}

func (c *Client) Diff(ctx context.Context, a, b string) (*catalog.DiffResult, error) {
	va, wa := splitSpec(a)
	vb, wb := splitSpec(b)
	if va != vb {
		return nil, catalog.Errorf(catalog.ErrInvalid, "diff compares two instants of one volume, not %s and %s", va, vb)
	}
	out := new(catalog.DiffResult)
	return out, c.Call(ctx, http.MethodGet, query(vpath(va, "/diff"), "from", wa, "to", wb), nil, out)
}

func (c *Client) AddPoint(ctx context.Context, spec, label string) (*catalog.Point, error) {
	volume, when := splitSpec(spec)
	out := new(catalog.Point)
	return out, c.Call(ctx, http.MethodPost, vpath(volume, "/points"), PointRequest{Label: label, At: when}, out)
}

func (c *Client) Points(ctx context.Context, volume string) ([]catalog.Point, error) {
	var out []catalog.Point
	return out, c.Call(ctx, http.MethodGet, vpath(volume, "/points"), nil, &out)
}

func (c *Client) RemovePoint(ctx context.Context, volume, label string) error {
	return c.Call(ctx, http.MethodDelete, vpath(volume, "/points/"+url.PathEscape(label)), nil, nil)
}

func (c *Client) SetRetention(ctx context.Context, r catalog.Retention) (*catalog.Retention, error) {
	out := new(catalog.Retention)
	return out, c.Call(ctx, http.MethodPut, vpath(r.Volume, "/retention"), r, out)
}

func (c *Client) Retention(ctx context.Context, volume string) (*catalog.Retention, error) {
	out := new(catalog.Retention)
	return out, c.Call(ctx, http.MethodGet, vpath(volume, "/retention"), nil, out)
}

func (c *Client) Prune(ctx context.Context, r catalog.PruneRequest) ([]catalog.PruneResult, error) {
	var out []catalog.PruneResult
	return out, c.Call(ctx, http.MethodPost, "/v1/prune", r, &out)
}

// Verify scrubs the store, reporting progress to p.
func (c *Client) Verify(ctx context.Context, r catalog.VerifyRequest, p catalog.ProgressFunc) (*catalog.VerifyResult, error) {
	out := new(catalog.VerifyResult)
	return out, c.stream(ctx, "/v1/verify", r, out, nil, p)
}

// Replicate copies the store to a second site, reporting progress to p.
func (c *Client) Replicate(ctx context.Context, r catalog.ReplicateRequest, p catalog.ProgressFunc) (*catalog.ReplicateResult, error) {
	out := new(catalog.ReplicateResult)
	return out, c.stream(ctx, "/v1/replications", r, out, nil, p)
}

// GC collects the chunks nothing references.
func (c *Client) GC(ctx context.Context, r catalog.GCRequest) (*catalog.GCResult, error) {
	out := new(catalog.GCResult)
	return out, c.Call(ctx, http.MethodPost, "/v1/gc", r, out)
}

func (c *Client) Export(ctx context.Context, r catalog.ExportRequest, w io.Writer, p catalog.ProgressFunc) (*catalog.ExportResult, error) {
	if r.Dest != "-" {
		out := new(catalog.ExportResult)
		return out, c.stream(ctx, "/v1/exports", r, out, r.File, p)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/exports", r, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return nil, err
	}
	if t := resp.Trailer.Get("X-Rewind-Error"); t != "" {
		var eb errorBody
		if json.Unmarshal([]byte(t), &eb) == nil {
			return nil, decodeError(eb)
		}
		return nil, errors.New(t)
	}
	return &catalog.ExportResult{Spec: r.Spec, Size: n}, nil
}

func (c *Client) Clone(ctx context.Context, spec, name string) (*catalog.VolumeInfo, error) {
	out := new(catalog.VolumeInfo)
	return out, c.Call(ctx, http.MethodPost, "/v1/clones", CloneRequest{From: spec, Name: name}, out)
}

func (c *Client) Stats(ctx context.Context) (*catalog.Stats, error) {
	out := new(catalog.Stats)
	return out, c.Call(ctx, http.MethodGet, "/v1/stats", nil, out)
}
