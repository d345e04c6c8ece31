package console

import (
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/catalog/api"
)

const token = "0123456789abcdef0123456789abcdef"

// server serves the console and, behind the same guard, an API that
// answers 200 to whoever the guard lets through.
func server(t *testing.T) (*httptest.Server, *int) {
	return serverWith(t, api.NewSessions(token))
}

// serverWith is server with the given sessions.
func serverWith(t *testing.T, sessions *api.Sessions) (*httptest.Server, *int) {
	t.Helper()
	reached := new(int)
	srv := httptest.NewUnstartedServer(nil)
	remote := api.Remote{Token: token, Addr: srv.Listener.Addr().String(), Sessions: sessions}
	mux := http.NewServeMux()
	mux.Handle("/v1/", api.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*reached++
		w.Write([]byte(`[]`))
	}), remote))
	mux.Handle("/", Handler(remote, nil))
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, reached
}

func client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func do(t *testing.T, c *http.Client, method, u string, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestSignInLink signs in with /?token=, checks the cookie's attributes,
// and that the session reads the API and changes state only with its
// CSRF token.
func TestSignInLink(t *testing.T) {
	srv, reached := server(t)
	c := client(t)

	resp := do(t, c, "GET", srv.URL+"/?token="+strings.Repeat("f", 32), "", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?signin=refused" || len(resp.Cookies()) != 0 {
		t.Fatalf("a wrong token: %d to %q, cookies %v; want 303 to /?signin=refused and no cookie", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	if resp := do(t, c, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusUnauthorized || *reached != 0 {
		t.Fatalf("API without a session: %d, reached %d; want 401", resp.StatusCode, *reached)
	}

	resp = do(t, c, "GET", srv.URL+"/?token="+token, "", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("the token link: %d to %q; want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, x := range resp.Cookies() {
		if x.Name == api.SessionCookie {
			ck = x
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
	}
	if strings.Contains(ck.Value, token) {
		t.Fatal("the session cookie holds the token")
	}

	if resp := do(t, c, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusOK || *reached != 1 {
		t.Fatalf("GET with the session: %d; want 200", resp.StatusCode)
	}
	js := map[string]string{"Content-Type": "application/json"}
	if resp := do(t, c, "POST", srv.URL+"/v1/clones", "{}", js); resp.StatusCode != http.StatusForbidden || *reached != 1 {
		t.Fatalf("POST with the session but no CSRF token: %d; want 403", resp.StatusCode)
	}
	if resp := do(t, c, "POST", srv.URL+"/v1/clones", "{}", map[string]string{"Content-Type": "application/json", api.CSRFHeader: "nope"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST with a wrong CSRF token: %d; want 403", resp.StatusCode)
	}

	// The page reads its CSRF token from /session.
	req, _ := http.NewRequest("GET", srv.URL+"/session", nil)
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := r2.Body.Read(buf)
	b.Write(buf[:n])
	r2.Body.Close()
	m := regexp.MustCompile(`"csrf":"([0-9a-f]+)"`).FindStringSubmatch(b.String())
	if r2.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("GET /session: %d %s", r2.StatusCode, b.String())
	}
	hdr := map[string]string{"Content-Type": "application/json", api.CSRFHeader: m[1]}
	if resp := do(t, c, "POST", srv.URL+"/v1/clones", "{}", hdr); resp.StatusCode != http.StatusOK || *reached != 2 {
		t.Fatalf("POST with the session and its CSRF token: %d; want 200", resp.StatusCode)
	}
	// A form post from another site gets nowhere, token or not.
	cross := map[string]string{"Content-Type": "application/json", api.CSRFHeader: m[1], "Origin": "http://evil.example"}
	if resp := do(t, c, "POST", srv.URL+"/v1/clones", "{}", cross); resp.StatusCode != http.StatusForbidden || *reached != 2 {
		t.Fatalf("cross-site POST: %d; want 403", resp.StatusCode)
	}

	// Signing out ends the session, even for a copy of the cookie.
	u, _ := url.Parse(srv.URL)
	saved := c.Jar.Cookies(u)
	do(t, c, "DELETE", srv.URL+"/session", "", nil)
	if resp := do(t, c, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after signing out: %d; want 401", resp.StatusCode)
	}
	replay := client(t)
	replay.Jar.SetCookies(u, saved)
	if resp := do(t, replay, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusUnauthorized || *reached != 2 {
		t.Fatalf("the signed-out cookie replayed: %d; want 401", resp.StatusCode)
	}
}

// TestSignOutSurvivesRestart: a signed-out cookie stays refused by a
// server started again on the same file of sign-outs (the daemon's
// DATA/console-signouts), while a session that did not sign out goes on;
// a damaged file is an error, not a fresh start.
func TestSignOutSurvivesRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "console-signouts")
	start := func() *httptest.Server {
		s := api.NewSessions(token)
		if err := s.KeepRevocations(file); err != nil {
			t.Fatal(err)
		}
		srv, _ := serverWith(t, s)
		return srv
	}
	srv := start()
	u, _ := url.Parse(srv.URL)
	out, stays := client(t), client(t)
	for _, c := range []*http.Client{out, stays} {
		if resp := do(t, c, "GET", srv.URL+"/?token="+token, "", nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign in: %d", resp.StatusCode)
		}
	}
	saved := out.Jar.Cookies(u)
	if resp := do(t, out, "DELETE", srv.URL+"/session", "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("sign out: %d; want 204", resp.StatusCode)
	}
	srv.Close()

	srv = start() // the daemon restarted
	u2, _ := url.Parse(srv.URL)
	replay := client(t)
	for _, c := range saved {
		c.Domain = ""
	}
	replay.Jar.SetCookies(u2, saved)
	if resp := do(t, replay, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the signed-out cookie after a restart: %d; want 401", resp.StatusCode)
	}
	kept := client(t)
	kept.Jar.SetCookies(u2, stays.Jar.Cookies(u))
	if resp := do(t, kept, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("a session that did not sign out, after a restart: %d; want 200", resp.StatusCode)
	}

	if err := os.WriteFile(file, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := api.NewSessions(token).KeepRevocations(file)
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged file of sign-outs: %v; want an error that says so", err)
	}
}

// TestSignInForm posts the token as the page's form does; a cross-site
// or form-encoded post is refused.
func TestSignInForm(t *testing.T) {
	srv, _ := server(t)
	c := client(t)
	if resp := do(t, c, "POST", srv.URL+"/session", `{"token":"`+strings.Repeat("0", 32)+`"}`, map[string]string{"Content-Type": "application/json"}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d; want 401", resp.StatusCode)
	}
	if resp := do(t, c, "POST", srv.URL+"/session", "token="+token, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("form-encoded: %d; want 415", resp.StatusCode)
	}
	if resp := do(t, c, "POST", srv.URL+"/session", `{"token":"`+token+`"}`, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site: %d; want 403", resp.StatusCode)
	}
	if resp := do(t, c, "POST", srv.URL+"/session", `{"token":"`+token+`"}`, map[string]string{"Content-Type": "application/json"}); resp.StatusCode != http.StatusOK {
		t.Fatalf("right token: %d; want 200", resp.StatusCode)
	}
	if resp := do(t, c, "GET", srv.URL+"/v1/volumes", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET after signing in: %d; want 200", resp.StatusCode)
	}
}

// TestPageHeaders checks that the page is served with its security
// headers, and refuses a Host that is not this server's.
func TestPageHeaders(t *testing.T) {
	srv, _ := server(t)
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
		resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("GET /: %d, headers %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Host = "rebound.example"
	if resp := do(t, http.DefaultClient, "GET", srv.URL+"/app.js", "", map[string]string{}); resp.StatusCode != 200 {
		t.Fatalf("GET /app.js: %d", resp.StatusCode)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign Host: %d; want 403", resp.StatusCode)
	}
}

// TestNothingFromElsewhere checks that the page loads nothing from
// another site: it must work with no network beyond this server.
func TestNothingFromElsewhere(t *testing.T) {
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//|fetch\(\s*["']https?:`)
	fs.WalkDir(static, "static", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(path)
		if loc := ext.FindIndex(b); loc != nil {
			t.Errorf("%s loads something from elsewhere: %q", path, b[loc[0]:loc[1]])
		}
		return nil
	})
}
