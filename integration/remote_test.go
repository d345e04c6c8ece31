package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/catalog/api"
)

// apiRoutes lists every route of the API's OpenAPI document as "METHOD
// /path", with each {parameter} replaced by name.
func apiRoutes(t *testing.T, name string) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[a-z]+\}`)
	var out []string
	for path, ops := range doc.Paths {
		for method := range ops {
			out = append(out, strings.ToUpper(method)+" "+param.ReplaceAllString(path, name))
		}
	}
	sort.Strings(out)
	if len(out) < 30 {
		t.Fatalf("the OpenAPI document lists %d routes", len(out))
	}
	return out
}

// curlStatus runs curl as the given user (nil: root) and returns the HTTP
// status and body of one request.
func curlStatus(t *testing.T, asUser []string, args ...string) (string, string) {
	t.Helper()
	cmd := append(append([]string{}, asUser...), "curl", "-s", "-w", "\n%{http_code}")
	res := runCmd(t, nil, nil, cmd[0], append(cmd[1:], args...)...)
	if res.Code != 0 {
		t.Fatalf("curl %s: %s", strings.Join(args, " "), res)
	}
	i := strings.LastIndexByte(res.Stdout, '\n')
	return res.Stdout[i+1:], res.Stdout[:i]
}

// TestRemoteAPIRefusesStrangers: on --http, every /v1 call without the
// token is 401, cross-site and rebinding requests are 403 and change
// nothing, pprof is not there unless asked for, and with the token the
// API works; for root and for an unprivileged local user alike.
func TestRemoteAPIRefusesStrangers(t *testing.T) {
	requireTool(t, "curl", "curl")
	setpriv := requireTool(t, "setpriv", "util-linux")
	rw := newRewind(t)
	rw.MustRun("volume", "create", "db01", "--size", "1MiB")
	srv := rw.Serve(serveOptions{HTTP: true})
	tokenFile := filepath.Join(rw.Data, "api-token")
	st, err := os.Stat(tokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("DATA/api-token: %v, %v; want mode 0600", st, err)
	}
	tok, _ := os.ReadFile(tokenFile)
	bearer := "Authorization: Bearer " + strings.TrimSpace(string(tok))
	base := "http://" + srv.HTTPAddr
	json := "Content-Type: application/json"

	nobody := []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, who := range [][]string{nil, nobody} {
		// Every route of the API, and one that is none.
		for _, call := range append(apiRoutes(t, "db01"), "POST /v1/nosuch") {
			method, path, _ := strings.Cut(call, " ")
			code, body := curlStatus(t, who, "-X", method, "-H", json, "-d", `{"name":"db01","force":true}`, base+path+"?force=true")
			if code != "401" {
				t.Errorf("%s without the token (as %v): %s %s", call, who, code, body)
			}
		}
		// A page on another site posts a form with the token it could not
		// know, or even with it: refused either way.
		for _, auth := range []string{"X-None: 1", bearer} {
			code, body := curlStatus(t, who, "-X", "DELETE", "-H", "Content-Type: text/plain", "-H", "Origin: http://evil.example",
				"-H", auth, base+"/v1/volumes/db01?force=true")
			if code != "403" {
				t.Errorf("cross-site text/plain remove (%s): %s %s", auth, code, body)
			}
		}
		code, body := curlStatus(t, who, "-X", "DELETE", "-H", bearer, "-H", "Host: evil.example",
			base+"/v1/volumes/db01?force=true")
		if code != "403" {
			t.Errorf("remove with a foreign Host: %s %s", code, body)
		}
		if code, _ := curlStatus(t, who, "-H", bearer, base+"/debug/pprof/"); code != "404" {
			t.Errorf("/debug/pprof/ without --debug-pprof: %s", code)
		}
		if code, _ := curlStatus(t, who, base+"/metrics"); code != "200" {
			t.Errorf("/metrics: %s; it stays open", code)
		}
	}
	if out := rw.MustRun("volume", "list"); !strings.Contains(out, "db01") {
		t.Fatalf("a refused request removed db01:\n%s", out)
	}

	// With the token, the API answers.
	code, body := curlStatus(t, nil, "-X", "POST", "-H", json, "-H", bearer,
		"-d", `{"from":"db01@latest","name":"db01-test"}`, base+"/v1/clones")
	if code != "201" || !strings.Contains(body, `"db01-test"`) {
		t.Fatalf("clone with the token: %s %s", code, body)
	}
	code, body = curlStatus(t, nil, "-H", bearer, base+"/v1/volumes")
	if code != "200" || !strings.Contains(body, `"db01-test"`) {
		t.Fatalf("volumes with the token: %s %s", code, body)
	}

	// Over TCP, import and export move bytes; a path on the server is
	// never opened for the caller.
	img := filepath.Join(t.TempDir(), "web01.img")
	data := bytes.Repeat([]byte("rewind over the network "), 1<<16) // 1.5 MiB, not a multiple of a block
	os.WriteFile(img, data, 0o644)
	code, body = curlStatus(t, nil, "-X", "POST", "-H", bearer, "-H", "Content-Type: application/octet-stream",
		"--data-binary", "@"+img, base+"/v1/imports?volume=web01&block_size=4096")
	if code != "200" || !strings.Contains(body, `"created":true`) {
		t.Fatalf("import of a stream: %s %s", code, body)
	}
	back := filepath.Join(t.TempDir(), "back.img")
	mustRunCmd(t, "curl", "-sf", "-o", back, "-H", bearer, "-H", json, "-d", `{"spec":"web01@latest","dest":"-"}`, base+"/v1/exports")
	if got, _ := os.ReadFile(back); !bytes.Equal(got, data) {
		t.Fatalf("export of the streamed import: %d bytes differ from the %d sent", len(got), len(data))
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("root only"), 0o600)
	dest := filepath.Join(t.TempDir(), "written-by-the-daemon")
	for call, req := range map[string]string{
		"imports": `{"volume":"stolen","source":"` + secret + `"}`,
		"exports": `{"spec":"web01@latest","dest":"` + dest + `"}`,
	} {
		if code, body := curlStatus(t, nil, "-X", "POST", "-H", bearer, "-H", json, "-d", req, base+"/v1/"+call); code != "400" {
			t.Errorf("%s of a path on the server over TCP: %s %s", call, code, body)
		}
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("an export over TCP created a file on the server")
	}
	if out := rw.MustRun("volume", "list"); strings.Contains(out, "stolen") {
		t.Errorf("an import over TCP read a path on the server:\n%s", out)
	}
	srv.Stop()

	// pprof, when asked for, still wants the token.
	srv = rw.Serve(serveOptions{HTTP: true, Args: []string{"--debug-pprof"}})
	base = "http://" + srv.HTTPAddr
	if code, _ := curlStatus(t, nil, base+"/debug/pprof/"); code != "401" {
		t.Errorf("/debug/pprof/ without the token: %s", code)
	}
	if code, _ := curlStatus(t, nil, "-H", bearer, base+"/debug/pprof/"); code != "200" {
		t.Errorf("/debug/pprof/ with the token and --debug-pprof: %s", code)
	}
}

// TestRemoteAPIOverHTTPS: with --tls-cert the HTTP port speaks HTTPS with
// the same certificate as NBD, and the token still decides.
func TestRemoteAPIOverHTTPS(t *testing.T) {
	requireTool(t, "curl", "curl")
	_, cert, key, ca := makePKI(t)
	rw := newRewind(t)
	rw.MustRun("volume", "create", "db01", "--size", "1MiB")
	srv := rw.Serve(serveOptions{HTTP: true, Args: []string{"--tls-cert", cert, "--tls-key", key}})
	tok, err := os.ReadFile(filepath.Join(rw.Data, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(srv.HTTPAddr, ":")
	url := "https://localhost:" + port + "/v1/volumes"
	bearer := "Authorization: Bearer " + strings.TrimSpace(string(tok))
	if code, body := curlStatus(t, nil, "--cacert", ca, "-H", bearer, url); code != "200" || !strings.Contains(body, `"db01"`) {
		t.Errorf("HTTPS with the token: %s %s", code, body)
	}
	if code, _ := curlStatus(t, nil, "--cacert", ca, url); code != "401" {
		t.Errorf("HTTPS without the token: %s", code)
	}
	if code, body := curlStatus(t, nil, "-H", bearer, "http://"+srv.HTTPAddr+"/v1/volumes"); code == "200" {
		t.Errorf("plain HTTP to the HTTPS port answered: %s", body)
	}
}
