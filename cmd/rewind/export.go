package main

import (
	"fmt"
	"os"

	"github.com/rewind-dev/rewind/catalog"
)

type exportCmd struct {
	Spec string `arg:"" help:"VOLUME@WHEN"`
	Dest string `arg:"" help:"A file, a block device, or - for standard output."`
}

func (c *exportCmd) Run(e *env) (err error) {
	if c.Dest == "-" && e.globals.JSON {
		return fmt.Errorf("--json and - both want standard output; export to a file instead")
	}
	dest := absPath(c.Dest)
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	// The destination is opened here, with the caller's rights, and passed
	// to the daemon open: the daemon opens no path for anyone.
	req := catalog.ExportRequest{Spec: c.Spec, Dest: dest}
	if c.Dest != "-" {
		var f *os.File
		var created bool
		if f, created, err = catalog.OpenDest(dest); err != nil {
			return err
		}
		defer f.Close()
		if created {
			defer func() {
				if err != nil {
					os.Remove(dest) // a failed export leaves no file it made
				}
			}()
		}
		req.File = f
	}
	bar, progress := newProgress("export "+c.Spec, !e.globals.JSON)
	res, err := api.Export(e.ctx, req, os.Stdout, progress)
	bar.done()
	if err != nil {
		return err
	}
	if c.Dest == "-" {
		return nil
	}
	return e.print(res, func() {
		rate := float64(res.Size) / max(res.Duration.Seconds(), 1e-9)
		fmt.Printf("exported %s (%s) to %s: %s of data in %.2fs (%s/s)\n", c.Spec, res.Time, c.Dest,
			human(res.Data), res.Duration.Seconds(), human(int64(rate)))
	})
}

type cloneCmd struct {
	Spec string `arg:"" help:"VOLUME@WHEN"`
	Name string `arg:"" help:"The new volume."`
}

func (c *cloneCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	v, err := api.Clone(e.ctx, c.Spec, c.Name)
	if err != nil {
		return err
	}
	return e.print(v, func() { fmt.Printf("cloned %s@%s as %s (writable)\n", v.Parent, v.ForkTime, v.Name) })
}
