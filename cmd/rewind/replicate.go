package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// replicateCmd is rewind replicate: through the daemon when one runs on
// the data directory (as rewind verify), else in this process.
type replicateCmd struct {
	Volumes    []string `arg:"" optional:"" help:"Volumes to replicate (default: all); a clone brings its parent along." placeholder:"VOLUME"`
	To         string   `help:"The target: s3://BUCKET[/PREFIX] or a directory; a repository of its own that rewind --store TARGET serves." required:"" placeholder:"URL"`
	ToEndpoint string   `help:"The target's S3 endpoint, when it is not AWS_ENDPOINT_URL's." name:"to-endpoint" placeholder:"URL"`
	BWLimit    Rate     `help:"Send at most this many bytes a second (e.g. 2MiB/s)." name:"bwlimit" placeholder:"RATE"`
	Window     string   `help:"Send only between these local times, HH:MM-HH:MM (may wrap midnight): outside it, wait; at its end, stop (the next run resumes)." placeholder:"HH:MM-HH:MM"`
}

func (c *replicateCmd) Run(e *env) error {
	win, err := catalog.ParseWindow(c.Window)
	if err != nil {
		return err
	}
	if now := time.Now(); !win.Open(now) {
		at := win.Next(now)
		fmt.Fprintf(os.Stderr, "outside the window %s: replication starts at %s\n", win, at.Format("2006-01-02 15:04 MST"))
		t := time.NewTimer(time.Until(at))
		select {
		case <-e.ctx.Done():
			t.Stop()
			return e.ctx.Err()
		case <-t.C:
		}
	}
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	bar, progress := newProgress("replicate", !e.globals.JSON)
	res, err := api.Replicate(e.ctx, catalog.ReplicateRequest{To: absPath(c.To), Endpoint: c.ToEndpoint, Volumes: c.Volumes,
		BWLimit: int64(c.BWLimit), Window: c.Window}, progress)
	bar.done()
	if err != nil {
		return err
	}
	return e.print(res, func() { printReplicate(res) })
}

func printReplicate(r *catalog.ReplicateResult) {
	vols := "no volume"
	if len(r.Volumes) > 0 {
		vols = strings.Join(r.Volumes, ", ")
	}
	rate := float64(r.BytesSent) / max(r.Seconds, 1e-3)
	fmt.Printf("sent %s in %d parts (%d already there) of %d packs and %d index files in %.1fs (%s/s)\n",
		human(r.BytesSent), r.PartsSent, r.PartsSkipped, r.Packs, r.IndexFiles, r.Seconds, human(int64(rate)))
	if !r.Complete {
		fmt.Printf("stopped: %s\n", r.Stopped)
		return
	}
	fmt.Printf("%s serves %s as of %s\n", r.To, vols, r.Snapshot)
}
