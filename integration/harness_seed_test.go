package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// The console's load target, made by integration/seedload (see there why
// it is a program of its own) in a data directory before the daemon
// starts and serves it.

// loadSeed says what seedLoad made: seedload's Result, and how long it
// took.
type loadSeed struct {
	Volumes  []string `json:"volumes"`
	Big      string   `json:"big"`
	Versions int64    `json:"versions"`
	Labels   []string `json:"labels"`
	Took     time.Duration
}

// seedLoad builds seedload, without the race detector, and runs it on
// the empty data directory dir: volumes volumes, one of which (Big) has
// versions versions.
func seedLoad(t testing.TB, dir string, volumes int, versions int64) loadSeed {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "seedload")
	start := time.Now()
	if res := runCmd(t, nil, nil, goTool, "build", "-C", repoRoot(t), "-o", bin, "./integration/seedload"); res.Code != 0 {
		t.Fatalf("build integration/seedload: %s", res)
	}
	built := time.Since(start)
	start = time.Now()
	res := runCmd(t, nil, nil, bin, "-data", dir, "-volumes", fmt.Sprint(volumes), "-versions", fmt.Sprint(versions))
	if res.Code != 0 {
		t.Fatalf("seedload: %s", res)
	}
	var seed loadSeed
	if err := json.Unmarshal([]byte(res.Stdout), &seed); err != nil {
		t.Fatalf("seedload printed no result (%v):\n%s", err, res.Stdout)
	}
	seed.Took = time.Since(start)
	if len(seed.Volumes) != volumes || seed.Versions != versions {
		t.Fatalf("seedload made %d volumes and %d versions of %s, want %d and %d", len(seed.Volumes), seed.Versions, seed.Big, volumes, versions)
	}
	t.Logf("seeded %d volumes and %d versions of %s in %v (building seedload took %v)",
		volumes, versions, seed.Big, seed.Took.Round(time.Millisecond), built.Round(time.Millisecond))
	return seed
}
