package main

import (
	"fmt"
	"os"
	"text/tabwriter"
)

type pointCmd struct {
	Add  pointAddCmd  `cmd:"" help:"Label the instant VOLUME@WHEN."`
	List pointListCmd `cmd:"" help:"A volume's recovery points."`
	Rm   pointRmCmd   `cmd:"" help:"Remove a label (the data stays)."`
}

type pointAddCmd struct {
	Spec  string `arg:"" help:"VOLUME@WHEN"`
	Label string `arg:"" help:"A letter, then letters, digits, '.', '_' or '-'."`
}

func (c *pointAddCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	p, err := api.AddPoint(e.ctx, c.Spec, c.Label)
	if err != nil {
		return err
	}
	return e.print(p, func() { fmt.Printf("%s@%s is %s\n", p.Volume, p.Label, p.Time) })
}

type pointListCmd struct {
	Volume string `arg:""`
}

func (c *pointListCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	ps, err := api.Points(e.ctx, c.Volume)
	if err != nil {
		return err
	}
	return e.print(ps, func() {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "LABEL\tTIME\tCREATED")
		for _, p := range ps {
			fmt.Fprintf(w, "%s\t%s\t%s\n", p.Label, p.Time, p.Created)
		}
		w.Flush()
	})
}

type pointRmCmd struct {
	Volume string `arg:""`
	Label  string `arg:""`
}

func (c *pointRmCmd) Run(e *env) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	if err := api.RemovePoint(e.ctx, c.Volume, c.Label); err != nil {
		return err
	}
	return e.print(map[string]string{"removed": c.Volume + "@" + c.Label}, func() { fmt.Printf("removed %s@%s\n", c.Volume, c.Label) })
}
