package main

import (
	"fmt"
	"os"

	"github.com/rewind-dev/rewind/catalog"
)

type importCmd struct {
	Volume      string `arg:"" help:"Volume to create or add a version to."`
	Source      string `arg:"" help:"A raw image file, a block device, or nbd://HOST[:PORT]/EXPORT (a running VM's disk, pulled)."`
	At          string `help:"Stamp the version with this time (default now); later than the volume's newest version." placeholder:"WHEN"`
	BlockSize   Size   `help:"Block size of a new volume: a power of two from 4KiB to 1MiB (default 64KiB)." placeholder:"SIZE"`
	DirtyBitmap string `help:"With an nbd:// source: read only the blocks QEMU's dirty bitmap NAME marks (qemu:dirty-bitmap:NAME), keep the rest from the newest version." name:"dirty-bitmap" placeholder:"NAME"`
}

func (c *importCmd) Run(e *env) error {
	// The source is opened here, with the caller's rights, and passed to
	// the daemon open: the daemon opens no path for anyone. An NBD URI
	// is dialled by whoever runs the import.
	source := c.Source
	var f *os.File
	if !catalog.IsNBDURI(source) {
		if c.DirtyBitmap != "" {
			return fmt.Errorf("--dirty-bitmap reads from an nbd:// source, not from %s", source)
		}
		source = absPath(source)
		var err error
		if f, err = catalog.OpenSource(source); err != nil {
			return err
		}
		defer f.Close()
	}
	api, done, err := e.apiCreating()
	if err != nil {
		return err
	}
	defer done()
	bar, progress := newProgress("import "+c.Volume, !e.globals.JSON)
	res, err := api.Import(e.ctx, catalog.ImportRequest{Volume: c.Volume, Source: source, File: f, At: c.At,
		BlockSize: int64(c.BlockSize), DirtyBitmap: c.DirtyBitmap}, progress)
	bar.done()
	if err != nil {
		return err
	}
	return e.print(res, func() {
		verb := "added a version to"
		if res.Created {
			verb = "created"
		}
		rate := float64(res.Size) / max(res.Duration.Seconds(), 1e-9)
		fmt.Printf("%s %s at %s: %d blocks changed (%s), %s stored, %s of %s read in %.2fs (%s/s)\n",
			verb, res.Volume, res.Time, res.Blocks, human(res.Bytes), human(res.Stored), human(res.Read), human(res.Size),
			res.Duration.Seconds(), human(int64(rate)))
	})
}
