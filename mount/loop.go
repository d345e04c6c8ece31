package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// loopTimeout bounds one losetup run; it only waits on the kernel and on
// this process's own FUSE server, which answers from other goroutines.
const loopTimeout = time.Minute

// needTools fails with the Debian package to install when a program that
// MountFiles runs is missing.
func needTools() error {
	for _, t := range []struct{ bin, pkg string }{{"losetup", "mount"}, {"fusermount3", "fuse3"}} {
		if _, err := exec.LookPath(t.bin); err != nil {
			return fmt.Errorf("mount: %s not found: install the Debian package %s", t.bin, t.pkg)
		}
	}
	return nil
}

func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), loopTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// attachLoop attaches size bytes of backing at off to a free loop device,
// writable (the journal is replayed into the overlay through it), with
// direct I/O so pages are not cached twice and no dirty page of the FUSE
// file waits for this process during memory reclaim.
func attachLoop(backing string, off, size int64) (string, error) {
	dev, err := run("losetup", "--find", "--show", "--direct-io=on",
		"--offset", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10), backing)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", dev)
	}
	return dev, nil
}

func detachLoop(dev string) error {
	_, err := run("losetup", "--detach", dev)
	if err != nil && loopBacking(dev) == "" {
		return nil // already detached
	}
	return err
}

// loopBacking returns the backing file of dev as sysfs shows it, or "".
func loopBacking(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
}

func loopOffset(dev string) int64 {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "offset"))
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// loopsOf lists the loop devices attached to backing at off.
func loopsOf(backing string, off int64) ([]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var devs []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		dev := "/dev/" + e.Name()
		if loopBacking(dev) == backing && loopOffset(dev) == off {
			devs = append(devs, dev)
		}
	}
	return devs, nil
}
