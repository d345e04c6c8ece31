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
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// Client is a catalog.API that calls the daemon on its socket.
type Client struct {
	http *http.Client
}

var _ catalog.API = (*Client)(nil)

// Dial connects to the daemon's socket. It fails at once when no daemon
// accepts there.
func Dial(socket string) (*Client, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{http: &http.Client{Transport: tr}}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) post(ctx context.Context, method string, req any) (*http.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://rewind/v1/"+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(r)
	if err != nil {
		return nil, fmt.Errorf("the daemon did not answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var eb errorBody
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == "" {
			return nil, fmt.Errorf("the daemon answered %s", resp.Status)
		}
		return nil, decodeError(eb)
	}
	return resp, nil
}

// Call invokes method with req and decodes the answer into out (if not nil).
func (c *Client) Call(ctx context.Context, method string, req, out any) error {
	resp, err := c.post(ctx, method, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// stream reads a streamed answer, reporting progress, into out.
func (c *Client) stream(ctx context.Context, method string, req, out any, p catalog.ProgressFunc) error {
	resp, err := c.post(ctx, method, req)
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

func (c *Client) Import(ctx context.Context, r catalog.ImportRequest, p catalog.ProgressFunc) (*catalog.ImportResult, error) {
	out := new(catalog.ImportResult)
	return out, c.stream(ctx, "import", r, out, p)
}

func (c *Client) Volumes(ctx context.Context) ([]catalog.VolumeInfo, error) {
	var out []catalog.VolumeInfo
	return out, c.Call(ctx, "volumes", struct{}{}, &out)
}

func (c *Client) CreateVolume(ctx context.Context, r catalog.CreateRequest) (*catalog.VolumeInfo, error) {
	out := new(catalog.VolumeInfo)
	return out, c.Call(ctx, "create", r, out)
}

func (c *Client) RemoveVolume(ctx context.Context, name string, force bool) error {
	return c.Call(ctx, "remove", nameReq{Name: name, Force: force}, nil)
}

func (c *Client) Log(ctx context.Context, r catalog.LogRequest) ([]catalog.LogEntry, error) {
	var out []catalog.LogEntry
	return out, c.Call(ctx, "log", r, &out)
}

func (c *Client) Diff(ctx context.Context, a, b string) (*catalog.DiffResult, error) {
	out := new(catalog.DiffResult)
	return out, c.Call(ctx, "diff", diffReq{From: a, To: b}, out)
}

func (c *Client) AddPoint(ctx context.Context, spec, label string) (*catalog.Point, error) {
	out := new(catalog.Point)
	return out, c.Call(ctx, "point-add", pointReq{Spec: spec, Label: label}, out)
}

func (c *Client) Points(ctx context.Context, volume string) ([]catalog.Point, error) {
	var out []catalog.Point
	return out, c.Call(ctx, "points", pointReq{Volume: volume}, &out)
}

func (c *Client) RemovePoint(ctx context.Context, volume, label string) error {
	return c.Call(ctx, "point-rm", pointReq{Volume: volume, Label: label}, nil)
}

func (c *Client) Export(ctx context.Context, r catalog.ExportRequest, w io.Writer, p catalog.ProgressFunc) (*catalog.ExportResult, error) {
	if r.Dest != "-" {
		out := new(catalog.ExportResult)
		return out, c.stream(ctx, "export", r, out, p)
	}
	resp, err := c.post(ctx, "export", r)
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
	return out, c.Call(ctx, "clone", cloneReq{Spec: spec, Name: name}, out)
}

func (c *Client) Stats(ctx context.Context) (*catalog.Stats, error) {
	out := new(catalog.Stats)
	return out, c.Call(ctx, "stats", struct{}{}, out)
}
