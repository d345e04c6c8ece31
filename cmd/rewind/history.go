package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/rewind-dev/rewind/catalog"
)

type logCmd struct {
	Volume string `arg:""`
	Since  string `help:"Only versions at or after WHEN." placeholder:"WHEN"`
	Until  string `help:"Only versions at or before WHEN." placeholder:"WHEN"`
}

func (c *logCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	entries, err := api.Log(e.ctx, catalog.LogRequest{Volume: c.Volume, Since: c.Since, Until: c.Until})
	if err != nil {
		return err
	}
	return e.print(entries, func() {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "TIME\tKIND\tBLOCKS\tBYTES\tSTORED")
		for _, x := range entries {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", x.Time, x.Kind, x.Blocks, human(x.Bytes), human(x.Stored))
		}
		w.Flush()
	})
}

type diffCmd struct {
	From string `arg:"" help:"VOLUME@WHEN"`
	To   string `arg:"" help:"VOLUME@WHEN"`
}

func (c *diffCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	d, err := api.Diff(e.ctx, c.From, c.To)
	if err != nil {
		return err
	}
	return e.print(d, func() {
		for _, r := range d.Ranges {
			fmt.Printf("%d\t%d\n", r.Offset, r.Length)
		}
		fmt.Fprintf(os.Stderr, "%d ranges, %s differ between %s and %s\n", len(d.Ranges), human(d.Bytes), d.From, d.To)
	})
}

type statsCmd struct{}

func (c *statsCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	st, err := api.Stats(e.ctx)
	if err != nil {
		return err
	}
	return e.print(st, func() {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(w, "volumes\t%d\n", st.Volumes)
		fmt.Fprintf(w, "versions\t%d\n", st.Versions)
		fmt.Fprintf(w, "logical bytes\t%s\t(%d)\n", human(st.LogicalBytes), st.LogicalBytes)
		fmt.Fprintf(w, "unique bytes\t%s\t(%d)\n", human(st.UniqueBytes), st.UniqueBytes)
		fmt.Fprintf(w, "stored bytes\t%s\t(%d)\n", human(st.StoredBytes), st.StoredBytes)
		fmt.Fprintf(w, "index bytes\t%s\t(%d)\n", human(st.IndexBytes), st.IndexBytes)
		if st.Store != "" {
			fmt.Fprintf(w, "packs in\t%s\n", st.Store)
			fmt.Fprintf(w, "local cache\t%s\t(%d)\n", human(st.CacheBytes), st.CacheBytes)
		}
		fmt.Fprintf(w, "chunks\t%d\n", st.Chunks)
		fmt.Fprintf(w, "shifted duplicates\t%d chunks\t(%s stored as slices of others)\n", st.SlicedChunks, human(st.SlicedBytes))
		fmt.Fprintf(w, "dedup ratio\t%.2f\n", st.DedupRatio)
		fmt.Fprintf(w, "compression ratio\t%.2f\n", st.CompressionRatio)
		if st.FreeBytes >= 0 {
			fmt.Fprintf(w, "free space\t%s\t(%d)\n", human(st.FreeBytes), st.FreeBytes)
		}
		w.Flush()
	})
}
