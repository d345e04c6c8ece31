package weed_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

func TestMain(m *testing.M) { weed.Main(m) }

// TestDepsBuildsThisVersion: make deps must build the binary the harness
// looks for.
func TestDepsBuildsThisVersion(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(script, []byte("weed_version="+weed.Version)) {
		t.Fatalf("scripts/deps.sh does not build SeaweedFS %s", weed.Version)
	}
	if !bytes.Contains(script, []byte(strings.TrimSuffix(weed.CachedBinary, weed.Version))) {
		t.Fatalf("scripts/deps.sh does not build into %s", weed.CachedBinary)
	}
}

func TestSharedServer(t *testing.T) {
	srv := weed.Shared(t)
	if srv != weed.Shared(t) {
		t.Fatal("a second Shared started another server")
	}
	a, b := srv.NewBucket(t), srv.NewBucket(t)
	if a == b || !strings.HasPrefix(a, "s3://testsharedserver-") {
		t.Fatalf("buckets %s and %s", a, b)
	}
	env := strings.Join(srv.Env(), " ")
	for _, want := range []string{"AWS_ENDPOINT_URL=" + srv.Endpoint, "AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() = %s, without %s", env, want)
		}
	}
	st := open(t, srv, a)
	put(t, st, "x", []byte("shared"))
}

func open(t *testing.T, srv *weed.Server, url string) objstore.Backend {
	t.Helper()
	b, err := objstore.Open(context.Background(), url, objstore.Options{Getenv: srv.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, b objstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

// TestClusterSurvivesVolumeServerKill: with replication 001, every object
// reads back after one of the three volume servers is SIGKILLed.
func TestClusterSurvivesVolumeServerKill(t *testing.T) {
	c := weed.StartCluster(t, weed.Options{})
	b := open(t, c.Server, c.NewBucket(t))
	sums := map[string][sha256.Size]byte{}
	for i := range 24 {
		data := bytes.Repeat([]byte(fmt.Sprintf("object %d;", i)), 20000+i*1000)
		name := fmt.Sprintf("o/%02d", i)
		put(t, b, name, data)
		sums[name] = sha256.Sum256(data)
	}
	victim := 0
	for i := range c.Volumes() {
		if c.VolumeBytes(i) > c.VolumeBytes(victim) {
			victim = i
		}
	}
	if c.VolumeBytes(victim) == 0 {
		t.Fatal("no volume server holds data")
	}
	c.KillVolume(victim)
	for name, sum := range sums {
		got, err := b.GetRange(context.Background(), name, 0, -1)
		if err != nil {
			t.Fatalf("read %s with a volume server killed: %v", name, err)
		}
		if sha256.Sum256(got) != sum {
			t.Fatalf("%s reads back other bytes with a volume server killed", name)
		}
	}
}

// TestRestart: a killed server is gone, and restarted it serves what it
// held. It restarts the shared server: no test of this package runs in
// parallel.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	srv := weed.Shared(t)
	b := open(t, srv, srv.NewBucket(t))
	put(t, b, "kept", []byte("before"))
	srv.Kill()
	if _, err := objstore.Open(ctx, srv.NewBucket(t), objstore.Options{Getenv: srv.Getenv}); !errors.Is(err, objstore.ErrUnreachable) {
		t.Fatalf("open with the server killed: %v", err)
	}
	srv.Restart(t)
	if got, err := b.GetRange(ctx, "kept", 0, -1); err != nil || string(got) != "before" {
		t.Fatalf("after a restart: %q, %v", got, err)
	}
	put(t, open(t, srv, srv.NewBucket(t)), "new", []byte("a new bucket after a restart"))
}
