package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rewind-dev/rewind/catalog/api"
	"github.com/rewind-dev/rewind/catalog/recovery"
)

type recoverCmd struct {
	Start   recoverStartCmd   `cmd:"" default:"withargs" help:"Clone VOLUME@WHEN, serve it now as the writable export NEWVOLUME, and copy it into TARGET in the background."`
	Status  recoverStatusCmd  `cmd:"" help:"Progress of every recovery: bytes done, rate, ETA, state."`
	Cutover recoverCutoverCmd `cmd:"" help:"Wait until TARGET holds what the export holds, then serve TARGET directly."`
	Cancel  recoverCancelCmd  `cmd:"" help:"Stop a copy; the export keeps serving the clone, nothing is lost."`
	Retry   recoverRetryCmd   `cmd:"" help:"Start a copy that failed or was cancelled again, into its target or --to another: from the beginning, or with --resume where it stopped."`
	Limit   recoverLimitCmd   `cmd:"" name:"bwlimit" help:"Change a running copy's bandwidth limit."`
}

type recoverStartCmd struct {
	Spec    string `arg:"" help:"VOLUME@WHEN to recover."`
	To      string `help:"Where to copy it: a file (created if missing), a block device, or nbd://HOST:PORT/EXPORT." required:"" placeholder:"TARGET"`
	As      string `help:"Name of the recovered volume and its export (default VOLUME-recovered-TIME)." placeholder:"NEWVOLUME"`
	BWLimit Rate   `help:"Most bytes per second the copy takes, like 100MiB (default: no limit)." name:"bwlimit" placeholder:"RATE"`
}

func (c *recoverStartCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover")
	if err != nil {
		return err
	}
	defer cl.Close()
	var st recovery.Status
	err = withTarget(c.To, func(target string, created bool, f *os.File) error {
		req := RecoverRequest{From: c.Spec, Target: target, As: c.As, Limit: int64(c.BWLimit), Created: created}
		return cl.CallWithFile(e.ctx, "POST", "/v1/recoveries", req, f, &st)
	})
	if err != nil {
		return err
	}
	return e.print(st, func() {
		fmt.Printf("recovering %s as %s into %s\n", c.Spec, st.Name, st.Target)
		fmt.Printf("serving now: nbd export %s (writable), and %s/disk.img in the FUSE tree\n", st.Name, st.Name)
		fmt.Printf("follow with: rewind recover status --watch; then: rewind recover cutover %s\n", st.Name)
	})
}

// withTarget runs call with a recovery's target: an nbd:// URI as it is;
// a file or block device by its absolute path, opened with the caller's
// rights (openTarget) and passed to call to send to the daemon. A file
// it created is removed again when call fails: nothing is left behind.
func withTarget(target string, call func(target string, created bool, f *os.File) error) error {
	if strings.Contains(target, "://") {
		return call(target, false, nil)
	}
	path := absPath(target)
	f, created, err := openTarget(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := call(path, created, f); err != nil {
		if created {
			os.Remove(path)
		}
		return err
	}
	return nil
}

// openTarget opens a recovery's file or block device with the caller's
// rights: a missing file is created (created=true, empty), a block
// device is opened exclusively (it must not be mounted or in use).
func openTarget(path string) (f *os.File, created bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, false, fmt.Errorf("create target %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("target %s: %w", path, err)
	}
	flags := os.O_RDWR
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		flags |= os.O_EXCL // a block device: refused while mounted or held
	case st.Mode().IsRegular():
	default:
		return nil, false, fmt.Errorf("target %s is neither a file nor a block device; give a file, a block device or nbd://HOST:PORT/EXPORT", path)
	}
	f, err = os.OpenFile(path, flags, 0)
	if err != nil {
		if errors.Is(err, os.ErrExist) || strings.Contains(err.Error(), "device or resource busy") {
			return nil, false, fmt.Errorf("target %s is in use (mounted or held open); unmount it or choose another", path)
		}
		return nil, false, fmt.Errorf("open target %s: %w", path, err)
	}
	return f, false, nil
}

