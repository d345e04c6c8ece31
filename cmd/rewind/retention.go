package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/rewind-dev/rewind/catalog"
)

type retentionCmd struct {
	Set  retentionSetCmd  `cmd:"" help:"Give VOLUME a retention policy (prune applies it)."`
	Show retentionShowCmd `cmd:"" help:"A volume's retention policy."`
}

// span is a catalog.Span on the command line.
type span catalog.Span

func (s *span) UnmarshalText(b []byte) error {
	v, err := catalog.ParseSpan(string(b))
	*s = span(v)
	return err
}

type retentionSetCmd struct {
	Volume       string `arg:""`
	KeepAll      span   `help:"Keep every version newer than this." default:"24h" placeholder:"SPAN"`
	KeepMinutely span   `help:"Then the newest version of each minute over this span." default:"7d" placeholder:"SPAN"`
	KeepHourly   span   `help:"Then the newest of each hour over this span." default:"30d" placeholder:"SPAN"`
	KeepDaily    span   `help:"Then the newest of each day over this span (UTC days). Spans: 36h, 90m, 7d, 2w, 1y, or 0 for none." default:"1y" placeholder:"SPAN"`
}

func (c *retentionSetCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	r, err := api.SetRetention(e.ctx, catalog.Retention{Volume: c.Volume, KeepAll: catalog.Span(c.KeepAll),
		KeepMinutely: catalog.Span(c.KeepMinutely), KeepHourly: catalog.Span(c.KeepHourly), KeepDaily: catalog.Span(c.KeepDaily)})
	if err != nil {
		return err
	}
	return e.print(r, func() { printRetention(r) })
}

func printRetention(r *catalog.Retention) {
	fmt.Printf("%s keeps every version of the last %s, then one a minute for %s, one an hour for %s, one a day for %s\n",
		r.Volume, r.KeepAll, r.KeepMinutely, r.KeepHourly, r.KeepDaily)
}

type retentionShowCmd struct {
	Volume string `arg:""`
}

func (c *retentionShowCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	r, err := api.Retention(e.ctx, c.Volume)
	if err != nil {
		return err
	}
	return e.print(r, func() { printRetention(r) })
}

type pruneCmd struct {
	Volume string `arg:"" optional:"" help:"One volume (default: every volume with a retention policy)."`
	DryRun bool   `help:"Say what would be removed; remove nothing."`
}

func (c *pruneCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	res, err := api.Prune(e.ctx, catalog.PruneRequest{Volume: c.Volume, DryRun: c.DryRun})
	if err != nil {
		return err
	}
	return e.print(res, func() {
		if len(res) == 0 {
			fmt.Println("no volume has a retention policy; set one with rewind retention set VOLUME")
			return
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		verb := "REMOVED"
		if c.DryRun {
			verb = "WOULD REMOVE"
		}
		fmt.Fprintf(w, "VOLUME\tVERSIONS\tKEPT\t%s\tBLOCK VERSIONS\tOLDEST KEPT\n", verb)
		for _, r := range res {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\n", r.Volume, r.Versions, r.Kept, r.Removed, r.Blocks, r.Oldest)
		}
		w.Flush()
		if !c.DryRun {
			fmt.Println("the chunks only removed versions used stay on disk until rewind gc")
		}
	})
}
