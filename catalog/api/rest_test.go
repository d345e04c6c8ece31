package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/catalog"
)

// restServer serves a real catalog over HTTP, as --http does, without the
// guard.
func restServer(t *testing.T) (*httptest.Server, *catalog.Service) {
	t.Helper()
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	srv := httptest.NewServer(Handler(svc, ServerInfo{Version: "test", NBD: "127.0.0.1:10809", Data: svc.Dir()}))
	t.Cleanup(srv.Close)
	return srv, svc
}

// call makes one request; body is JSON unless ctype says otherwise.
func call(t *testing.T, srv *httptest.Server, method, path, ctype, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// want checks an answer's status and, for an error, its shape and code.
func want(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s: %s %s, want %d", what, resp.Status, body, status)
	}
	if code == "" {
		return
	}
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%s: the error is not JSON (%s): %q", what, resp.Header.Get("Content-Type"), body)
	}
	msg, _ := e["error"].(string)
	if len(e) != 2 || e["code"] != code || msg == "" || strings.Contains(msg, "\n") {
		t.Fatalf("%s: error %s, want {\"error\": one line, \"code\": %q}", what, body, code)
	}
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return v
}

// TestREST drives the resource routes over HTTP: status codes, Location,
// the error shape and its codes.
func TestREST(t *testing.T) {
	srv, _ := restServer(t)
	const js = "application/json"

	resp, b := call(t, srv, "GET", "/v1/server", "", "")
	want(t, "server", resp, b, 200, "")
	if info := decode[ServerInfo](t, b); info.Version != "test" || info.NBD != "127.0.0.1:10809" || info.Data == "" {
		t.Fatalf("server: %s", b)
	}
	resp, b = call(t, srv, "GET", "/v1/openapi.json", "", "")
	want(t, "openapi", resp, b, 200, "")
	if doc := decode[map[string]any](t, b); doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi.json: %.200s", b)
	}

	// Volumes: create (201 + Location), taken (409), malformed (400),
	// missing (404).
	resp, b = call(t, srv, "POST", "/v1/volumes", js, `{"volume":"a","size":1048576}`)
	want(t, "create", resp, b, 201, "")
	if loc := resp.Header.Get("Location"); loc != "/v1/volumes/a" || decode[catalog.VolumeInfo](t, b).Name != "a" {
		t.Fatalf("create: Location %q, %s", loc, b)
	}
	resp, b = call(t, srv, "POST", "/v1/volumes", js, `{"volume":"a","size":1048576}`)
	want(t, "create a taken name", resp, b, 409, "exists")
	resp, b = call(t, srv, "POST", "/v1/volumes", js, `{"volume":`)
	want(t, "a malformed body", resp, b, 400, "invalid")
	resp, b = call(t, srv, "POST", "/v1/volumes", js, `{"volume":"bad name/","size":1048576}`)
	want(t, "a bad name", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/a", "", "")
	want(t, "get", resp, b, 200, "")
	resp, b = call(t, srv, "GET", "/v1/volumes/nope", "", "")
	want(t, "get a missing volume", resp, b, 404, "not_found")
	resp, b = call(t, srv, "GET", "/v1/volumes/nope/versions", "", "")
	want(t, "versions of a missing volume", resp, b, 404, "not_found")

	// A volume with two versions, imported as raw bytes.
	for i, at := range []string{"2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z"} {
		data := bytes.Repeat([]byte{byte(i + 1)}, 1<<16)
		resp, b = call(t, srv, "POST", "/v1/imports?volume=b&block_size=4096&at="+at, "application/octet-stream", string(data))
		want(t, "import", resp, b, 200, "")
		if !strings.Contains(string(b), `"result"`) {
			t.Fatalf("import: %s", b)
		}
	}
	resp, b = call(t, srv, "GET", "/v1/volumes/b/versions", "", "")
	want(t, "versions", resp, b, 200, "")
	if vs := decode[[]catalog.LogEntry](t, b); len(vs) != 2 {
		t.Fatalf("versions: %s", b)
	}
	resp, b = call(t, srv, "GET", "/v1/volumes/b/versions?limit=1", "", "")
	want(t, "versions?limit=1", resp, b, 200, "")
	if vs := decode[[]catalog.LogEntry](t, b); len(vs) != 1 || vs[0].Time.String() != "2026-11-25T10:05:00Z" {
		t.Fatalf("versions?limit=1: %s", b)
	}
	resp, b = call(t, srv, "GET", "/v1/volumes/b/versions?since=2026-11-25T99:00:00Z", "", "")
	want(t, "a bad WHEN", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/b/versions?limit=many", "", "")
	want(t, "a bad limit", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/b/activity?buckets=5", "", "")
	want(t, "activity", resp, b, 200, "")
	if a := decode[catalog.Activity](t, b); a.Versions != 2 || len(a.Buckets) != 5 || a.Buckets[0].Versions != 1 || a.Buckets[4].Versions != 1 {
		t.Fatalf("activity: %s", b)
	}
	resp, b = call(t, srv, "GET", "/v1/volumes/b/activity?buckets=9999", "", "")
	want(t, "too many buckets", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/b/diff?from=2026-11-25T10:00:00Z&to=latest", "", "")
	want(t, "diff", resp, b, 200, "")
	if d := decode[catalog.DiffResult](t, b); d.Bytes != 1<<16 {
		t.Fatalf("diff: %s", b)
	}

	// Points.
	resp, b = call(t, srv, "POST", "/v1/volumes/b/points", js, `{"label":"before","at":"2026-11-25T10:00:00Z"}`)
	want(t, "add a point", resp, b, 201, "")
	if loc := resp.Header.Get("Location"); loc != "/v1/volumes/b/points/before" {
		t.Fatalf("add a point: Location %q", loc)
	}
	resp, b = call(t, srv, "POST", "/v1/volumes/b/points", js, `{"label":"before"}`)
	want(t, "a taken label", resp, b, 409, "exists")
	resp, b = call(t, srv, "POST", "/v1/volumes/b/points", js, `{"label":"x","at":"25/11/2026"}`)
	want(t, "a point at a bad WHEN", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/b/points", "", "")
	want(t, "points", resp, b, 200, "")
	if ps := decode[[]catalog.Point](t, b); len(ps) != 1 || ps[0].Label != "before" {
		t.Fatalf("points: %s", b)
	}

	// Resolve.
	resp, b = call(t, srv, "GET", "/v1/resolve?spec=b@before", "", "")
	want(t, "resolve", resp, b, 200, "")
	if r := decode[catalog.Resolved](t, b); r.Volume != "b" || r.Spec != "b@20261125T100000Z" || r.Export != r.Spec || r.Instant.String() != "2026-11-25T10:00:00Z" {
		t.Fatalf("resolve: %s", b)
	}
	resp, b = call(t, srv, "GET", "/v1/resolve?spec=b@2026-11-25T99:00:00Z", "", "")
	want(t, "resolve a bad WHEN", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/resolve", "", "")
	want(t, "resolve nothing", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/resolve?spec=nope@latest", "", "")
	want(t, "resolve a missing volume", resp, b, 404, "not_found")

	// Clones.
	resp, b = call(t, srv, "POST", "/v1/clones", js, `{"from":"b@before","name":"c"}`)
	want(t, "clone", resp, b, 201, "")
	if v := decode[catalog.VolumeInfo](t, b); v.Name != "c" || v.Parent != "b" || resp.Header.Get("Location") != "/v1/volumes/c" {
		t.Fatalf("clone: %s, Location %q", b, resp.Header.Get("Location"))
	}
	resp, b = call(t, srv, "POST", "/v1/clones", js, `{"from":"b@before","name":"c"}`)
	want(t, "clone onto a taken name", resp, b, 409, "exists")
	resp, b = call(t, srv, "POST", "/v1/clones", js, `{"from":"b@-2x","name":"d"}`)
	want(t, "clone a bad WHEN", resp, b, 400, "invalid")
	resp, b = call(t, srv, "POST", "/v1/clones", js, `{"from":"nope@latest","name":"d"}`)
	want(t, "clone a missing volume", resp, b, 404, "not_found")

	// Retention.
	resp, b = call(t, srv, "PUT", "/v1/volumes/b/retention", js, `{"keep_all":"7d"}`)
	want(t, "set retention", resp, b, 200, "")
	if r := decode[catalog.Retention](t, b); r.Volume != "b" || r.KeepAll.String() != "7d" {
		t.Fatalf("retention: %s", b)
	}
	resp, b = call(t, srv, "PUT", "/v1/volumes/b/retention", js, `{"volume":"a","keep_all":"7d"}`)
	want(t, "retention of another volume", resp, b, 400, "invalid")
	resp, b = call(t, srv, "GET", "/v1/volumes/b/retention", "", "")
	want(t, "retention", resp, b, 200, "")

	// Deletes answer 204 with no body.
	resp, b = call(t, srv, "DELETE", "/v1/volumes/b/points/before", "", "")
	want(t, "remove a point", resp, b, 204, "")
	if len(b) != 0 {
		t.Fatalf("204 with a body: %q", b)
	}
	resp, b = call(t, srv, "DELETE", "/v1/volumes/b/points/before", "", "")
	want(t, "remove a missing point", resp, b, 404, "not_found")
	resp, b = call(t, srv, "DELETE", "/v1/volumes/b?force=maybe", "", "")
	want(t, "a bad force", resp, b, 400, "invalid")
	resp, b = call(t, srv, "DELETE", "/v1/volumes/b", "", "")
	want(t, "remove a volume a clone starts from", resp, b, 409, "conflict")
	resp, b = call(t, srv, "DELETE", "/v1/volumes/c", "", "")
	want(t, "remove", resp, b, 204, "")
	resp, b = call(t, srv, "GET", "/v1/volumes/c", "", "")
	want(t, "get a removed volume", resp, b, 404, "not_found")

	resp, b = call(t, srv, "GET", "/v1/stats", "", "")
	want(t, "stats", resp, b, 200, "")

	// What no route serves, in the same shape.
	resp, b = call(t, srv, "GET", "/v1/nothing", "", "")
	want(t, "an unknown path", resp, b, 404, "not_found")
	resp, b = call(t, srv, "POST", "/v1/clone", js, `{}`)
	want(t, "an old RPC name", resp, b, 404, "not_found")
	resp, b = call(t, srv, "PATCH", "/v1/volumes", js, `{}`)
	want(t, "a method the path does not take", resp, b, 405, "invalid")
	if !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Fatalf("405 without Allow: %v", resp.Header)
	}
}

// TestRESTThroughGuard: on --http the same routes answer behind Guard,
// whose refusals have the same shape.
func TestRESTThroughGuard(t *testing.T) {
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(t.TempDir(), "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	token := strings.Repeat("ab", 16)
	srv := httptest.NewServer(Guard(Handler(svc, ServerInfo{}), Remote{Token: token, Addr: "127.0.0.1:0"}))
	defer srv.Close()
	bearer := "Bearer " + token

	resp, b := call(t, srv, "GET", "/v1/volumes", "", "")
	want(t, "no token", resp, b, 401, "unauthorized")
	resp, b = call(t, srv, "POST", "/v1/volumes", "application/json", `{"volume":"a","size":65536}`, "Authorization", "Bearer wrong")
	want(t, "a wrong token", resp, b, 401, "unauthorized")
	resp, b = call(t, srv, "POST", "/v1/volumes", "text/plain", `{"volume":"a","size":65536}`, "Authorization", bearer)
	if resp.StatusCode != 415 || !strings.Contains(string(b), `"code"`) {
		t.Fatalf("text/plain: %s %s, want 415 with a code", resp.Status, b)
	}
	resp, b = call(t, srv, "POST", "/v1/volumes", "application/json", `{"volume":"a","size":65536}`, "Authorization", bearer)
	want(t, "create with the token", resp, b, 201, "")
	resp, b = call(t, srv, "GET", "/v1/volumes/a", "", "", "Authorization", bearer)
	want(t, "get with the token", resp, b, 200, "")
	resp, b = call(t, srv, "DELETE", "/v1/volumes/a", "", "", "Authorization", bearer)
	want(t, "delete with the token", resp, b, 204, "")
}
