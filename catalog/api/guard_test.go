package api

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testToken = "0123456789abcdef0123456789abcdef"

// TestGuard sends each kind of request the TCP port must refuse, and the
// ones it must let through, and checks that refused ones never reach the
// API.
func TestGuard(t *testing.T) {
	reached := false
	h := Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }),
		Remote{Token: testToken, Addr: "127.0.0.1:8080", Hosts: []string{"backup.example.org"}})
	type req struct {
		name, method, path, host, ctype, auth string
		hdr                                   map[string]string
		want                                  int
	}
	bearer := "Bearer " + testToken
	for _, c := range []req{
		{"no token", "POST", "/v1/volumes", "127.0.0.1:8080", "application/json", "", nil, 401},
		{"wrong token", "POST", "/v1/volumes", "127.0.0.1:8080", "application/json", "Bearer " + strings.Repeat("0", 32), nil, 401},
		{"token in another scheme", "POST", "/v1/volumes", "127.0.0.1:8080", "application/json", "Basic " + testToken, nil, 401},
		{"token", "POST", "/v1/volumes", "127.0.0.1:8080", "application/json", bearer, nil, 200},
		{"json with charset", "POST", "/v1/clones", "127.0.0.1:8080", "application/json; charset=utf-8", bearer, nil, 200},
		{"GET", "GET", "/v1/volumes", "127.0.0.1:8080", "", bearer, nil, 200},
		{"read protections without token", "GET", "/v1/protections", "127.0.0.1:8080", "", "", nil, 401},
		{"text/plain post", "POST", "/v1/exports", "127.0.0.1:8080", "text/plain", bearer, nil, 415},
		{"form post", "POST", "/v1/clones", "127.0.0.1:8080", "application/x-www-form-urlencoded", bearer, nil, 415},
		{"no content type", "POST", "/v1/clones", "127.0.0.1:8080", "", bearer, nil, 415},
		{"raw bytes to import", "POST", "/v1/imports", "127.0.0.1:8080", "application/octet-stream", bearer, nil, 200},
		{"raw bytes elsewhere", "POST", "/v1/clones", "127.0.0.1:8080", "application/octet-stream", bearer, nil, 415},
		{"foreign origin", "POST", "/v1/clones", "127.0.0.1:8080", "text/plain", bearer, map[string]string{"Origin": "http://evil.example"}, 403},
		{"foreign origin, no token", "POST", "/v1/clones", "127.0.0.1:8080", "text/plain", "", map[string]string{"Origin": "http://evil.example"}, 403},
		{"null origin", "POST", "/v1/clones", "127.0.0.1:8080", "application/json", bearer, map[string]string{"Origin": "null"}, 403},
		{"same origin", "POST", "/v1/clones", "127.0.0.1:8080", "application/json", bearer, map[string]string{"Origin": "http://127.0.0.1:8080"}, 200},
		{"cross-site fetch", "POST", "/v1/clones", "127.0.0.1:8080", "application/json", bearer, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign host", "POST", "/v1/volumes", "evil.example:8080", "application/json", bearer, nil, 403},
		{"rebound host, same origin", "POST", "/v1/volumes", "evil.example:8080", "application/json", bearer, map[string]string{"Origin": "http://evil.example:8080"}, 403},
		{"empty host", "POST", "/v1/volumes", "", "application/json", bearer, nil, 403},
		{"localhost", "POST", "/v1/volumes", "localhost:8080", "application/json", bearer, nil, 200},
		{"an IP address", "POST", "/v1/volumes", "[::1]:8080", "application/json", bearer, nil, 200},
		{"an --http-host name", "POST", "/v1/volumes", "Backup.Example.org:8080", "application/json", bearer, nil, 200},
	} {
		reached = false
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(`{}`))
		r.Host = c.host
		if c.ctype != "" {
			r.Header.Set("Content-Type", c.ctype)
		}
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want || reached != (c.want == 200) {
			t.Errorf("%s: status %d (want %d), reached the API: %v; %s", c.name, w.Code, c.want, reached, w.Body.String())
		}
		if c.want != 200 && !strings.Contains(w.Body.String(), map[int]string{401: `"code":"unauthorized"`, 403: `"code":"forbidden"`, 415: `"code":"unsupported_media_type"`}[c.want]) {
			t.Errorf("%s: error body %s lacks the code of a %d", c.name, w.Body.String(), c.want)
		}
		if c.want == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	}
}

func TestLoadToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api-token")
	if _, err := LoadToken(path, false); err == nil {
		t.Fatal("a missing token file without create: no error")
	}
	tok, err := LoadToken(path, true)
	if err != nil || len(tok) < minTokenLen {
		t.Fatalf("new token %q: %v", tok, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v; want 0600", st.Mode(), err)
	}
	again, err := LoadToken(path, true)
	if err != nil || again != tok {
		t.Fatalf("second load %q, %v; want the first token", again, err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadToken(path, true); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a token file others can read: %v", err)
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("secret\n"), 0o600)
	if _, err := LoadToken(short, true); err == nil {
		t.Fatal("a short token was accepted")
	}
}
