package integration

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"
	"testing"
)

// TestConsoleLink: rewind console prints a link that signs a browser in;
// the link is refused over --http, to anyone but root and DATA's owner
// on the socket, and said missing when the daemon serves no --http.
func TestConsoleLink(t *testing.T) {
	rw, _ := accessRewind(t)
	srv := rw.Serve(serveOptions{HTTP: true})
	token := srv.APIToken(t)

	res := rw.MustRun("console")
	link := strings.TrimSpace(res)
	if want := "http://" + srv.HTTPAddr + "/?token=" + token; link != want {
		t.Fatalf("rewind console printed %q, want %q", link, want)
	}
	var js struct{ URL string }
	if err := json.Unmarshal([]byte(rw.MustRun("console", "--json")), &js); err != nil || js.URL != link {
		t.Fatalf("rewind console --json: %+v, %v", js, err)
	}

	// The link signs in: the API answers with the cookie it sets, and
	// without it nothing.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.RawQuery != "" {
		t.Errorf("after signing in the address still holds %q", resp.Request.URL.RawQuery)
	}
	resp, err = c.Get("http://" + srv.HTTPAddr + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/volumes with the session: %s", resp.Status)
	}
	resp, err = http.Get("http://" + srv.HTTPAddr + "/v1/volumes")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/volumes without a session: %s, want 401", resp.Status)
	}

	// Over --http the link is not given, even to the token's holder.
	req, _ := http.NewRequest("GET", "http://"+srv.HTTPAddr+"/v1/console", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET /v1/console over --http: %s, want 403", resp.Status)
	}
	// The daemon counts the calls by route, the refusals and the
	// sign-ins; a wrong token in the link is a refused sign-in.
	resp, err = http.Get("http://" + srv.HTTPAddr + "/?token=" + strings.Repeat("0", 64))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	page := metrics(t, srv)
	for series, want := range map[string]float64{
		`rewind_api_requests_total{code="200",method="GET",route="/v1/console",transport="socket"}`: 2,
		`rewind_api_requests_total{code="200",method="GET",route="/v1/volumes",transport="http"}`:   1,
		`rewind_api_requests_total{code="403",method="GET",route="/v1/console",transport="http"}`:   1,
		`rewind_api_refused_total{code="401"}`:                                                      1,
		`rewind_console_signins_total{result="ok"}`:                                                 1,
		`rewind_console_signins_total{result="refused"}`:                                            1,
	} {
		if got := metricValue(page, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}

	// Nor to another user on the socket.
	if err := os.Chmod(rw.Socket(), 0o666); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, "rewind console as another user", rw.runAsNobody("console"), "not uid 65534")
	os.Chmod(rw.Socket(), 0o600)
	if code := srv.Stop(); code != 0 {
		t.Fatalf("the daemon exited %d", code)
	}

	// A daemon without --http has no console.
	rw.Serve(serveOptions{})
	oneLineError(t, "rewind console without --http", rw.Run("console"), "start it with --http")
}
