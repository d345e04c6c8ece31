// Package weed runs SeaweedFS on loopback for tests: a real, distributed
// S3-compatible object store for objstore's S3 backend and everything
// built on it.
//
// Start runs one `weed server -s3` process (master, volume server, filer
// and S3 gateway); StartCluster runs a master with replication 001, three
// volume servers and a filer with S3, so a test can SIGKILL a volume
// server and still read every object. Both wait until a first PUT
// succeeds, the only sign that SeaweedFS is write-ready, and SIGKILL their
// processes and remove their directory at the end of the test. A test
// binary whose tests share one server calls Main (or Run) from TestMain
// and Shared from each test: the server starts at the first Shared, once.
// Kill and Restart take a server away and bring it back on its data.
//
// The binary is $REWIND_WEED, or the one `make deps` builds into
// /var/cache/rewind/weed-VERSION. Without it every test that asks for a
// server fails, saying to run `make deps`: such tests are never skipped.
//
// Ports are picked at random in 10000-21999 (below the kernel's ephemeral
// range), each with port+10000 free too, since SeaweedFS puts gRPC there;
// a start that loses a port to another process is retried on new ports.
// Processes get SIGKILL if the test binary dies (Pdeathsig).
//
// Servers are safe for concurrent use by a package's tests.
package weed
