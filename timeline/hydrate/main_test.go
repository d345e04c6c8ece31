package hydrate

import (
	"log/slog"
	"os"
	"testing"
)

// TestMain keeps the copier's logs (expected failures, mode switches)
// out of the test output.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
