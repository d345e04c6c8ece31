package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/rewind-dev/rewind/catalog/protect"
)

type protectCmd struct {
	Volume  string `arg:"" help:"Name of the new protected volume and of its NBD export."`
	Primary string `help:"The production disk: a file or block device, served read-write and recorded write by write." required:"" placeholder:"PATH"`
	Size    Size   `help:"Size of the disk (default: PATH's size); a smaller file is grown to it." placeholder:"SIZE"`
}

func (c *protectCmd) Run(e *env) error {
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
