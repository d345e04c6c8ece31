// Package integration drives the built bin/rewind as a user would, with
// the real clients Debian ships (qemu-img, nbdinfo, nbdcopy, nbdfuse,
// qemu-system-x86_64, ...). `make test` builds bin/rewind and installs the
// clients (`make deps`) before it runs these tests.
//
// This file holds the harness: finding the binary, running commands, and
// starting and stopping `rewind serve`. harness_image_test.go makes and
// edits ext4 images, harness_vm_test.go boots the test VM. Helpers fail
// the test when something they need is missing; no test is ever skipped
// for want of a tool.
package integration
