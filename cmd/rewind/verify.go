package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/mount/proof"
)

// verifyCmd is rewind verify. Without --fsck or --boot it scrubs the
// store (scrub.go); --fsck and --boot judge one recovery point, through
// the daemon, as rewind mount does.
type verifyCmd struct {
	Spec    string        `arg:"" optional:"" help:"VOLUME or VOLUME@WHEN (default @latest); the scrub checks the whole store and reports what touches it." placeholder:"VOLUME[@WHEN]"`
	Repair  bool          `help:"Scrub: rewrite what parity rebuilds, and missing parity files."`
	Fsck    bool          `help:"Check each filesystem in VOLUME@WHEN (e2fsck -fn, xfs_repair -n) after replaying its journal on a throwaway overlay, as mount --files does (carried out by the daemon)."`
	Boot    bool          `help:"Boot VOLUME@WHEN in a VM (qemu, no network, a throwaway overlay) and wait for a console line matching --expect."`
	Kernel  string        `help:"With --boot: a kernel to boot, for images without a boot loader." type:"path" placeholder:"F"`
	Initrd  string        `help:"With --kernel: its initrd." type:"path" placeholder:"F"`
	Append  string        `help:"With --kernel: its command line (the console is ttyS0: add console=ttyS0)." placeholder:"S"`
	Expect  string        `help:"With --boot (required): a regular expression; the boot passes when a console line matches it." placeholder:"REGEX"`
	Timeout time.Duration `help:"With --boot: how long to wait for that line (default 2m); the VM is killed then." default:"2m" placeholder:"D"`
}

// VerifyReport is what rewind verify --fsck/--boot prints (--json).
type VerifyReport struct {
	VerifyTarget
	Pass bool              `json:"pass"`
	Fsck *proof.FsckReport `json:"fsck,omitempty"`
	Boot *proof.BootResult `json:"boot,omitempty"`
}

// errVerifyFailed ends a verify whose checks ran and did not all pass.
var errVerifyFailed = errors.New("verify failed")

func (c *verifyCmd) Run(e *env) error {
	if !c.Fsck && !c.Boot {
		if _, err := c.checkBoot(); err != nil {
			return err
		}
		return scrub(e, c.Spec, c.Repair)
	}
	if c.Repair {
		return errors.New("--repair goes with the scrub, not with --fsck or --boot: run rewind verify --repair on its own")
	}
	expect, err := c.checkBoot()
	if err != nil {
		return err
	}
	if c.Spec == "" {
		return errors.New("--fsck and --boot judge one recovery point: name it, as VOLUME or VOLUME@WHEN")
	}
	cl, err := e.daemonClient("rewind verify --fsck/--boot")
	if err != nil {
		return err
	}
	defer cl.Close()
	var rep VerifyReport
	if err := cl.Call(e.ctx, "POST", "/v1/verify/resolve", VerifyRequest{Spec: c.Spec}, &rep.VerifyTarget); err != nil {
		return err
	}
	rep.Pass = true
	show := !e.globals.JSON
	if c.Fsck {
		stop := spin(show, "checking the filesystems of "+rep.Spec)
		rep.Fsck = new(proof.FsckReport)
		err := cl.Call(e.ctx, "POST", "/v1/verify/fsck", VerifyRequest{Spec: rep.Spec}, rep.Fsck)
		stop()
		if err != nil {
			return err
		}
		rep.Pass = rep.Fsck.Pass
	}
	if c.Boot {
		stop := spin(show, "booting "+rep.Spec)
		rep.Boot, err = c.boot(e.ctx, cl, rep.Spec, expect)
		stop()
		if err != nil {
			return err
		}
		rep.Pass = rep.Pass && rep.Boot.Pass
	}
	if err := e.print(rep, func() { printVerify(rep) }); err != nil {
		return err
	}
	if !rep.Pass {
		return fmt.Errorf("%w: %s", errVerifyFailed, failures(rep))
	}
	return nil
}

// checkBoot validates the --boot flags before anything starts.
func (c *verifyCmd) checkBoot() (*regexp.Regexp, error) {
	if !c.Boot {
		for _, f := range [][2]string{{"--kernel", c.Kernel}, {"--initrd", c.Initrd}, {"--append", c.Append}, {"--expect", c.Expect}} {
			if f[1] != "" {
				return nil, fmt.Errorf("%s belongs to --boot: add --boot, or drop %s", f[0], f[0])
			}
		}
		return nil, nil
	}
	if c.Expect == "" {
		return nil, errors.New("--boot needs --expect REGEX: a console line that proves the system came up (e.g. --expect 'login:')")
	}
	expect, err := regexp.Compile(c.Expect)
	if err != nil {
		return nil, fmt.Errorf("--expect %q is not a regular expression (%v): see https://pkg.go.dev/regexp/syntax", c.Expect, err)
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: give a positive duration such as 2m", c.Timeout)
	}
	if c.Kernel == "" && (c.Initrd != "" || c.Append != "") {
		return nil, errors.New("--initrd and --append go with --kernel: add --kernel F, or drop them to boot the disk's own boot loader")
	}
	for _, f := range [][2]string{{"--kernel", c.Kernel}, {"--initrd", c.Initrd}} {
		if f[1] == "" {
			continue
		}
		file, err := os.Open(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v: give a file this user can read", f[0], f[1], errors.Unwrap(err))
		}
		file.Close()
	}
	if _, err := proof.Qemu(); err != nil {
		return nil, err
	}
	return expect, nil
}

