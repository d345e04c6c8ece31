package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/catalog"
)

func TestCheckPeer(t *testing.T) {
	for _, c := range []struct {
		uid, owner uint32
		ok         bool
	}{
		{0, 1000, true},
		{1000, 1000, true},
		{65534, 1000, false},
		{0, 0, true},
		{1000, 0, false},
	} {
		if got := checkPeer(c.uid, c.owner); got != c.ok {
			t.Errorf("checkPeer(uid %d, owner %d) = %v, want %v", c.uid, c.owner, got, c.ok)
		}
	}
}

// serveSocket serves h on DIR/rewind.sock; peer, when not nil, replaces
// SO_PEERCRED and owner the data directory's owner.
func serveSocket(t *testing.T, h http.Handler, peer func(*net.UnixConn) (uint32, error), owner *uint32) (*Socket, *Client) {
	t.Helper()
	s, err := ListenSocket(filepath.Join(t.TempDir(), "rewind.sock"), h)
	if err != nil {
		t.Fatal(err)
	}
	if peer != nil {
		s.peer = peer
	}
	if owner != nil {
		s.owner = *owner
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return s, c
}

// TestSocketFile checks the socket's mode, that a stale socket is
// replaced and that nothing is left beside it.
func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rewind.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // a killed daemon's socket: there, refusing connections
	os.MkdirAll(filepath.Join(dir, ".sock-123"), 0o700)
	s, err := ListenSocket(path, http.NotFoundHandler())
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	go s.Serve()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", st.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("the directory holds %d entries, want the socket alone", len(ents))
	}
	if _, err := ListenSocket(path, http.NotFoundHandler()); !errors.Is(err, catalog.ErrBusy) {
		t.Fatalf("a second listener on a live socket: %v", err)
	}
	s.Shutdown(context.Background())
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Shutdown: %v", err)
	}
}

// TestSocketRefusesOthers: a peer that is neither root nor the owner gets
// 403 with a JSON error of class forbidden, and reaches no handler.
func TestSocketRefusesOthers(t *testing.T) {
	called := false
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true })
	owner := uint32(1000)
	_, c := serveSocket(t, h, func(*net.UnixConn) (uint32, error) { return 4242, nil }, &owner)

	err := c.Call(context.Background(), "GET", "/v1/volumes", nil, nil)
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "serves root and the owner") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("call as uid 4242: %v", err)
	}
	resp, err := c.http.Post("http://rewind/v1/volumes", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb errorBody
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || resp.StatusCode != http.StatusForbidden || eb.Class != "forbidden" {
		t.Fatalf("answer %s, %+v, %v", resp.Status, eb, err)
	}
	if called {
		t.Fatal("the handler ran for a refused peer")
	}
}

// TestSocketPeerUID: the owner is served, and handlers see its uid.
func TestSocketPeerUID(t *testing.T) {
	var got uint32
	var ok bool
	h := Handler(nil, ServerInfo{}, Route{Method: "GET", Pattern: "/v1/whoami", Handler: OK(func(r *http.Request) (any, error) {
		got, ok = PeerUID(r.Context())
		return nil, nil
	})})
	owner := uint32(1000)
	_, c := serveSocket(t, h, func(*net.UnixConn) (uint32, error) { return 1000, nil }, &owner)
	if err := c.Call(context.Background(), "GET", "/v1/whoami", nil, nil); err != nil {
		t.Fatal(err)
	}
	if !ok || got != 1000 {
		t.Fatalf("PeerUID = %d, %v; want 1000", got, ok)
	}
}

// TestPassFile passes a file over the real socket: the handler reads it
// through the descriptor, never by its name, which the test removes.
func TestPassFile(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		f := passedFile(r.Context())
		if f == nil {
			http.Error(w, "no file", http.StatusBadRequest)
			return
		}
		defer f.Close()
		io.Copy(w, io.NewSectionReader(f, 0, 1<<20))
	})
	_, c := serveSocket(t, h, nil, nil)
	path := filepath.Join(t.TempDir(), "passed")
	want := bytes.Repeat([]byte("passed by descriptor "), 1000)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	os.Remove(path)
	for i := range 2 { // each call passes it on a connection of its own
		resp, err := c.do(context.Background(), "POST", "/v1/any", struct{}{}, f)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("call %d: the handler read %q", i, got)
		}
	}
	resp, err := c.do(context.Background(), "POST", "/v1/any", struct{}{}, nil)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a call without a file found one")
	}
}

// TestNoFileRefused: import and export that name a path without passing
// it open are refused, and change nothing.
func TestNoFileRefused(t *testing.T) {
	dir := t.TempDir()
	svc, err := catalog.Open(catalog.Options{Dir: filepath.Join(dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, c := serveSocket(t, Handler(svc, ServerInfo{}), nil, nil)
	ctx := context.Background()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, bytes.Repeat([]byte{7}, 1<<16), 0o644)
	if _, err := c.Import(ctx, catalog.ImportRequest{Volume: "v", Source: img}, nil); !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), "opens no path") {
		t.Fatalf("import by path: %v", err)
	}
	if vols, err := c.Volumes(ctx); err != nil || len(vols) != 0 {
		t.Fatalf("volumes after a refused import: %+v, %v", vols, err)
	}
	f, err := catalog.OpenSource(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := c.Import(ctx, catalog.ImportRequest{Volume: "v", Source: img, File: f}, nil); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "out.img")
	if _, err := c.Export(ctx, catalog.ExportRequest{Spec: "v@latest", Dest: dest}, nil, nil); !errors.Is(err, catalog.ErrInvalid) {
		t.Fatalf("export by path: %v", err)
	}
	if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused export made %s: %v", dest, err)
	}
}
