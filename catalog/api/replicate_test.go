package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rewind-dev/rewind/catalog"
)

// replicateOnly is a catalog.API that answers Replicate only.
type replicateOnly struct {
	catalog.API
	called atomic.Bool
}

func (r *replicateOnly) Replicate(context.Context, catalog.ReplicateRequest, catalog.ProgressFunc) (*catalog.ReplicateResult, error) {
	r.called.Store(true)
	return &catalog.ReplicateResult{Complete: true}, nil
}

// TestReplicateTargetOwner: through the socket, a caller other than root
// replicates only to a directory it owns (or below one, for a directory
// not made yet); the daemon, root, writes nowhere else for it. Over TCP,
// only to s3://.
func TestReplicateTargetOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns a directory: run it as root")
	}
	fake := &replicateOnly{}
	owner := uint32(1000)
	_, c := serveSocket(t, Handler(fake, ServerInfo{}), func(*net.UnixConn) (uint32, error) { return 1000, nil }, &owner)
	ctx := context.Background()
	rootDir := t.TempDir()
	for _, to := range []string{rootDir, filepath.Join(rootDir, "new", "site2")} {
		_, err := c.Replicate(ctx, catalog.ReplicateRequest{To: to}, nil)
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "replicate to a directory you own") || fake.called.Load() {
			t.Fatalf("replicate to %s, root's, as uid 1000: %v (called %v)", to, err, fake.called.Load())
		}
	}
	mine := filepath.Join(rootDir, "mine")
	if err := os.Mkdir(mine, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mine, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{mine, filepath.Join(mine, "site2"), "s3://bucket/prefix"} {
		fake.called.Store(false)
		if _, err := c.Replicate(ctx, catalog.ReplicateRequest{To: to}, nil); err != nil || !fake.called.Load() {
			t.Fatalf("replicate to %s as uid 1000: %v (called %v)", to, err, fake.called.Load())
		}
	}

	// Over TCP (the HTTP API behind its token), no uid is known.
	srv := httptest.NewServer(Handler(fake, ServerInfo{}))
	defer srv.Close()
	for to, allowed := range map[string]bool{mine: false, "s3://bucket/prefix": true} {
		fake.called.Store(false)
		resp, err := http.Post(srv.URL+"/v1/replications", "application/json", strings.NewReader(`{"to":"`+to+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if fake.called.Load() != allowed || (!allowed && resp.StatusCode != http.StatusForbidden) {
			t.Fatalf("replicate to %s over TCP: %s, called %v; want allowed %v", to, resp.Status, fake.called.Load(), allowed)
		}
	}
}