// boot starts the VM on the daemon's read-only export of spec: qemu
// connects to a socket in a private directory, and each connection is
// handed to the daemon, which serves it until qemu is gone.
func (c *verifyCmd) boot(ctx context.Context, cl *api.Client, spec string, expect *regexp.Regexp) (*proof.BootResult, error) {
	dir, err := os.MkdirTemp("", "rewind-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var (
		wg       sync.WaitGroup
		servedMu sync.Mutex
		served   error // the last connection's; read after wg.Wait
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Each of the VM's connections is served as it comes, side by
		// side: Boot may run the VM under TCG beside a KVM run that
		// still holds its own (see proof.Boot).
		for {
			conn, err := l.AcceptUnix()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := conn.File()
				conn.Close()
				if err == nil {
					err = cl.CallWithFile(ctx, "POST", "/v1/verify/nbd", VerifyRequest{Spec: spec}, f, nil)
					f.Close()
				}
				servedMu.Lock()
				served = err
				servedMu.Unlock()
			}()
		}
	}()
	res, err := proof.Boot(ctx, proof.BootOptions{
		Drive:  "nbd+unix:///verify?socket=" + sock,
		Kernel: absFile(c.Kernel), Initrd: absFile(c.Initrd), Append: c.Append,
		Expect: expect, Timeout: c.Timeout, TempDir: dir,
	})
	l.Close() // the VM is gone: no more connections
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if served != nil && !res.Pass {
		res.Reason += "; serving the disk: " + oneLine(served)
	}
	return res, nil
}

// absFile is p made absolute, or "" for none.
func absFile(p string) string {
	if p == "" {
		return ""
	}
	return absPath(p)
}

func printVerify(rep VerifyReport) {
	fmt.Printf("%s\n", rep.Spec)
	if rep.Fsck != nil {
		for _, fs := range rep.Fsck.Filesystems {
			typ := fs.Type
			if typ == "" {
				typ = "-"
			}
			line := fmt.Sprintf("  fsck %-5s %-6s %s", fs.Partition, typ, fs.Result)
			if fs.Checker != "" {
				line += " (" + fs.Checker + ")"
			}
			if fs.Note != "" {
				line += ": " + fs.Note
			}
			fmt.Println(line)
			for _, l := range fs.Output {
				fmt.Printf("    | %s\n", l)
			}
		}
		if !rep.Fsck.Pass && !anyFailed(rep.Fsck) {
			fmt.Println("  fsck: no filesystem rewind can check (ext2/3/4, xfs)")
		}
	}
	if b := rep.Boot; b != nil {
		verdict := "fail"
		if b.Pass {
			verdict = "pass"
		}
		fmt.Printf("  boot %s (%s, %.1fs): %s\n", verdict, b.Accel, b.Duration.Seconds(), b.Reason)
		if b.KVMFailed != "" {
			fmt.Printf("    (under TCG: %s)\n", b.KVMFailed)
		}
		if b.Pass {
			fmt.Printf("    | %s\n", b.Matched)
		} else {
			for _, l := range b.Console {
				fmt.Printf("    | %s\n", l)
			}
		}
	}
	if rep.Pass {
		fmt.Println("pass")
	} else {
		fmt.Println("FAIL")
	}
}

func anyFailed(r *proof.FsckReport) bool {
	for _, fs := range r.Filesystems {
		if fs.Result == proof.Fail {
			return true
		}
	}
	return false
}

// failures says in one line what did not pass.
func failures(rep VerifyReport) string {
	var s []string
	if f := rep.Fsck; f != nil && !f.Pass {
		for _, fs := range f.Filesystems {
			if fs.Result == proof.Fail {
				s = append(s, fmt.Sprintf("%s (%s) does not check clean", fs.Partition, fs.Type))
			}
		}
		if len(s) == 0 {
			s = append(s, "no filesystem could be checked")
		}
	}
	if b := rep.Boot; b != nil && !b.Pass {
		s = append(s, "boot: "+b.Reason)
	}
	return rep.Spec + ": " + strings.Join(s, "; ")
}

// spin shows what runs, with the time it has taken, on a terminal; the
// returned func clears it.
func spin(enabled bool, what string) func() {
	if !enabled || !isTerminal(os.Stderr) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		frames := `|/-\`
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(os.Stderr, "\r%c %s (%ds) ", frames[i%len(frames)], what, int(time.Since(start).Seconds()))
			select {
			case <-done:
				fmt.Fprintf(os.Stderr, "\r\033[K")
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
