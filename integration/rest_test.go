package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/catalog"
)

// restCall makes one call of the REST API on --http with the token and
// decodes a JSON answer into out (when not nil); it returns the answer.
func restCall(t *testing.T, srv *server, method, path, body string, out any) *http.Response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+srv.HTTPAddr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.APIToken(t))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %s: %v", method, path, b, err)
		}
	}
	if resp.StatusCode/100 != 2 {
		t.Logf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return resp
}

// TestHTTPCloneReadsBack: a clone made with POST /v1/clones over --http,
// with the bearer token, reads back over NBD sha256-identical to its
// source instant (an older version than the newest), which
// GET /v1/resolve names as an export.
func TestHTTPCloneReadsBack(t *testing.T) {
	rw := newRewind(t)
	dir := t.TempDir()
	old, cur := filepath.Join(dir, "old.img"), filepath.Join(dir, "cur.img")
	os.WriteFile(old, randomBytes(41, 4<<20), 0o644)
	os.WriteFile(cur, randomBytes(42, 4<<20), 0o644)
	rw.MustRun("import", "v", old)
	rw.MustRun("point", "add", "v@latest", "before")
	rw.MustRun("import", "v", cur)
	srv := rw.Serve(serveOptions{HTTP: true})

	var info struct {
		NBD  string `json:"nbd"`
		Data string `json:"data"`
	}
	if resp := restCall(t, srv, "GET", "/v1/server", "", &info); resp.StatusCode != 200 || info.NBD != srv.NBDAddr || info.Data != rw.Data {
		t.Fatalf("GET /v1/server: %s %+v, want nbd %s, data %s", resp.Status, info, srv.NBDAddr, rw.Data)
	}
	var at catalog.Resolved
	if resp := restCall(t, srv, "GET", "/v1/resolve?spec=v@before", "", &at); resp.StatusCode != 200 || at.Volume != "v" {
		t.Fatalf("GET /v1/resolve: %s %+v", resp.Status, at)
	}
	var clone catalog.VolumeInfo
	resp := restCall(t, srv, "POST", "/v1/clones", `{"from":"v@before","name":"v-copy"}`, &clone)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v1/volumes/v-copy" || clone.Name != "v-copy" || clone.Parent != "v" {
		t.Fatalf("POST /v1/clones: %s, Location %q, %+v", resp.Status, resp.Header.Get("Location"), clone)
	}
	want := sha256File(t, old)
	if got := exportSHA(t, srv.URI(at.Export)); got != want {
		t.Fatalf("the source instant %s reads %s, want the old image's %s", at.Export, got, want)
	}
	if got := exportSHA(t, srv.URI("v-copy")); got != want {
		t.Fatalf("the clone reads %s, want its source instant's %s", got, want)
	}
	if got := exportSHA(t, srv.URI("v")); got != sha256File(t, cur) {
		t.Fatalf("the volume's newest version reads %s, want the current image's", got)
	}
	// The name is taken now; a second clone is refused and changes nothing.
	if resp := restCall(t, srv, "POST", "/v1/clones", `{"from":"v@latest","name":"v-copy"}`, nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("a clone onto a taken name: %s", resp.Status)
	}
	if got := exportSHA(t, srv.URI("v-copy")); got != want {
		t.Fatal("a refused clone changed the clone")
	}
}

// TestHTTPMountWithoutDir: over --http a mount names no directory; the
// daemon mounts at DATA/mounts/VOLUME@INSTANT, a 0700 directory of its
// own, lists it, and removes it at unmount. A directory given over HTTP
// is refused, and nothing is mounted on it.
func TestHTTPMountWithoutDir(t *testing.T) {
	rw := newRewind(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, randomBytes(43, 2<<20), 0o644)
	rw.MustRun("import", "v", img)
	srv := rw.Serve(serveOptions{HTTP: true})

	mine := t.TempDir()
	if resp := restCall(t, srv, "POST", "/v1/mounts", `{"spec":"v@latest","dir":"`+mine+`"}`, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a mount onto a directory over HTTP: %s, want 403", resp.Status)
	}
	if m, err := isMountpoint(mine); err != nil || m {
		t.Fatalf("a refused mount mounted %s (%v)", mine, err)
	}

	var at catalog.Resolved
	restCall(t, srv, "GET", "/v1/resolve?spec=v@latest", "", &at)
	var res struct {
		Dir  string `json:"dir"`
		Spec string `json:"spec"`
	}
	resp := restCall(t, srv, "POST", "/v1/mounts", `{"spec":"v@latest"}`, &res)
	wantDir := filepath.Join(rw.Data, "mounts", at.Spec)
	if resp.StatusCode != http.StatusCreated || res.Dir != wantDir {
		t.Fatalf("POST /v1/mounts: %s %+v, want 201 at %s", resp.Status, res, wantDir)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/mounts?"+(url.Values{"dir": {wantDir}}).Encode() {
		t.Errorf("Location %q", loc)
	}
	if got := sha256File(t, filepath.Join(res.Dir, "disk.img")); got != sha256File(t, img) {
		t.Fatalf("%s/disk.img reads %s, want the image's", res.Dir, got)
	}
	// The CLI sees the same mounts; the daemon removes its directory.
	rw.MustRun("umount", res.Dir)
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Fatalf("rewind umount left %s: %v", res.Dir, err)
	}

	resp = restCall(t, srv, "POST", "/v1/mounts", `{"spec":"v@latest"}`, &res)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount again: %s", resp.Status)
	}
	parent, err := os.Stat(filepath.Dir(res.Dir))
	if err != nil || parent.Mode().Perm() != 0o700 {
		t.Fatalf("DATA/mounts: %v, %v; want mode 0700", parent, err)
	}
	if resp := restCall(t, srv, "POST", "/v1/mounts", `{"spec":"v@latest"}`, nil); resp.StatusCode != http.StatusConflict {
		t.Fatalf("the same instant mounted twice: %s, want 409", resp.Status)
	}
	var list []struct {
		Dir string `json:"dir"`
	}
	if restCall(t, srv, "GET", "/v1/mounts", "", &list); len(list) != 1 || list[0].Dir != res.Dir {
		t.Fatalf("GET /v1/mounts: %+v", list)
	}
	if resp := restCall(t, srv, "DELETE", "/v1/mounts?"+url.Values{"dir": {res.Dir}}.Encode(), "", nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE /v1/mounts: %s", resp.Status)
	}
	if _, err := os.Stat(res.Dir); !os.IsNotExist(err) {
		t.Fatalf("the daemon's mount directory is left after unmount: %v", err)
	}
	if restCall(t, srv, "GET", "/v1/mounts", "", &list); len(list) != 0 {
		t.Fatalf("GET /v1/mounts after unmount: %+v", list)
	}
	if resp := restCall(t, srv, "DELETE", "/v1/mounts?"+url.Values{"dir": {res.Dir}}.Encode(), "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("DELETE of no mount: %s, want 404", resp.Status)
	}
}
