package mount

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Dev    string // major:minor
	Point  string
	FSType string
	Source string
}

// mounts lists the mounts of this mount namespace, in mount order.
func mounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mount: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := parseMountinfo(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// parseMountinfo parses "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3
// /dev/root rw,errors=continue" (proc(5)).
func parseMountinfo(line string) (mountEntry, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return mountEntry{}, false
	}
	a, b := strings.Fields(pre), strings.Fields(post)
	if len(a) < 5 || len(b) < 2 {
		return mountEntry{}, false
	}
	return mountEntry{Dev: a[2], Point: unescapeOctal(a[4]), FSType: b[0], Source: unescapeOctal(b[1])}, true
}

// unescapeOctal undoes the kernel's \040-style escaping of spaces, tabs,
// newlines and backslashes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMountpoint(dir string) (bool, error) {
	ms, err := mounts()
	if err != nil {
		return false, err
	}
	for _, e := range ms {
		if e.Point == dir {
			return true, nil
		}
	}
	return false, nil
}

// unmountPath unmounts the kernel mount at dir; if it is busy it detaches
// it lazily and says so. Not mounted is success.
func unmountPath(log *slog.Logger, dir string) error {
	err := syscall.Unmount(dir, 0)
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if lerr := syscall.Unmount(dir, syscall.MNT_DETACH); lerr != nil {
		return fmt.Errorf("unmount %s: %w (lazy: %v)", dir, err, lerr)
	}
	log.Warn("mount: busy, detached lazily", "dir", dir, "err", err)
	return nil
}

// unmountFUSE ends a FUSE mount this process serves. A busy mount is
// detached lazily: the server keeps answering until its last user closes.
func unmountFUSE(log *slog.Logger, srv *fuse.Server, dir string) error {
	err := srv.Unmount()
	if err == nil {
		return nil
	}
	return unmountStaleFUSE(log, dir, err)
}

// unmountStaleFUSE unmounts a FUSE mount whose server may be gone: lazily
// through the kernel, then through fusermount3 for an unprivileged caller.
func unmountStaleFUSE(log *slog.Logger, dir string, cause error) error {
	if err := syscall.Unmount(dir, 0); err == nil {
		return nil
	}
	lerr := syscall.Unmount(dir, syscall.MNT_DETACH)
	if lerr != nil {
		var stderr bytes.Buffer
		cmd := exec.Command("fusermount3", "-u", "-z", dir)
		cmd.Stderr = &stderr
		if ferr := cmd.Run(); ferr != nil {
			return fmt.Errorf("unmount %s: %v; lazy: %v; fusermount3 -u -z: %v %s", dir, cause, lerr, ferr, strings.TrimSpace(stderr.String()))
		}
	}
	log.Warn("mount: FUSE mount detached lazily", "dir", dir, "cause", cause)
	return nil
}
