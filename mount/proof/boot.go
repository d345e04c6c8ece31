package proof

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoQemu is returned by Boot when qemu-system-x86_64 is not installed.
var ErrNoQemu = errors.New("qemu-system-x86_64 not found: install the Debian package qemu-system-x86")

// BootOptions say what to boot and what to wait for.
type BootOptions struct {
	// Drive is the disk as a qemu drive file, e.g.
	// nbd+unix:///NAME?socket=PATH. It is opened with snapshot=on, so
	// qemu never writes to it.
	Drive string
	// Kernel, Initrd and Append are passed to qemu for images without a
	// boot loader; empty: boot from the disk.
	Kernel, Initrd, Append string
	Expect                 *regexp.Regexp // a console line that proves the boot
	Timeout                time.Duration  // how long to wait for it
	MemoryMiB              int            // 0: 512
	// TempDir holds qemu's snapshot overlay; Boot makes a private
	// directory in it and removes it (empty: os.TempDir()).
	TempDir string
	// Line, if set, is called with each console line as it arrives.
	Line func(string)
}

// BootResult is Boot's answer.
type BootResult struct {
	Pass     bool          `json:"pass"`
	Matched  string        `json:"matched,omitempty"` // the console line that matched
	Reason   string        `json:"reason"`
	Accel    string        `json:"accel"` // kvm or tcg
	Duration time.Duration `json:"duration_ns"`
	Console  []string      `json:"console"` // the last console lines
	// KVMFailed says why the VM did not start under KVM, when it was
	// then booted under TCG.
	KVMFailed string `json:"kvm_failed,omitempty"`
}

// Qemu returns the path of qemu-system-x86_64, or ErrNoQemu.
func Qemu() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", ErrNoQemu
	}
	return p, nil
}

// kvmDevice is KVM's device (a variable for tests).
var kvmDevice = "/dev/kvm"

// accel is kvm when this process may open /dev/kvm, else tcg.
func accel() []string {
	if f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0); err == nil {
		f.Close()
		return []string{"kvm", "-cpu", "host"}
	}
	return []string{"tcg"}
}

// Boot starts a VM on o.Drive and waits for a console line matching
// o.Expect (see the package documentation). It returns an error only for
// what prevents a judgement: no qemu, bad options, ctx ended. A VM that
// does not show the line in time is a failed BootResult.
func Boot(ctx context.Context, o BootOptions) (*BootResult, error) {
	qemu, err := Qemu()
	if err != nil {
		return nil, err
	}
	if o.Expect == nil || o.Timeout <= 0 || o.Drive == "" {
		return nil, errors.New("proof: Boot needs a Drive, an Expect pattern and a positive Timeout")
	}
	mem := o.MemoryMiB
	if mem == 0 {
		mem = 512
	}
	tmp, err := os.MkdirTemp(o.TempDir, "rewind-boot-")
	if err != nil {
		return nil, fmt.Errorf("a directory for the VM's throwaway overlay: %w", err)
	}
	defer os.RemoveAll(tmp)

	if o.Line != nil { // two VMs may speak at once (see bootKVM)
		var mu sync.Mutex
		line := o.Line
		o.Line = func(l string) {
			mu.Lock()
			defer mu.Unlock()
			line(l)
		}
	}
	acc := accel()
	if acc[0] != "kvm" {
		res, _, err := boot(ctx, qemu, acc, mem, tmp, o)
		return res, err
	}
	return bootKVM(ctx, qemu, acc, mem, tmp, o)
}

// kvmQuiet is how long a VM under KVM may go without a console line
// before the same VM is started under TCG beside it (a variable for
// tests).
var kvmQuiet = 20 * time.Second

// bootRun is what one boot returned.
type bootRun struct {
	res   *BootResult
	early string
	err   error
}

func (r bootRun) passed() bool { return r.err == nil && r.res != nil && r.res.Pass }