type recoverStatusCmd struct {
	Name  string `arg:"" optional:"" help:"One recovered volume (default: all)."`
	Watch bool   `help:"Redraw every second until every copy has converged, cut over, failed or been cancelled."`
}

func (c *recoverStatusCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover status")
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		all, err := recoveries(e.ctx, cl, c.Name)
		if err != nil {
			return err
		}
		if e.globals.JSON {
			if err := printJSONLine(all, c.Watch); err != nil {
				return err
			}
		} else {
			printRecoveries(all, c.Watch && isTerminal(os.Stdout))
		}
		if !c.Watch || settled(all) {
			return nil
		}
		select {
		case <-e.ctx.Done():
			return e.ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// settled: no copy is still moving towards convergence.
func settled(all []recovery.Status) bool {
	for _, s := range all {
		if s.State == recovery.StateCopying {
			return false
		}
	}
	return true
}

// printJSONLine prints one indented document, or with --watch one
// compact document a line.
func printJSONLine(v any, stream bool) error {
	enc := json.NewEncoder(os.Stdout)
	if !stream {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// printRecoveries prints one block per recovery; redraw moves the cursor
// back over the previous drawing first.
func printRecoveries(all []recovery.Status, redraw bool) {
	var b strings.Builder
	if len(all) == 0 {
		b.WriteString("no recoveries\n")
	}
	for _, s := range all {
		fmt.Fprintf(&b, "%s  %s -> %s  %s%s\n", s.Name, s.Source, s.Target, s.State, reasonText(s.Reason))
		if s.Resumable {
			fmt.Fprintf(&b, "  its progress is saved: rewind recover retry %s --resume goes on into the same target\n", s.Name)
		}
		frac := 0.0
		if s.Total > 0 {
			frac = float64(s.Done) / float64(s.Total)
		}
		const width = 30
		fill := int(frac * width)
		eta := "-"
		if s.ETA >= 0 {
			eta = (time.Duration(s.ETA) * time.Second).String()
		}
		limit := ""
		if s.Limit > 0 {
			limit = fmt.Sprintf(" (limit %s/s)", human(s.Limit))
		}
		mode := ""
		if s.Mode != "" && s.State != recovery.StateCutOver {
			mode = ", " + s.Mode
		}
		fmt.Fprintf(&b, "  [%s%s] %3.0f%% %s/%s  %s/s%s  ETA %s%s\n", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			frac*100, human(s.Done), human(s.Total), human(int64(s.Rate)), limit, eta, mode)
	}
	out := b.String()
	if redraw {
		out = "\033[H\033[2J" + out
	}
	fmt.Print(out)
}

func reasonText(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

type recoverCutoverCmd struct {
	Name string `arg:"" help:"The recovered volume (NEWVOLUME)."`
}

func (c *recoverCutoverCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover cutover")
	if err != nil {
		return err
	}
	defer cl.Close()
	copying := false
	if !e.globals.JSON {
		// Said, and a bar drawn, only for a copy that may make the caller
		// wait: a refused cutover stays one line of error.
		all, err := recoveries(e.ctx, cl, c.Name)
		if err != nil {
			return err
		}
		if copying = len(all) == 1 && all[0].State == recovery.StateCopying; copying {
			fmt.Fprintf(os.Stderr, "waiting until the target holds everything %s holds...\n", c.Name)
		}
	}
	bar, update := newProgress("copying "+c.Name, copying)
	stop, stopped := make(chan struct{}), make(chan struct{})
	if update == nil {
		close(stopped)
	} else {
		go func() { // the copy's progress while the cutover waits for it
			defer close(stopped)
			for {
				if all, err := recoveries(e.ctx, cl, c.Name); err == nil && len(all) == 1 {
					update(all[0].Done, all[0].Total)
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
			}
		}()
	}
	var st recovery.Status
	err = cl.Call(e.ctx, "POST", recoveryPath(c.Name)+"/cutover", nil, &st)
	close(stop)
	<-stopped
	bar.done()
	if err != nil {
		return err
	}
	return e.print(st, func() {
		fmt.Printf("cut over: the export %s now reads and writes %s directly\n", st.Name, st.Target)
		fmt.Printf("its history up to now stays readable as %s@WHEN; %s is unchanged\n", st.Name, st.Source)
	})
}

type recoverCancelCmd struct {
	Name string `arg:"" help:"The recovered volume (NEWVOLUME)."`
}

func (c *recoverCancelCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover cancel")
	if err != nil {
		return err
	}
	defer cl.Close()
	var st recovery.Status
	if err := cl.Call(e.ctx, "DELETE", recoveryPath(c.Name), nil, &st); err != nil {
		return err
	}
	return e.print(st, func() {
		fmt.Printf("cancelled the copy of %s into %s; the export %s keeps serving the clone, nothing is lost\n", st.Name, st.Target, st.Name)
	})
}

type recoverRetryCmd struct {
	Name    string `arg:"" help:"The recovered volume (NEWVOLUME)."`
	To      string `help:"Copy into this target instead: a file (created if missing), a block device, or nbd://HOST:PORT/EXPORT." placeholder:"TARGET"`
	BWLimit *Rate  `help:"Most bytes per second the copy takes from now, like 100MiB (default: as before)." name:"bwlimit" placeholder:"RATE"`
	Resume  bool   `help:"Go on from the progress the copy saved, trusting that its target (the same one: no --to, or --to naming it) still holds what was copied and flushed."`
}

func (c *recoverRetryCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover retry")
	if err != nil {
		return err
	}
	defer cl.Close()
	target := c.To
	if target == "" {
		all, err := recoveries(e.ctx, cl, c.Name)
		if err != nil {
			return err
		}
		target = all[0].Target
	}
	var limit *int64
	if c.BWLimit != nil {
		l := int64(*c.BWLimit)
		limit = &l
	}
	var st recovery.Status
	err = withTarget(target, func(target string, created bool, f *os.File) error {
		req := RecoverRetry{Target: target, Limit: limit, Created: created, Resume: c.Resume}
		return cl.CallWithFile(e.ctx, "POST", recoveryPath(c.Name)+"/retry", req, f, &st)
	})
	if err != nil {
		return err
	}
	return e.print(st, func() {
		from := "from the beginning"
		if c.Resume {
			from = "from where it stopped"
		}
		fmt.Printf("copying %s into %s again, %s; the export %s keeps serving meanwhile\n", st.Name, st.Target, from, st.Name)
		fmt.Printf("follow with: rewind recover status --watch; then: rewind recover cutover %s\n", st.Name)
	})
}

type recoverLimitCmd struct {
	Name string `arg:"" help:"The recovered volume (NEWVOLUME)."`
	Rate Rate   `arg:"" help:"Bytes per second, like 100MiB; 0 for no limit."`
}

func (c *recoverLimitCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind recover bwlimit")
	if err != nil {
		return err
	}
	defer cl.Close()
	var st recovery.Status
	if err := cl.Call(e.ctx, "PATCH", recoveryPath(c.Name), RecoverLimit{Limit: int64(c.Rate)}, &st); err != nil {
		return err
	}
	return e.print(st, func() {
		if st.Limit == 0 {
			fmt.Printf("the copy of %s has no bandwidth limit now\n", st.Name)
			return
		}
		fmt.Printf("the copy of %s takes at most %s/s now\n", st.Name, human(st.Limit))
	})
}

// recoveries asks the daemon for the recovery named name, or all of them
// when name is empty.
func recoveries(ctx context.Context, cl *api.Client, name string) ([]recovery.Status, error) {
	if name == "" {
		var all []recovery.Status
		return all, cl.Call(ctx, "GET", "/v1/recoveries", nil, &all)
	}
	var st recovery.Status
	if err := cl.Call(ctx, "GET", recoveryPath(name), nil, &st); err != nil {
		return nil, err
	}
	return []recovery.Status{st}, nil
}

func recoveryPath(name string) string { return "/v1/recoveries/" + url.PathEscape(name) }
