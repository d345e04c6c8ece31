package weed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the SeaweedFS module version `make deps` builds
// (scripts/deps.sh has the same).
const Version = "v0.0.0-20261109003541-7506e5f91cd6"

// CachedBinary is where `make deps` puts the weed binary.
const CachedBinary = "/var/cache/rewind/weed-" + Version

// Credentials of the one identity the servers know.
const (
	AccessKey = "rewindtest"
	SecretKey = "rewindtestsecret"
)

// readyTimeout bounds the wait for the first successful PUT (about 11 s
// for a server and 15-23 s for a cluster on an idle machine).
const readyTimeout = 120 * time.Second

// Binary returns the weed binary to run, or an error that says to run
// `make deps`.
func Binary() (string, error) { return binary(os.Getenv("REWIND_WEED"), CachedBinary) }

func binary(env, cached string) (string, error) {
	if env != "" {
		if _, err := os.Stat(env); err != nil {
			return "", fmt.Errorf("weed: REWIND_WEED=%s: %w (unset it to use the binary `make deps` builds)", env, err)
		}
		return env, nil
	}
	if _, err := os.Stat(cached); err != nil {
		return "", fmt.Errorf("weed: no SeaweedFS binary at %s: run `make deps` to build it (or set REWIND_WEED)", cached)
	}
	return cached, nil
}

// Options tune a server.
type Options struct {
	// VolumeSizeLimitMB is the size at which SeaweedFS starts a new
	// volume; 0 means 64.
	VolumeSizeLimitMB int
}

// Server is a running SeaweedFS with an S3 gateway.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string

	dir     string
	litter  []string // files weed leaves outside dir
	buckets atomic.Int64
	mu      sync.Mutex
	procs   []*proc // every process, for Close
}

// Env returns the AWS_* variables that point a client at the server.
func (s *Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.Endpoint,
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=us-east-1",
	}
}

// Getenv looks a variable up in Env only (objstore.Options.Getenv).
func (s *Server) Getenv(key string) string {
	for _, kv := range s.Env() {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// NewBucket returns s3://NAME for a bucket name not used before on this
// server. The bucket is not created: opening it does that.
func (s *Server) NewBucket(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
		if b.Len() >= 40 {
			break
		}
	}
	return fmt.Sprintf("s3://%s-%d", strings.TrimSuffix(b.String(), "-"), s.buckets.Add(1))
}

// Start runs `weed server -s3` for the test and waits until it takes a
// PUT; the test's cleanup kills it and removes its directory.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s, err := start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func start(o Options) (*Server, error) {
	return startWith(func(s *Server, bin string, ports []int) error {
		master, volume, filer, s3 := ports[0], ports[1], ports[2], ports[3]
		s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s3)
		// weed server makes gRPC sockets in /tmp whatever the flags.
		for i, name := range []string{"master", "volume", "filer", "s3"} {
			s.litter = append(s.litter, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, ports[i]+10000))
		}
		_, err := s.run(bin, "server", []string{
			"-s3", "-dir=" + s.dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
			port("-master.port", master), port("-volume.port", volume),
			port("-filer.port", filer), port("-s3.port", s3),
			"-s3.config=" + filepath.Join(s.dir, "s3.json"),
			"-master.volumeSizeLimitMB=" + strconv.Itoa(volumeLimit(o)),
			"-volume.max=0", // as many as the disk holds: each bucket takes volumes of its own
			"-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
			"-debug.port=0", "-volume.preStopSeconds=0",
			"-filer.localSocket=" + filepath.Join(s.dir, "f.sock"),
			"-s3.localSocket=" + filepath.Join(s.dir, "s3.sock"),
		}, "WEED_MASTER_VOLUME_GROWTH_COPY_1=1")
		return err
	}, 4)
}

func volumeLimit(o Options) int {
	if o.VolumeSizeLimitMB > 0 {
		return o.VolumeSizeLimitMB
	}
	return 64
}

func port(flag string, p int) string { return flag + "=" + strconv.Itoa(p) }

