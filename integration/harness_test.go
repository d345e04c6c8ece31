package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// cmdTimeout bounds every command a helper runs.
	cmdTimeout = 10 * time.Minute
	// readyTimeout bounds the wait for a daemon's listeners.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds the wait for a daemon to exit after SIGTERM.
	stopTimeout = 30 * time.Second
	// pollInterval is how often readiness is polled, up to a deadline.
	pollInterval = 20 * time.Millisecond
)

// repoRoot returns the repository's top directory, the one with go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// rewindBinary returns the path of bin/rewind, failing the test when it has
// not been built.
func rewindBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(repoRoot(t), "bin", "rewind")
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing: run make build (make test builds it before the tests)", bin)
	}
	return bin
}

// requireTool returns the path of the program name, and fails the test
// when it is not installed, naming the Debian package that provides it.
// It also looks in /usr/sbin and /sbin, which a non-root PATH may lack.
func requireTool(t testing.TB, name, debPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s is not installed: install the Debian package %s (make deps installs it)", name, debPackage)
	return ""
}

// cmdResult is what a finished command left behind.
type cmdResult struct {
	Stdout, Stderr string
	Code           int // the exit status; -1 when killed by a signal
}

func (r cmdResult) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// runCmd runs a program to completion with stdin (nil for none) and returns
// its output and exit status. It fails the test only when the program
// cannot be started or outlives cmdTimeout; a non-zero exit is the
// caller's to judge.
func runCmd(t testing.TB, stdin []byte, env []string, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: still running after %v\n%s", name, strings.Join(args, " "), cmdTimeout, res)
	case errors.As(err, &exit):
		res.Code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// mustRunCmd runs a program and fails the test unless it exits 0. It
// returns standard output.
func mustRunCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	res := runCmd(t, nil, nil, name, args...)
	if res.Code != 0 {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), res)
	}
	return res.Stdout
}

// rewind runs bin/rewind on one data directory of its own.
type rewind struct {
	t    testing.TB
	Bin  string
	Data string
	Env  []string // added to the environment of every command
}

// newRewind returns a runner with an empty data directory in t.TempDir().
func newRewind(t testing.TB) *rewind {
	t.Helper()
	return &rewind{t: t, Bin: rewindBinary(t), Data: t.TempDir()}
}

// args puts the data directory first, as in `rewind --data D import ...`.
func (r *rewind) args(args []string) []string {
	return append([]string{"--data", r.Data}, args...)
}

// Run runs `rewind --data DATA ARGS...` and returns its output and status.
func (r *rewind) Run(args ...string) cmdResult {
	r.t.Helper()
	return runCmd(r.t, nil, r.Env, r.Bin, r.args(args)...)
}

// RunStdin is Run with standard input.
func (r *rewind) RunStdin(stdin []byte, args ...string) cmdResult {
	r.t.Helper()
	return runCmd(r.t, stdin, r.Env, r.Bin, r.args(args)...)
}

// MustRun is Run that fails the test unless rewind exits 0; it returns
// standard output.
func (r *rewind) MustRun(args ...string) string {
	r.t.Helper()
	res := r.Run(args...)
	if res.Code != 0 {
		r.t.Fatalf("rewind %s: %s", strings.Join(args, " "), res)
	}
	return res.Stdout
}

// Socket is the daemon's local socket for this data directory.
func (r *rewind) Socket() string { return filepath.Join(r.Data, "rewind.sock") }

// sha256File returns the hex SHA-256 of a file's contents.
func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("sha256 %s: %v", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("sha256 %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitUntil polls ready until it returns nil, and fails the test with
// what and ready's last error when timeout passes first.
func waitUntil(t testing.TB, timeout time.Duration, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %v: %v", what, timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// dialable reports whether something accepts connections at addr.
func dialable(network, addr string) error {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// isMountpoint reports whether dir is a mount point, from
// /proc/self/mountinfo.
func isMountpoint(dir string) (bool, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// id parent major:minor root mountpoint ...; spaces escaped as \040.
		f := strings.Fields(line)
		if len(f) > 4 && strings.ReplaceAll(f[4], `\040`, " ") == abs {
			return true, nil
		}
	}
	return false, nil
}

// syncBuffer collects a daemon's output while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemonSpec says how to start a long-running program and how to tell it
// is ready: every TCP address and Unix socket accepts, and every mount
// point is mounted.
type daemonSpec struct {
	Path       string
	Args       []string
	Env        []string
	ReadyTCP   []string
	ReadyUnix  []string
	ReadyMount []string
}

// daemon is a running program started by startDaemon.
type daemon struct {
	t      testing.TB
	spec   daemonSpec
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	exited chan struct{} // closed when the process has been waited for
	code   int
}

// startDaemon starts spec and returns once it is ready. It fails the test,
// with the program's output, when the program exits first or is not ready
// within readyTimeout. The daemon is stopped when the test ends.
func startDaemon(t testing.TB, spec daemonSpec) *daemon {
	t.Helper()
	d := &daemon{t: t, spec: spec, exited: make(chan struct{})}
	d.cmd = exec.Command(spec.Path, spec.Args...)
	d.cmd.Env = append(os.Environ(), spec.Env...)
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", spec.Path, err)
	}
	go func() {
		err := d.cmd.Wait()
		d.code = 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			d.code = exit.ExitCode()
		} else if err != nil {
			d.code = -1
		}
		close(d.exited)
	}()
	t.Cleanup(func() {
		if d.Running() {
			d.Stop()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(spec.Path), d.Logs())
		}
	})
	waitUntil(t, readyTimeout, d.String(), d.ready)
	return d
}