// bootKVM boots under KVM. /dev/kvm opens on hosts whose KVM cannot run
// the VM, in two ways. Nested virtualization that refuses the host CPU's
// MSRs aborts qemu at once: the VM is started again under TCG, slower
// but not wrong. Another nested KVM runs a Debian kernel into a silent
// spin right after its real-mode setup: once kvmQuiet passes without a
// console line, the same VM is started under TCG beside it, and the
// first of the two to pass wins (a guest that is only slow to speak
// keeps its KVM run); the loser is killed. Both end by o.Timeout.
func bootKVM(ctx context.Context, qemu string, acc []string, mem int, tmp string, o BootOptions) (*BootResult, error) {
	start := time.Now()
	spoke := make(chan struct{})
	var once sync.Once
	ko := o
	ko.Line = func(l string) {
		once.Do(func() { close(spoke) })
		if o.Line != nil {
			o.Line(l)
		}
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kvm := make(chan bootRun, 1)
	go func() {
		r, early, err := boot(kctx, qemu, acc, mem, tmp, ko)
		kvm <- bootRun{r, early, err}
	}()
	quiet := time.NewTimer(kvmQuiet)
	defer quiet.Stop()
	select {
	case k := <-kvm:
		if k.err != nil || k.early == "" {
			return k.res, k.err
		}
		res, _, err := boot(ctx, qemu, []string{"tcg"}, mem, tmp, o)
		if res != nil {
			res.KVMFailed = "KVM could not start it: " + k.early
		}
		return res, err
	case <-spoke:
		k := <-kvm
		return k.res, k.err
	case <-quiet.C:
	}
	left := o.Timeout - time.Since(start)
	if left <= 0 {
		k := <-kvm
		return k.res, k.err
	}
	to := o
	to.Timeout = left
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	tcg := make(chan bootRun, 1)
	go func() {
		r, _, err := boot(tctx, qemu, []string{"tcg"}, mem, tmp, to)
		tcg <- bootRun{r, "", err}
	}()
	var k, t *bootRun
	for k == nil || t == nil {
		select {
		case r := <-kvm:
			k = &r
			if r.passed() {
				tcancel()
			}
		case r := <-tcg:
			t = &r
			if r.passed() {
				kcancel()
			}
		}
	}
	why := fmt.Sprintf("the VM wrote no console line under KVM within %v", kvmQuiet)
	switch {
	case k.passed():
		return k.res, nil
	case t.passed():
		t.res.KVMFailed = why
		return t.res, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case k.err == nil && len(k.res.Console) > 0, t.err != nil:
		return k.res, k.err // KVM ran it: its failure is the VM's
	}
	t.res.KVMFailed = why
	return t.res, nil
}

// boot runs the VM once with accelerator acc; early is why qemu stopped
// before it wrote a console line, if it did.
func boot(ctx context.Context, qemu string, acc []string, mem int, tmp string, o BootOptions) (_ *BootResult, early string, _ error) {
	args := []string{"-accel", acc[0]}
	args = append(args, acc[1:]...)
	args = append(args,
		"-m", fmt.Sprint(mem), "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-nic", "none", "-no-reboot",
		"-drive", "file="+escapeOpt(o.Drive)+",format=raw,if=virtio,snapshot=on")
	if o.Kernel != "" {
		args = append(args, "-kernel", o.Kernel)
		if o.Initrd != "" {
			args = append(args, "-initrd", o.Initrd)
		}
		if o.Append != "" {
			args = append(args, "-append", o.Append)
		}
	}
	cmd := exec.Command(qemu, args...)
	// snapshot=on puts its overlay in TMPDIR (qemu 7 and later).
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", qemu, err)
	}
	res := &BootResult{Accel: acc[0]}
	console := &tail{n: tailLines}
	matched := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sent := false
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sc.Split(scanConsoleLines)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), " \t")
			console.add(line)
			if o.Line != nil {
				o.Line(line)
			}
			if !sent && o.Expect.MatchString(line) {
				matched <- line
				sent = true
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		exited <- cmd.Wait()
	}()
	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
	var werr error
	waited, stopped := false, ""
	select {
	case line := <-matched:
		res.Pass, res.Matched = true, line
		res.Reason = fmt.Sprintf("a console line matched %q", o.Expect)
	case <-timer.C:
		res.Reason = fmt.Sprintf("no console line matched %q within %v", o.Expect, o.Timeout)
	case werr = <-exited:
		waited = true
		select {
		case line := <-matched: // the last lines before it stopped
			res.Pass, res.Matched = true, line
			res.Reason = fmt.Sprintf("a console line matched %q", o.Expect)
		default:
			stopped = exitReason(werr, &stderr)
			res.Reason = fmt.Sprintf("the VM stopped before a console line matched %q: %s", o.Expect, stopped)
		}
	case <-ctx.Done():
	}
	res.Duration = time.Since(start)
	if !waited {
		// Kill the VM's whole process group, then reap it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	res.Console = console.lines()
	if err := ctx.Err(); err != nil && !res.Pass && res.Reason == "" {
		return nil, "", err
	}
	if len(res.Console) > 0 {
		stopped = "" // it ran
	}
	return res, stopped, nil
}

func exitReason(err error, stderr *bytes.Buffer) string {
	msg := strings.TrimSpace(stderr.String())
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	what := "qemu exited normally"
	if err != nil {
		what = "qemu: " + err.Error()
	}
	if msg != "" {
		what += ": " + msg
	}
	return what
}

// escapeOpt doubles the commas of a qemu option value.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// scanConsoleLines splits on \n or \r, dropping empty lines' terminators.
func scanConsoleLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// tail keeps the last n non-empty lines.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []string
}

func (t *tail) add(l string) {
	if l == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, l)
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string{}, t.buf...)
}
