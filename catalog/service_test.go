package catalog

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// holdEnv, when set, makes TestOpenBusy the helper process: it opens the
// named data directory, says "open", and holds it until stdin closes.
const holdEnv = "REWIND_TEST_HOLD_DATA"

// A data directory held by another process is refused as ErrBusy, with a
// message that says what to do; once released, it opens.
func TestOpenBusy(t *testing.T) {
	if dir := os.Getenv(holdEnv); dir != "" {
		s, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("open\n")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
		s.Close()
		return
	}
	dir := filepath.Join(t.TempDir(), "data")
	holder := exec.Command(os.Args[0], "-test.run=^TestOpenBusy$")
	holder.Env = append(os.Environ(), holdEnv+"="+dir)
	holder.Stderr = os.Stderr
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "open\n" {
		t.Fatalf("the holding process did not open %s: %q, %v", dir, line, err)
	}
	_, err = Open(Options{Dir: dir})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "stop it or use --data") {
		t.Fatalf("open a directory another process holds: %v; want ErrBusy", err)
	}
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Fatalf("holding process: %v", err)
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("open once released: %v", err)
	}
	s.Close()
}

// An error that merely mentions a lock, like a bad block, is not ErrBusy.
func TestIsLocked(t *testing.T) {
	if isLocked(errors.New("pebble: corrupt block: checksum mismatch")) {
		t.Error("an error mentioning a block counts as a held lock")
	}
}
