package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/catalog"
)

// The console's load target: many volumes, and one volume with a long
// history. Going through the daemon (one NBD write per version) would
// take minutes, so the data directory is built in-process with the
// catalog, before the daemon starts and serves it.

// seedStep is the time between two seeded versions: 100,000 versions
// make a history of a little more than a day.
const seedStep = time.Second

// loadSeed says what seedLoad made.
type loadSeed struct {
	Volumes  []string // every volume, Big included
	Big      string   // the volume with the long history
	Versions int64    // Big's versions
	Labels   []string // Big's recovery points
	Took     time.Duration
}

// seedLoad fills the empty data directory dir with volumes volumes, one
// of which (Big, a clone) has versions versions: each a write of a few
// bytes to its head, as a VM writing through NBD would make, stamped
// seedStep apart and ending about an hour ago. Big has a label every
// 10,000 versions. The other volumes are created empty, 1 to 8 GiB.
func seedLoad(t testing.TB, dir string, volumes int, versions int64) loadSeed {
	t.Helper()
	start := time.Now()
	var clock atomic.Int64 // the instant stamped on the next version
	clock.Store(start.Add(-time.Hour - time.Duration(int64(volumes)+versions)*seedStep).UnixNano())
	tick := func() { clock.Add(int64(seedStep)) }
	svc, err := catalog.Open(catalog.Options{Dir: dir, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatalf("seed: open %s: %v", dir, err)
	}
	defer func() {
		if svc != nil {
			svc.Close()
		}
	}()
	ctx := context.Background()
	seed := loadSeed{Big: "big"}
	for i := range volumes - 1 {
		name := fmt.Sprintf("vm%03d", i)
		if _, err := svc.CreateVolume(ctx, catalog.CreateRequest{Volume: name, Size: int64(i%8+1) << 30}); err != nil {
			t.Fatalf("seed: create %s: %v", name, err)
		}
		seed.Volumes = append(seed.Volumes, name)
		tick()
	}
	big, err := svc.Clone(ctx, seed.Volumes[0]+"@latest", seed.Big)
	if err != nil {
		t.Fatalf("seed: clone %s: %v", seed.Big, err)
	}
	seed.Volumes = append(seed.Volumes, seed.Big)
	tick()
	seed.Labels = writeVersions(t, svc, big, versions-big.Versions, tick)

	vols, err := svc.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Name == seed.Big {
			seed.Versions = v.Versions
		}
	}
	if len(vols) != volumes || seed.Versions != versions {
		t.Fatalf("seed: %d volumes and %d versions of %s, want %d and %d", len(vols), seed.Versions, seed.Big, volumes, versions)
	}
	err = svc.Close()
	svc = nil
	if err != nil {
		t.Fatalf("seed: close: %v", err)
	}
	seed.Took = time.Since(start)
	t.Logf("seeded %d volumes and %d versions of %s in %v", volumes, versions, seed.Big, seed.Took.Round(time.Millisecond))
	return seed
}

// writeVersions writes n versions to the head of a clone, each 8 bytes
// spread over the volume's blocks, labels one every 10,000, and returns
// the labels.
func writeVersions(t testing.TB, svc *catalog.Service, vol *catalog.VolumeInfo, n int64, tick func()) []string {
	t.Helper()
	tl := svc.Timeline()
	meta, err := tl.Volume(vol.Name)
	if err != nil {
		t.Fatal(err)
	}
	head, err := tl.Head(meta.ID)
	if err != nil {
		t.Fatalf("seed: head of %s: %v", vol.Name, err)
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
			t.Fatalf("seed: write version %d of %s: %v", i, vol.Name, err)
		}
		tick()
		if (i+1)%10000 == 0 {
			label := fmt.Sprintf("mark-%d", (i+1)/10000)
			if _, err := svc.AddPoint(context.Background(), vol.Name+"@latest", label); err != nil {
				t.Fatalf("seed: label %s: %v", label, err)
			}
			labels = append(labels, label)
		}
	}
	if err := head.Flush(); err != nil {
		t.Fatalf("seed: flush %s: %v", vol.Name, err)
	}
	return labels
}