// startWith makes a server's directory and runs launch on free ports
// until the server takes a PUT; a launch that loses a port is tried again
// on new ones.
func startWith(launch func(s *Server, bin string, ports []int) error, nports int) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		// Short: the unix sockets' paths must fit in 108 bytes.
		dir, err := os.MkdirTemp("", "weed-")
		if err != nil {
			return nil, err
		}
		s := &Server{AccessKey: AccessKey, SecretKey: SecretKey, dir: dir}
		if err := os.WriteFile(filepath.Join(dir, "s3.json"), s3Config(), 0o600); err != nil {
			s.Close()
			return nil, err
		}
		ports, err := freePorts(nports)
		if err == nil {
			err = launch(s, bin, ports)
		}
		if err == nil {
			err = s.waitReady()
		}
		if err == nil {
			return s, nil
		}
		var exited *exitError
		if errors.As(err, &exited) && attempt < 3 {
			s.Close() // most likely a port taken meanwhile
			continue
		}
		err = fmt.Errorf("%w\n%s", err, s.logTail())
		s.Close()
		return nil, err
	}
}

func s3Config() []byte {
	return fmt.Appendf(nil, `{"identities":[{"name":"rewind","credentials":[{"accessKey":%q,"secretKey":%q}],`+
		`"actions":["Admin","Read","Write","List","Tagging"]}]}`, AccessKey, SecretKey)
}

// freePorts picks n ports p in 10000-21999 with p and p+10000 free.
func freePorts(n int) ([]int, error) {
	var ports []int
	taken := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("weed: no free ports in 10000-31999")
		}
		p := 10000 + rand.N(12000)
		if taken[p] || taken[p+10000] || taken[p-10000] || !free(p) || !free(p+10000) {
			continue
		}
		taken[p], taken[p+10000] = true, true
		ports = append(ports, p)
	}
	return ports, nil
}

func free(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// proc is one weed process.
type proc struct {
	name   string
	bin    string
	args   []string
	env    []string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

type exitError struct {
	name string
	err  error
}

func (e *exitError) Error() string { return fmt.Sprintf("weed: %s exited: %v", e.name, e.err) }

// run starts `weed CMD ARGS` (CMD is name up to a "-") with its output
// in DIR/NAME.log.
func (s *Server) run(bin, name string, args []string, env ...string) (*proc, error) {
	p := &proc{name: name, bin: bin, args: args, env: env}
	if err := s.launch(p); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

func (s *Server) launch(p *proc) error {
	cmdName, _, _ := strings.Cut(p.name, "-")
	log, err := os.OpenFile(filepath.Join(s.dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	// Logs go to the log file, not to files of their own in /tmp.
	cmd := exec.Command(p.bin, append([]string{"-logtostderr", cmdName}, p.args...)...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), append(p.env, "WEED_MASTER_VOLUME_GROWTH_ALLOCATION_DEFERRAL=0s")...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("weed: start %s: %w", p.name, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// Kill SIGKILLs every process of the server, keeping its data: the
// endpoint is gone until Restart.
func (s *Server) Kill() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
}

// Restart kills the server if it runs, starts it again on the same ports
// and data, and waits until it takes a PUT: about 30 s, most of it the
// master's raft election timeout.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		if err := s.launch(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("%v\n%s", err, s.logTail())
	}
}

// kill SIGKILLs the process and waits for it.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// waitReady creates a bucket and PUTs an object into it until that
// succeeds, failing early if a process exits.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c, err := s.client()
	if err != nil {
		return err
	}
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err = s.probe(ctx, c)
		if err == nil {
			return nil
		}
		for _, p := range procs {
			select {
			case <-p.exited:
				return &exitError{p.name, p.err}
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("weed: no PUT succeeded at %s within %v: %v", s.Endpoint, readyTimeout, err)
		case <-tick.C:
		}
	}
}

func (s *Server) probe(ctx context.Context, c *minio.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := c.MakeBucket(ctx, "weed-ready", minio.MakeBucketOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return err
	}
	_, err = c.PutObject(ctx, "weed-ready", "probe", bytes.NewReader([]byte("ready")), 5, minio.PutObjectOptions{})
	return err
}

func (s *Server) client() (*minio.Client, error) {
	return minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
}

// logTail returns the end of each process's log, for a failed start.
func (s *Server) logTail() string {
	var b strings.Builder
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		data, _ := os.ReadFile(filepath.Join(s.dir, p.name+".log"))
		if len(data) > 3000 {
			data = data[len(data)-3000:]
		}
		fmt.Fprintf(&b, "--- weed %s log (end):\n%s\n", p.name, data)
	}
	return b.String()
}

// Close SIGKILLs every process and removes the server's directory.
func (s *Server) Close() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	os.RemoveAll(s.dir)
	for _, f := range s.litter {
		os.Remove(f)
	}
}
