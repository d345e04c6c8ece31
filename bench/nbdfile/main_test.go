package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestListensOnLoopbackOnly: nbdfile serves its file read-write to
// whoever connects, so it refuses any address but a loopback one, before
// it opens the file.
func TestListensOnLoopbackOnly(t *testing.T) {
	// A file that does not exist: the refusal must come first.
	path := filepath.Join(t.TempDir(), "disk")
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "localhost:0", "192.0.2.1:0"} {
		err := run(addr, path)
		if err == nil || !strings.Contains(err.Error(), "only a loopback address") {
			t.Errorf("listen on %s: %v, want a refusal", addr, err)
		}
	}
}
