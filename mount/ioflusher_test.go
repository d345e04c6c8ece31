package mount

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const flusherEnv = "REWIND_MOUNT_TEST_IOFLUSHER"

// runFlusherHelper re-executes itself as an I/O flusher, then reports
// whether every thread it runs on has the flag.
func runFlusherHelper() int {
	if err := ExecAsIOFlusher(); err != nil {
		fmt.Println(err)
		return 1
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	flagged := 0
	for range 16 {
		wg.Go(func() {
			runtime.LockOSThread() // a thread of its own; never unlocked, so it dies
			if IOFlusher() {
				mu.Lock()
				flagged++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("flagged %d of 16 threads\n", flagged)
	return 0
}

// hasCapSysResource reads CapEff of this process.
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<24) != 0 // CAP_SYS_RESOURCE
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// With CAP_SYS_RESOURCE every thread of the re-executed program is an I/O
// flusher; without it (many containers) the error says what is missing.
func TestExecAsIOFlusher(t *testing.T) {
	if IOFlusher() {
		t.Fatal("the test process is already an I/O flusher: the check below would prove nothing")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), flusherEnv+"=1")
	out, err := cmd.CombinedOutput()
	got := strings.TrimSpace(string(out))
	if hasCapSysResource(t) {
		if err != nil || got != "flagged 16 of 16 threads" {
			t.Fatalf("re-executed helper: %v: %s", err, out)
		}
		return
	}
	t.Logf("no CAP_SYS_RESOURCE here: %s", got)
	if err == nil || !strings.Contains(got, "needs CAP_SYS_RESOURCE") {
		t.Fatalf("without CAP_SYS_RESOURCE: %v: %q, want an error naming the capability", err, got)
	}
}
