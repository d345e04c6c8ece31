package mount

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDD reads a 1 GiB image through MountImage with dd bs=1M, cold
// (fresh mount, nothing cached) then warm (the same file again). An
// immutable image's warm pass comes from the page cache; a Live one's
// goes back to the image.
//
//	go test -run '^$' -bench DD -benchtime 1x ./mount
func BenchmarkDD(b *testing.B) {
	requireTools(b, fuseTools)
	for _, live := range []bool{false, true} {
		name := "immutable"
		if live {
			name = "live"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				img := newPatternImage(1 << 30)
				dir := emptyDir(b, "dd")
				m, err := MountImage(dir, img, false, Options{Live: live})
				if err != nil {
					b.Fatal(err)
				}
				p := filepath.Join(dir, "disk.img")
				cold := dd(b, p)
				before := img.reads.Load()
				warm := dd(b, p)
				b.ReportMetric(cold, "cold-MB/s")
				b.ReportMetric(warm, "warm-MB/s")
				b.ReportMetric(float64(img.reads.Load()-before), "warm-image-reads")
				if err := m.Unmount(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// dd reads path to /dev/null with 1 MiB blocks and returns MB/s.
func dd(b *testing.B, path string) float64 {
	b.Helper()
	start := time.Now()
	out, err := exec.Command("dd", "if="+path, "of=/dev/null", "bs=1M").CombinedOutput()
	if err != nil {
		b.Fatalf("dd: %v: %s", err, out)
	}
	return float64(1<<30) / 1e6 / time.Since(start).Seconds()
}