func (d *daemon) String() string {
	return strings.Join(append([]string{filepath.Base(d.spec.Path)}, d.spec.Args...), " ")
}

// ready returns nil when every readiness condition holds. A daemon that
// has exited fails the test at once.
func (d *daemon) ready() error {
	if !d.Running() {
		d.t.Fatalf("%s exited with status %d before it was ready (its output is logged below)", d, d.code)
	}
	for _, addr := range d.spec.ReadyTCP {
		if err := dialable("tcp", addr); err != nil {
			return err
		}
	}
	for _, sock := range d.spec.ReadyUnix {
		if err := dialable("unix", sock); err != nil {
			return err
		}
	}
	for _, dir := range d.spec.ReadyMount {
		if ok, err := isMountpoint(dir); err != nil || !ok {
			return fmt.Errorf("%s is not mounted (%v)", dir, err)
		}
	}
	return nil
}

// Running reports whether the process has not exited yet.
func (d *daemon) Running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Logs returns what the daemon wrote to stdout and stderr so far.
func (d *daemon) Logs() string {
	return "stdout:\n" + d.stdout.String() + "\nstderr:\n" + d.stderr.String()
}

// Stop sends SIGTERM, waits up to stopTimeout for the process to exit and
// returns its exit status. A daemon that does not exit in time is killed
// and the test fails; so does one that leaves a ReadyMount mounted.
func (d *daemon) Stop() int {
	d.t.Helper()
	if d.Running() {
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			d.t.Errorf("SIGTERM %s: %v", d, err)
		}
	}
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.t.Errorf("%s still running %v after SIGTERM: killed", d, stopTimeout)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	for _, dir := range d.spec.ReadyMount {
		if ok, _ := isMountpoint(dir); ok {
			d.t.Errorf("%s left %s mounted after it exited", d, dir)
			_ = exec.Command("fusermount3", "-u", "-z", dir).Run()
		}
	}
	return d.code
}

// serveOptions are the flags for `rewind serve` beyond --nbd, which is
// always given a free port on 127.0.0.1.
type serveOptions struct {
	Mount string   // --mount DIR, when not empty
	HTTP  bool     // --http on a free port on 127.0.0.1
	Args  []string // more flags, e.g. --tls-cert F --tls-key F
}

// server is a running `rewind serve`.
type server struct {
	*daemon
	NBDAddr  string // host:port
	HTTPAddr string // host:port, when asked for
	Mount    string // the --mount directory, when asked for
	Data     string // the data directory
}

// APIToken returns the bearer token of the HTTP API, which the daemon
// made in DATA/api-token at its first start.
func (s *server) APIToken(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Data, "api-token"))
	if err != nil {
		t.Fatalf("the API token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Serve starts `rewind --data DATA serve --nbd 127.0.0.1:PORT ...` and
// returns once every listener the contract promises accepts: the NBD port,
// the local socket DATA/rewind.sock, the HTTP port when asked for, and the
// FUSE mount when asked for. It is stopped (SIGTERM) when the test ends.
func (r *rewind) Serve(opts serveOptions) *server {
	r.t.Helper()
	s := &server{NBDAddr: fmt.Sprintf("127.0.0.1:%d", freePort(r.t)), Mount: opts.Mount, Data: r.Data}
	args := []string{"serve", "--nbd", s.NBDAddr}
	spec := daemonSpec{ReadyTCP: []string{s.NBDAddr}, ReadyUnix: []string{r.Socket()}}
	if opts.HTTP {
		s.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", freePort(r.t))
		args = append(args, "--http", s.HTTPAddr)
		spec.ReadyTCP = append(spec.ReadyTCP, s.HTTPAddr)
	}
	if opts.Mount != "" {
		if err := os.MkdirAll(opts.Mount, 0o755); err != nil {
			r.t.Fatalf("mount point: %v", err)
		}
		args = append(args, "--mount", opts.Mount)
		spec.ReadyMount = []string{opts.Mount}
	}
	spec.Path, spec.Args, spec.Env = r.Bin, r.args(append(args, opts.Args...)), r.Env
	s.daemon = startDaemon(r.t, spec)
	return s
}

// URI returns the NBD URI of an export, e.g. s.URI("db01@latest").
func (s *server) URI(export string) string {
	return "nbd://" + s.NBDAddr + "/" + export
}
