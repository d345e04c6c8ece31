package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/blockstore/objstore"
	"github.com/rewind-dev/rewind/blockstore/objstore/weed"
)

// storeImages writes two versions of an 8 MiB disk (the second changes
// 1 MiB of it) and returns their paths.
func storeImages(t *testing.T) (string, string) {
	dir := t.TempDir()
	a := randomBytes(31, 8<<20)
	b := append([]byte(nil), a...)
	copy(b[3<<20:], randomBytes(32, 1<<20))
	pa, pb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if err := os.WriteFile(pa, a, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pb, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return pa, pb
}

// bucketBytes sums the sizes of the objects under url.
func bucketBytes(t *testing.T, srv *weed.Server, url string) int64 {
	t.Helper()
	b, err := objstore.Open(context.Background(), url, objstore.Options{Getenv: srv.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := b.List(context.Background(), "", func(o objstore.Object) error { n += o.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStoreDisasterRecovery: a daemon on a SeaweedFS bucket takes two
// imports and a label; its exports read back, and most bytes are in the
// bucket, not in DATA. Then the daemon is killed (kill -9), its DATA
// deleted, and a new, empty data directory given the same store serves
// every instant and the label sha256-identical.
func TestStoreDisasterRecovery(t *testing.T) {
	srv := weed.Shared(t)
	bucket := srv.NewBucket(t)
	a, b := storeImages(t)
	rw := newRewind(t)
	rw.Env = append(srv.Env(), "REWIND_STORE="+bucket)
	s := rw.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
	rw.MustRun("import", "vm", a)
	rw.MustRun("import", "vm", b)
	rw.MustRun("point", "add", "vm@latest", "good")
	first := strings.Fields(strings.Split(strings.TrimSpace(rw.MustRun("log", "vm")), "\n")[1])[0]
	for spec, img := range map[string]string{"vm@good": b, "vm@" + first: a} {
		if exportSHA(t, s.URI(spec)) != sha256File(t, img) {
			t.Fatalf("%s does not read back", spec)
		}
	}
	// The daemon seals its idle pack (uploads it whole, deletes it here):
	// DATA keeps the index (a copy of the bucket's), the space reserve and
	// the cache, whose size --store-cache bounds.
	waitUntil(t, 30*time.Second, "the packs in the bucket, not in DATA", func() error {
		inBucket, local := bucketBytes(t, srv, bucket), dirSize(t, filepath.Join(rw.Data, "packs"))
		if inBucket < 9<<20 || local > 0 {
			return fmt.Errorf("%d bytes in the bucket, %d in DATA/packs", inBucket, local)
		}
		return nil
	})
	s.cmd.Process.Kill()
	<-s.exited
	if err := os.RemoveAll(rw.Data); err != nil {
		t.Fatal(err)
	}

	rw2 := newRewind(t)
	rw2.Env = rw.Env
	// The dead daemon's lease has not lapsed: a second writer is refused
	// with one line that says what to do.
	oneLineError(t, "a second writer while the lease lasts", rw2.Run("log", "vm"), "--take-over")
	rw2.MustRun("--take-over", "volume", "list")
	s2 := rw2.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
	for spec, img := range map[string]string{"vm@good": b, "vm@latest": b, "vm@" + first: a} {
		if exportSHA(t, s2.URI(spec)) != sha256File(t, img) {
			t.Fatalf("after the disaster, %s does not read back", spec)
		}
	}
}

// TestStoreVolumeServerKilled: in a SeaweedFS cluster of three volume
// servers (replication 001), one is SIGKILLed while an NBD client reads
// an instant from the bucket, and the read completes with the right bytes.
func TestStoreVolumeServerKilled(t *testing.T) {
	c := weed.StartCluster(t, weed.Options{})
	bucket := c.NewBucket(t)
	a, _ := storeImages(t)
	rw := newRewind(t)
	rw.Env = append(c.Env(), "REWIND_STORE="+bucket)
	rw.MustRun("import", "vm", a)
	s := rw.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
	out := filepath.Join(t.TempDir(), "read.img")
	done := make(chan cmdResult, 1)
	go func() {
		done <- runCmd(t, nil, nil, requireTool(t, "nbdcopy", "libnbd-bin"), "--requests=1", "--request-size=65536", s.URI("vm@latest"), out)
	}()
	time.Sleep(200 * time.Millisecond) // part way through, most likely; correct either way
	c.KillVolume(0)
	if res := <-done; res.Code != 0 {
		t.Fatalf("nbdcopy with a volume server killed: %s", res)
	}
	if sha256File(t, out) != sha256File(t, a) {
		t.Fatal("the read with a volume server killed returned wrong bytes")
	}
}

// flakyProxy forwards TCP to target, and can go away for a while: its
// connections are cut and new ones refused.
type flakyProxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	p := &flakyProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.listen("127.0.0.1:0")
	t.Cleanup(func() { p.down() })
	return p
}

func (p *flakyProxy) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *flakyProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *flakyProxy) up() { p.listen(p.addr) }

// rewindThrough is a rewind whose store is bucket, reached through
// proxy.
func rewindThrough(t *testing.T, srv *weed.Server, proxy *flakyProxy, bucket string) *rewind {
	rw := newRewind(t)
	for _, kv := range srv.Env() {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL=") {
			kv = "AWS_ENDPOINT_URL=http://" + proxy.addr
		}
		rw.Env = append(rw.Env, kv)
	}
	rw.Env = append(rw.Env, "REWIND_STORE="+bucket)
	return rw
}

// TestStoreEndpointAway: the object store goes away for 10 s while an
// import writes and an NBD client reads; both stall and resume, and the
// bytes are right.
func TestStoreEndpointAway(t *testing.T) {
	srv := weed.Shared(t)
	bucket := srv.NewBucket(t)
	proxy := newFlakyProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	a, b := storeImages(t)
	rw := rewindThrough(t, srv, proxy, bucket)
	rw.MustRun("import", "vm", a)
	first := strings.Fields(strings.Split(strings.TrimSpace(rw.MustRun("log", "vm")), "\n")[1])[0]
	s := rw.Serve(serveOptions{Args: []string{"--verify-every", "0"}})

	proxy.down()
	imported := make(chan cmdResult, 1)
	go func() { imported <- rw.Run("import", "vm", b) }()
	read := filepath.Join(t.TempDir(), "read.img")
	copied := make(chan cmdResult, 1)
	go func() {
		copied <- runCmd(t, nil, nil, requireTool(t, "nbdcopy", "libnbd-bin"), s.URI("vm@"+first), read)
	}()
	time.Sleep(10 * time.Second)
	proxy.up()
	if res := <-imported; res.Code != 0 {
		t.Fatalf("the import across the outage: %s", res)
	}
	if res := <-copied; res.Code != 0 {
		t.Fatalf("the read across the outage: %s", res)
	}
	if sha256File(t, read) != sha256File(t, a) {
		t.Fatal("the read across the outage returned wrong bytes")
	}
	if exportSHA(t, s.URI("vm@latest")) != sha256File(t, b) {
		t.Fatal("the import across the outage reads back wrong")
	}
}

// TestStoreBadSettings: wrong credentials, no endpoint, an endpoint that
// does not answer, and a bad URL each give one line, and leave the data
// directory as it was.
func TestStoreBadSettings(t *testing.T) {
	srv := weed.Shared(t)
	bucket := srv.NewBucket(t)
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"wrong credentials", []string{"AWS_ENDPOINT_URL=" + srv.Endpoint, "AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong"}, "AWS_SECRET_ACCESS_KEY"},
		{"no endpoint", []string{"AWS_ENDPOINT_URL=", "AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}, "AWS_ENDPOINT_URL"},
		{"nothing listening", []string{fmt.Sprintf("AWS_ENDPOINT_URL=http://127.0.0.1:%d", freePort(t)), "AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}, "AWS_ENDPOINT_URL"},
	}
	for _, c := range cases {
		rw := newRewind(t)
		rw.Env = c.env
		oneLineError(t, c.name, rw.Run("--store", bucket, "volume", "list"), c.want)
		if _, err := os.Stat(filepath.Join(rw.Data, "store.json")); err == nil {
			t.Errorf("%s: the data directory remembers a store it could not open", c.name)
		}
	}
	rw := newRewind(t)
	rw.Env = srv.Env()
	oneLineError(t, "a bad URL", rw.Run("--store", "s3://", "volume", "list"), "s3://")
}

// TestStoreReplicate: a store on one SeaweedFS bucket replicated to
// another. 26 MiB under --bwlimit 2MiB/s take at least 10 s; a run
// killed half way and run again sends only the rest (counted in the
// journal's bytes); a daemon on the second bucket serves every
// replicated instant sha256-identical.
func TestStoreReplicate(t *testing.T) {
	srv := weed.Shared(t)
	src, full, resumed := srv.NewBucket(t), srv.NewBucket(t), srv.NewBucket(t)
	dir := t.TempDir()
	a := randomBytes(41, 20<<20)
	b := append(append([]byte(nil), a[:14<<20]...), randomBytes(42, 6<<20)...)
	pa, pb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	os.WriteFile(pa, a, 0o644)
	os.WriteFile(pb, b, 0o644)
	rw := newRewind(t)
	rw.Env = append(srv.Env(), "REWIND_STORE="+src)
	rw.MustRun("import", "vm", pa)
	rw.MustRun("point", "add", "vm", "before")
	rw.MustRun("import", "vm", pb)

	start := time.Now()
	var res replicateResult
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "replicate", "--to", full, "--bwlimit", "2MiB/s")), &res); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !res.Complete || res.BytesSent < 26<<20 || took < 10*time.Second {
		t.Fatalf("replicate --bwlimit 2MiB/s: %+v in %v; want 26 MiB or more, in 10 s or more", res, took)
	}
	t.Logf("26 MiB at --bwlimit 2MiB/s: %+v in %v", res, took)

	// Killed once about half has arrived, then run again. The journal of
	// the first target counts already.
	base, baseParts := journalled(t, rw.Data)
	cmd := exec.Command(rw.Bin, "--data", rw.Data, "replicate", "--to", resumed, "--bwlimit", "4MiB/s")
	cmd.Env = append(os.Environ(), rw.Env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "half the packs sent", func() error {
		if sent, _ := journalled(t, rw.Data); sent-base < 12<<20 {
			return fmt.Errorf("%d bytes sent", sent)
		}
		return nil
	})
	cmd.Process.Kill()
	cmd.Wait()
	before, parts := journalled(t, rw.Data)
	before, parts = before-base, parts-baseParts
	if err := json.Unmarshal([]byte(rw.MustRun("--json", "replicate", "--to", resumed)), &res); err != nil {
		t.Fatal(err)
	}
	after, _ := journalled(t, rw.Data)
	after -= base
	if !res.Complete || res.PartsSkipped < int64(parts) || res.BytesSent > after-before+1<<20 {
		t.Fatalf("the second run: %+v; the killed one had sent %d bytes in %d parts, %d sent in all", res, before, parts, after)
	}
	t.Logf("killed after %d bytes in %d parts; the second run: %+v", before, parts, res)

	// The replica verifies, record by record, as a reader.
	checker := newRewind(t)
	checker.Env = srv.Env()
	if out := checker.MustRun("--store", resumed, "--read-only", "verify"); !strings.Contains(out, "nothing lost") {
		t.Fatalf("verify of the replica: %s", out)
	}
	for _, target := range []string{full, resumed} {
		site2 := newRewind(t)
		site2.Env = append(srv.Env(), "REWIND_STORE="+target)
		s := site2.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
		for spec, want := range map[string][]byte{"vm@before": a, "vm@latest": b} {
			out := filepath.Join(t.TempDir(), "x.img")
			mustRunCmd(t, requireTool(t, "nbdcopy", "libnbd-bin"), s.URI(spec), out)
			if sha256File(t, out) != sha256Bytes(want) {
				t.Fatalf("%s on %s differs", spec, target)
			}
		}
		s.Stop()
	}
}

// TestStoreStopWithEndpointAway: a daemon asked to stop while its object
// store does not answer stops within the harness's stop timeout (each
// upload used to be retried for two minutes: 8 minutes here), and the
// next start, with the store back, serves every acknowledged write.
func TestStoreStopWithEndpointAway(t *testing.T) {
	srv := weed.Shared(t)
	bucket := srv.NewBucket(t)
	proxy := newFlakyProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"))
	a, _ := storeImages(t)
	rw := rewindThrough(t, srv, proxy, bucket)
	rw.MustRun("import", "vm", a)
	s := rw.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
	rw.MustRun("clone", "vm@latest", "c1")
	qemuIO := requireTool(t, "qemu-io", "qemu-utils")
	mustRunCmd(t, qemuIO, "-f", "raw", "-c", "write -P 0x55 0 1M", s.URI("c1"))
	want, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1 << 20 {
		want[i] = 0x55
	}

	proxy.down()
	start := time.Now()
	code := s.Stop() // fails the test past stopTimeout
	t.Logf("stopped in %v with status %d", time.Since(start).Round(time.Second), code)

	proxy.up()
	s = rw.Serve(serveOptions{Args: []string{"--verify-every", "0"}})
	if exportSHA(t, s.URI("c1")) != sha256Bytes(want) {
		t.Fatal("a flushed write was lost across a stop with the object store away")
	}
	if exportSHA(t, s.URI("vm")) != sha256File(t, a) {
		t.Fatal("the imported volume reads back wrong after a stop with the object store away")
	}
}
