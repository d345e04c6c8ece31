package mount

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"
	"time"
)

func TestMoving(t *testing.T) {
	now := time.Date(2026, 11, 25, 14, 3, 10, 0, time.UTC)
	for when, want := range map[string]bool{
		"latest":                    true,
		"-90s":                      true,
		"-2h30m":                    true,
		"before-patch":              false,
		"20261125T140310Z":          true,  // now: writes may still land
		"20261125T140250Z":          false, // settled
		"20261125T140250.250Z":      false,
		"2026-11-25T15:03:05+01:00": true,
		"2026-11-25T14:00:00Z":      false,
		"20271125T140310Z":          true, // the future
		"1795615200":                false,
		"1795615200.5":              false,
		"1895615390":                true,
	} {
		if got := moving(when, now); got != want {
			t.Errorf("moving(%q) = %v, want %v", when, got, want)
		}
	}
}

func TestToErrno(t *testing.T) {
	for err, want := range map[error]syscall.Errno{
		fmt.Errorf("vol: %w", fs.ErrNotExist):             syscall.ENOENT,
		fmt.Errorf("x: %w", syscall.ENOENT):               syscall.ENOENT,
		fmt.Errorf("x: %w", syscall.EROFS):                syscall.EROFS,
		fmt.Errorf("x: %w", fs.ErrPermission):             syscall.EPERM,
		fmt.Errorf("x: %w", fs.ErrInvalid):                syscall.EINVAL,
		fmt.Errorf("x: %w", context.Canceled):             syscall.EINTR,
		fmt.Errorf("x: %w", context.DeadlineExceeded):     syscall.ETIMEDOUT,
		errors.New("blockstore: chunk checksum mismatch"): syscall.EIO,
	} {
		if got := toErrno(err); got != want {
			t.Errorf("toErrno(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	if got := unescapeOctal(`/mnt/a\040b\134c\`); got != `/mnt/a b\c\` {
		t.Errorf("got %q", got)
	}
}
