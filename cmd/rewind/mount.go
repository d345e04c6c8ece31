package main

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/rewind-dev/rewind/catalog/api"
)

type mountCmd struct {
	Spec  string `arg:"" help:"VOLUME or VOLUME@WHEN."`
	Dir   string `arg:"" help:"An empty directory." type:"path"`
	Files bool   `help:"Show the files inside the disk as they were (journal replayed on a throwaway overlay), read-only."`
	RW    bool   `help:"Clone the view first and mount the clone writable." name:"rw"`
	As    string `help:"With --rw: the clone's name (default VOLUME-rw-TIME)." placeholder:"NEWVOLUME"`
}

// daemonClient returns the running daemon or says how to start one.
func (e *env) daemonClient(what string) (*api.Client, error) {
	c, err := api.Dial(filepath.Join(e.dataDir, "rewind.sock"))
	if errors.Is(err, api.ErrForbidden) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%s needs the daemon, and none runs on %s: start it with `rewind --data %s serve` (or make run)", what, e.dataDir, e.dataDir)
	}
	return c, nil
}

func (c *mountCmd) Run(e *env) error {
	if c.As != "" && !c.RW {
		return errors.New("--as names the clone that --rw makes; add --rw")
	}
	cl, err := e.daemonClient("rewind mount")
	if err != nil {
		return err
	}
	defer cl.Close()
	var res MountResult
	if err := cl.Call(e.ctx, "POST", "/v1/mounts", MountRequest{Spec: c.Spec, Dir: c.Dir, Files: c.Files, RW: c.RW, As: c.As}, &res); err != nil {
		return err
	}
	return e.print(res, func() {
		what := c.Dir + "/disk.img"
		if c.Files {
			what = c.Dir
		}
		if res.Clone != "" {
			fmt.Printf("cloned %s as %s; its disk is writable at %s\n", c.Spec, res.Clone, what)
		} else {
			fmt.Printf("mounted %s at %s (read-only)\n", c.Spec, what)
		}
		for _, s := range res.Skipped {
			fmt.Printf("skipped %s\n", s)
		}
		fmt.Printf("unmount with: rewind umount %s\n", c.Dir)
	})
}

type umountCmd struct {
	Dir string `arg:"" help:"A directory rewind mount mounted." type:"path"`
}

func (c *umountCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind umount")
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Call(e.ctx, "DELETE", "/v1/mounts?"+url.Values{"dir": {strings.TrimSuffix(c.Dir, "/")}}.Encode(), nil, nil); err != nil {
		return err
	}
	return e.print(map[string]string{"unmounted": c.Dir}, func() { fmt.Printf("unmounted %s\n", c.Dir) })
}
