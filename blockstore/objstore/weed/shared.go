package weed

import (
	"os"
	"sync"
	"testing"
)

// shared is the one server of a test binary whose TestMain calls Main.
var shared struct {
	sync.Mutex
	main    bool
	started bool
	srv     *Server
	err     error
}

// Main runs the tests of a package whose tests call Shared, kills the
// shared server if one was started, and exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { weed.Main(m) }
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that does more: it returns m.Run's code.
//
//	os.Exit(weed.Run(m))
func Run(m *testing.M) int {
	shared.Lock()
	shared.main = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	if shared.srv != nil {
		shared.srv.Close()
	}
	shared.Unlock()
	return code
}

// Shared returns the test binary's server, starting it at the first call.
// Tests must not stop it, and should use buckets of their own (NewBucket).
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.main {
		t.Fatal("weed.Shared needs weed.Main(m) or weed.Run(m) in the package's TestMain, which stops the server")
	}
	if !shared.started {
		shared.started = true
		shared.srv, shared.err = start(Options{})
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}
