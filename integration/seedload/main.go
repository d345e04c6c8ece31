// Command seedload fills an empty data directory with the web console's
// load target: many volumes, and one volume with a long history. The
// browser tests (integration/console_test.go) build and run it before
// the daemon starts, and the daemon then serves what it made.
//
// Going through a daemon would cost one NBD write per version, minutes
// for 100,000; writing with the catalog in-process takes seconds. It is a
// program of its own, not code in the test binary, because `make test`
// builds tests with the race detector, which makes each version ten
// times dearer.
//
// The volumes are vm000, vm001, ... created empty (1 to 8 GiB), and big,
// a clone of vm000 whose head takes one version per write of 8 bytes, as
// a VM writing through NBD would make, spread over its blocks. Versions
// are stamped -step apart (a fake clock), ending about an hour ago, so
// 100,000 make a history of a little more than a day; big has a label
// every 10,000 versions. It prints a JSON Result.
//
// With -diurnal, versions come five times as often in working hours
// (08:00 to 18:00 UTC) as at night, as a server's writes do: the steps
// are shorter by day, never longer than -step.
//
// Usage: seedload -data DIR [-volumes 200] [-versions 100000] [-step 1s] [-diurnal]
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// Result says what seedload made.
type Result struct {
	Volumes  []string `json:"volumes"`  // every volume, Big included
	Big      string   `json:"big"`      // the volume with the long history
	Versions int64    `json:"versions"` // Big's versions
	Labels   []string `json:"labels"`   // Big's recovery points
}

func main() {
	dir := flag.String("data", "", "the data directory to fill (empty or new)")
	volumes := flag.Int("volumes", 200, "volumes in all, big included")
	versions := flag.Int64("versions", 100_000, "versions of big")
	step := flag.Duration("step", time.Second, "time between two versions")
	diurnal := flag.Bool("diurnal", false, "more versions by day than by night")
	flag.Parse()
	if *dir == "" || *volumes < 1 || *versions < 2 || *step <= 0 {
		fmt.Fprintln(os.Stderr, "seedload: give -data DIR, -volumes of at least 1, -versions of at least 2 and a positive -step")
		os.Exit(2)
	}
	res, err := seed(*dir, *volumes, *versions, *step, *diurnal)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seedload:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "seedload:", err)
		os.Exit(1)
	}
}

// seed fills dir; see the package comment.
func seed(dir string, volumes int, versions int64, step time.Duration, diurnal bool) (res *Result, err error) {
	var clock atomic.Int64 // the instant stamped on the next version
	clock.Store(time.Now().Add(-time.Hour - time.Duration(int64(volumes)+versions)*step).UnixNano())
	tick := func() {
		d := int64(step)
		if h := time.Unix(0, clock.Load()).UTC().Hour(); diurnal && h >= 8 && h < 18 {
			d /= 5
		}
		clock.Add(d)
	}
	svc, err := catalog.Open(catalog.Options{Dir: dir, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, svc.Close()) }()
	ctx := context.Background()
	res = &Result{Big: "big"}
	for i := range volumes - 1 {
		name := fmt.Sprintf("vm%03d", i)
		if _, err := svc.CreateVolume(ctx, catalog.CreateRequest{Volume: name, Size: int64(i%8+1) << 30}); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
		res.Volumes = append(res.Volumes, name)
		tick()
	}
	from := "vm000@latest"
	if volumes == 1 {
		if _, err := svc.CreateVolume(ctx, catalog.CreateRequest{Volume: "base", Size: 1 << 30}); err != nil {
			return nil, err
		}
		from = "base@latest"
	}
	big, err := svc.Clone(ctx, from, res.Big)
	if err != nil {
		return nil, fmt.Errorf("clone %s: %w", res.Big, err)
	}
	res.Volumes = append(res.Volumes, res.Big)
	tick()
	if res.Labels, err = writeVersions(svc, big, versions-big.Versions, tick); err != nil {
		return nil, err
	}
	vols, err := svc.Volumes(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if v.Name == res.Big {
			res.Versions = v.Versions
		}
	}
	if res.Versions != versions {
		return nil, fmt.Errorf("%s has %d versions, want %d", res.Big, res.Versions, versions)
	}
	return res, nil
}

// writeVersions writes n versions to the head of a clone, each 8 bytes,
// labels one every 10,000, and returns the labels.
func writeVersions(svc *catalog.Service, vol *catalog.VolumeInfo, n int64, tick func()) ([]string, error) {
	tl := svc.Timeline()
	meta, err := tl.Volume(vol.Name)
	if err != nil {
		return nil, err
	}
	head, err := tl.Head(meta.ID)
	if err != nil {
		return nil, fmt.Errorf("head of %s: %w", vol.Name, err)
	}
	defer head.Close()
	blocks := vol.Size / vol.BlockSize
	var labels []string
	buf := make([]byte, 8)
	for i := range n {
		binary.LittleEndian.PutUint64(buf, uint64(i)+1)
		// 7919 is prime: consecutive versions land on distant blocks.
		off := (i*7919)%blocks*vol.BlockSize + i%8*512
		if _, err := head.WriteAt(buf, off); err != nil {
			return nil, fmt.Errorf("write version %d of %s: %w", i, vol.Name, err)
		}
		tick()
		if (i+1)%10_000 == 0 {
			label := fmt.Sprintf("mark-%d", (i+1)/10_000)
			if _, err := svc.AddPoint(context.Background(), vol.Name+"@latest", label); err != nil {
				return nil, fmt.Errorf("label %s: %w", label, err)
			}
			labels = append(labels, label)
		}
	}
	if err := head.Flush(); err != nil {
		return nil, fmt.Errorf("flush %s: %w", vol.Name, err)
	}
	return labels, nil
}
