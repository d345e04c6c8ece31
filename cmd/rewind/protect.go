package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/rewind-dev/rewind/catalog/protect"
)

type protectCmd struct {
	Start  protectStartCmd  `cmd:"" default:"withargs" help:"Serve PATH as the writable export VOLUME and record every write."`
	Status protectStatusCmd `cmd:"" help:"Each protection: its primary, state, and the writes, bytes, FLUSHes and errors since the daemon started."`
}

type protectStartCmd struct {
	Volume  string `arg:"" help:"Name of the new protected volume and of its NBD export."`
	Primary string `help:"The production disk: a file or block device, served read-write and recorded write by write." required:"" placeholder:"PATH"`
	Size    Size   `help:"Size of the disk (default: PATH's size); a smaller file is grown to it." placeholder:"SIZE"`
}

func (c *protectStartCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind protect")
	if err != nil {
		return err
	}
	defer cl.Close()
	path := absPath(c.Primary)
	f, err := openPrimary(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var st protect.Status
	req := ProtectRequest{Volume: c.Volume, Primary: path, Size: int64(c.Size)}
	if err := cl.CallWithFile(e.ctx, "POST", "/v1/protections", req, f, &st); err != nil {
		return err
	}
	return e.print(st, func() {
		fmt.Printf("protecting %s as %s (%s): every write is recorded\n", st.Primary, st.Name, human(st.Size))
		fmt.Printf("serving now: nbd export %s (writable); its history is %s@WHEN\n", st.Name, st.Name)
	})
}

// openPrimary opens the production disk read-write with the caller's
// rights; a block device exclusively (it must not be mounted or held).
func openPrimary(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("primary %s does not exist; give the production disk's image file or block device", path)
	}
	if err != nil {
		return nil, fmt.Errorf("primary %s: %w", path, err)
	}
	flags := os.O_RDWR
	switch {
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		flags |= os.O_EXCL
	case st.Mode().IsRegular():
	default:
		return nil, fmt.Errorf("primary %s is neither a file nor a block device; give the production disk's image file or block device", path)
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if errors.Is(err, os.ErrExist) || strings.Contains(err.Error(), "device or resource busy") {
			return nil, fmt.Errorf("primary %s is in use (mounted or held open); unmount it or stop its user first", path)
		}
		return nil, fmt.Errorf("open primary %s: %w", path, err)
	}
	return f, nil
}

type unprotectCmd struct {
	Volume string `arg:"" help:"The protected volume."`
}

func (c *unprotectCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind unprotect")
	if err != nil {
		return err
	}
	defer cl.Close()
	var st protect.Status
	if err := cl.Call(e.ctx, "DELETE", "/v1/protections/"+url.PathEscape(c.Volume), nil, &st); err != nil {
		return err
	}
	return e.print(st, func() {
		fmt.Printf("%s is no longer protected: %s is no longer served; the volume keeps its history\n", st.Name, st.Primary)
	})
}

type protectStatusCmd struct {
	Name string `arg:"" optional:"" help:"One protected volume (default: all)."`
}

func (c *protectStatusCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind protect status")
	if err != nil {
		return err
	}
	defer cl.Close()
	var all []protect.Status
	if c.Name == "" {
		err = cl.Call(e.ctx, "GET", "/v1/protections", nil, &all)
	} else {
		var st protect.Status
		err = cl.Call(e.ctx, "GET", "/v1/protections/"+url.PathEscape(c.Name), nil, &st)
		all = []protect.Status{st}
	}
	if err != nil {
		return err
	}
	return e.print(all, func() {
		if len(all) == 0 {
			fmt.Println("no protection (rewind protect VOLUME --primary PATH starts one)")
			return
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tPRIMARY\tSIZE\tSTATE\tWRITES\tWRITTEN\tFLUSHES\tERRORS")
		for _, st := range all {
			state := st.State
			if st.Reason != "" {
				state += ": " + st.Reason
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\n", st.Name, st.Primary, human(st.Size), state, st.Writes, human(st.Written), st.Flushes, st.Errors)
		}
		w.Flush()
		fmt.Println("(writes, bytes, FLUSHes and errors since the daemon started serving each)")
	})
}
