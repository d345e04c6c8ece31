package weed

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryMissing: without the binary, the error says how to get it.
func TestBinaryMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "weed")
	if _, err := binary("", missing); err == nil || !strings.Contains(err.Error(), "run `make deps`") {
		t.Errorf("no cached binary: %v", err)
	}
	if _, err := binary(missing, CachedBinary); err == nil || !strings.Contains(err.Error(), "REWIND_WEED") {
		t.Errorf("REWIND_WEED naming nothing: %v", err)
	}
	if got, err := binary("", CachedBinary); err != nil || got != CachedBinary {
		t.Errorf("the binary make deps built: %q, %v", got, err)
	}
}
