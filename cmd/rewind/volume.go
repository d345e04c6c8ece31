package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/rewind-dev/rewind/catalog"
)

type volumeCmd struct {
	List   volumeListCmd   `cmd:"" help:"Every volume: size, block size, kind, history, bytes."`
	Create volumeCreateCmd `cmd:"" help:"An empty volume."`
	Rm     volumeRmCmd     `cmd:"" help:"Remove a volume and its whole history."`
}

type volumeListCmd struct{}

func (c *volumeListCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	vols, err := api.Volumes(e.ctx)
	if err != nil {
		return err
	}
	return e.print(vols, func() {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSIZE\tBLOCK\tKIND\tPARENT\tFIRST\tLAST\tVERSIONS\tLOGICAL\tSTORED")
		for _, v := range vols {
			parent := "-"
			if v.Parent != "" {
				parent = v.Parent + "@" + v.ForkTime.String()
			}
			kind := v.Kind
			if v.Replica != nil {
				kind += ",replica"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, human(v.Size), human(v.BlockSize), kind,
				parent, v.First, v.Last, v.Versions, human(v.LogicalBytes), human(v.StoredBytes))
		}
		w.Flush()
		if len(vols) > 0 && vols[0].Unwritable != "" {
			fmt.Fprintln(os.Stderr, "note:", vols[0].Unwritable)
		}
		printHousekeeping(vols)
	})
}

type volumeCreateCmd struct {
	Volume    string `arg:""`
	Size      Size   `required:"" help:"Size, like 10GiB." placeholder:"SIZE"`
	BlockSize Size   `help:"A power of two from 4KiB to 1MiB." default:"64KiB" placeholder:"SIZE"`
}

func (c *volumeCreateCmd) Run(e *env) error {
	api, done, err := e.apiCreating()
	if err != nil {
		return err
	}
	defer done()
	v, err := api.CreateVolume(e.ctx, catalog.CreateRequest{Volume: c.Volume, Size: int64(c.Size), BlockSize: int64(c.BlockSize)})
	if err != nil {
		return err
	}
	return e.print(v, func() { fmt.Printf("created %s: %s, blocks of %s\n", v.Name, human(v.Size), human(v.BlockSize)) })
}

type volumeRmCmd struct {
	Volume string `arg:""`
	Force  bool   `help:"Also when clones depend on it (they are removed too) or it is served."`
}

func (c *volumeRmCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	if err := api.RemoveVolume(e.ctx, c.Volume, c.Force); err != nil {
		return err
	}
	return e.print(map[string]string{"removed": c.Volume}, func() { fmt.Printf("removed %s\n", c.Volume) })
}

// printHousekeeping says when prune and gc last freed something.
func printHousekeeping(vols []catalog.VolumeInfo) {
	for _, v := range vols {
		if p := v.LastPrune; p != nil {
			fmt.Printf("last prune of %s: %s, removed %d versions (%d block versions)\n", v.Name, p.Time, p.Removed, p.Blocks)
		}
	}
	if len(vols) == 0 {
		return
	}
	if v := vols[0].LastVerify; v != nil {
		state := "ok"
		if !v.OK {
			state = fmt.Sprintf("LOST %d chunks", v.LostChunks)
		}
		fmt.Printf("last verify: %s, %s, %d units repaired\n", v.Time, state, v.Repaired)
	} else {
		fmt.Println("last verify: never")
	}
	if g := vols[0].LastGC; g != nil {
		fmt.Printf("last gc: %s, removed %d chunks, freed %s of packs\n", g.Time, g.Removed, human(g.FreedBytes))
	} else {
		fmt.Println("last gc: never")
	}
}
