package nbd

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// raceChildEnv, when set, makes TestRawIOSeenByRace the helper
// process: it races a raw read into a buffer with a plain write to it.
const raceChildEnv = "NBD_TEST_RAW_RACE"

// The race detector sees the memory a raw read writes and a raw writev
// reads: either, racing with another goroutine's write to the same
// buffer, is reported in a race build. (Without the annotations of
// race_on.go both went unseen.)
func TestRawIOSeenByRace(t *testing.T) {
	if call := os.Getenv(raceChildEnv); call != "" {
		client, server := unixPair(t)
		buf := make([]byte, 64)
		client.Write([]byte("x"))
		done := make(chan struct{})
		go func() {
			buf[0] = 'y' // unsynchronised with the system call below
			close(done)
		}()
		if call == "read" {
			newSocketReader(server).Read(buf)
		} else {
			rc, _ := server.SyscallConn()
			rawWritev(rc, &net.Buffers{buf}, server, 0)
		}
		<-done
		return
	}
	for _, call := range []string{"read", "writev"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRawIOSeenByRace$")
		cmd.Env = append(os.Environ(), raceChildEnv+"="+call)
		out, err := cmd.CombinedOutput()
		reported := strings.Contains(string(out), "WARNING: DATA RACE")
		switch {
		case raceEnabled && (!reported || err == nil):
			t.Errorf("a raw %s racing a write was not reported by the race detector (%v):\n%s", call, err, out)
		case !raceEnabled && (reported || err != nil):
			t.Errorf("the %s child failed without the race detector (%v):\n%s", call, err, out)
		}
	}
}
