// Package integration drives the built bin/rewind as a user would, with
// the real clients Debian ships (qemu-img, nbdinfo, nbdcopy, nbdfuse,
// qemu-system-x86_64, ...). `make test` builds bin/rewind and installs the
// clients (`make deps`) before it runs these tests.
//
// harness_test.go finds the binary, runs commands, and starts and stops
// `rewind serve`; harness_image_test.go makes and edits ext4 images;
// harness_vm_test.go boots the test VM; harness_pg_test.go runs PostgreSQL
// on an export or a file through a loop device; harness_browser_test.go
// drives a headless Chromium (Debian's chromium, through chromedp) and
// saves full-page screenshots as artifacts in $REWIND_ARTIFACTS or
// bin/artifacts/console/; harness_seed_test.go runs seedload (a program
// of its own, built without the race detector) to fill a data directory
// with 200 volumes and 100,000 versions before the daemon starts.
//
// The tests are history_test.go (import, export, every WHEN form, crash
// safety),
// nbd_test.go (the real NBD clients, a VM booting from a clone),
// fuse_test.go (the tree, rewind mount --files and --rw, clean-up),
// access_test.go (who the local socket serves, as root and as uid 65534
// through setpriv; its TestMain also lets the test binary act as a raw
// socket client), recover_test.go (rewind recover: a VM and PostgreSQL
// running during hydration, SIGKILL and resume, an NBD target, a cutover
// under writes, bad input), protect_test.go (rewind protect: history at
// instants 0.3 s apart, SIGKILL after a flushed write, a file deleted on a
// live filesystem found again, a full disk, bad input), and
// console_test.go (the web console in the browser: signing in, the
// volumes, a label's instant, a clone, a recovery to a file watched to
// 100% and cut over, a phone's viewport, and the load times of 200
// volumes and of a timeline of 100,000 versions, written to load.txt
// among the artifacts). Helpers fail the test when something they need
// is missing; no test is ever skipped for want of a tool.
package integration
