package main

import (
	"fmt"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

type gcCmd struct {
	DryRun bool `help:"Say what would be freed; change nothing."`
}

func (c *gcCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	res, err := api.GC(e.ctx, catalog.GCRequest{DryRun: c.DryRun})
	if err != nil {
		return err
	}
	return e.print(res, func() { printGC(res) })
}

func printGC(r *catalog.GCResult) {
	if r.DryRun {
		fmt.Printf("%d of %d chunks are referenced; %d (%s of records) would go\n",
			r.Referenced, r.Chunks, r.Removed, human(r.RemovedBytes))
		return
	}
	fmt.Printf("%d of %d chunks are referenced; removed %d (%s of records)\n",
		r.Referenced, r.Chunks, r.Removed, human(r.RemovedBytes))
	fmt.Printf("packs: %s -> %s (freed %s); %d removed, %d of them rewritten (%s moved) in %s\n",
		human(r.PackBytesBefore), human(r.PackBytesAfter), human(r.FreedBytes), r.PacksRemoved, r.PacksRewritten,
		human(r.MovedBytes), (time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond))
}
