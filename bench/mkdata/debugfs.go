package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
)

// image runs debugfs on an unmounted ext2/3/4 image. debugfs stamps the
// inodes it changes with the time given, through E2FSPROGS_FAKE_TIME.
type image struct {
	path string
	now  int64
}

// run runs one read-only debugfs request and returns its output. debugfs
// exits 0 even when a request fails, so anything on stderr but its banner
// is an error.
func (im *image) run(request string) (string, error) {
	cmd := exec.Command("debugfs", "-R", request, im.path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debugfs -R %q %s: %w: %s", request, im.path, err, stderr.String())
	}
	if msg := debugfsErrors(stderr.String()); msg != "" {
		return "", fmt.Errorf("debugfs -R %q %s: %s", request, im.path, msg)
	}
	return stdout.String(), nil
}

// script runs requests in one writable debugfs session.
func (im *image) script(requests []string) error {
	f, err := os.CreateTemp("", "mkdata-debugfs-*.txt")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(requests, "\n") + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmd := exec.Command("debugfs", "-w", "-f", f.Name(), im.path)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(im.now, 10))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs -w %s: %w: %s", im.path, err, stderr.String())
	}
	if msg := debugfsErrors(stderr.String()); msg != "" {
		return fmt.Errorf("debugfs -w %s: %s", im.path, msg)
	}
	return nil
}

// debugfsErrors drops debugfs's version banner and the inode numbers that
// `write` reports, and returns what is left.
func debugfsErrors(stderr string) string {
	var errs []string
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "debugfs ") || strings.HasPrefix(line, "Allocated inode:") {
			continue
		}
		errs = append(errs, line)
	}
	return strings.Join(errs, "; ")
}

// blockSize returns the filesystem's block size.
func (im *image) blockSize() (int64, error) {
	out, err := im.run("stats")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Block size:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("debugfs stats %s: no block size", im.path)
}

// file is a regular file in an image.
type file struct {
	path  string
	inode int
	size  int64
}

// files lists the regular files below dir, depth first, in directory order.
func (im *image) files(dir string) ([]file, error) {
	out, err := im.run("ls -p " + dir)
	if err != nil {
		return nil, err
	}
	var list []file
	for _, line := range strings.Split(out, "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(line, "/")
		if len(f) != 8 || f[5] == "." || f[5] == ".." || f[5] == "lost+found" {
			continue
		}
		ino, _ := strconv.Atoi(f[1])
		p := path.Join(dir, f[5])
		switch {
		case strings.HasPrefix(f[2], "04"):
			sub, err := im.files(p)
			if err != nil {
				return nil, err
			}
			list = append(list, sub...)
		case strings.HasPrefix(f[2], "10"):
			size, _ := strconv.ParseInt(f[6], 10, 64)
			list = append(list, file{path: p, inode: ino, size: size})
		}
	}
	return list, nil
}

// blocks returns the physical block of each logical block of a file.
func (im *image) blocks(p string) ([]int64, error) {
	out, err := im.run("blocks " + p)
	if err != nil {
		return nil, err
	}
	var list []int64
	for _, s := range strings.Fields(out) {
		b, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("debugfs blocks %s: %q", p, s)
		}
		list = append(list, b)
	}
	return list, nil
}

// read returns the contents of a file.
func (im *image) read(p string) ([]byte, error) {
	out, err := im.run("cat " + p)
	return []byte(out), err
}

// stampRequests sets every time of an inode to im.now.
func (im *image) stampRequests(p string) []string {
	var r []string
	for _, field := range []string{"atime", "mtime", "ctime", "crtime"} {
		r = append(r, fmt.Sprintf("sif %s %s @%d", p, field, im.now))
	}
	return r
}
