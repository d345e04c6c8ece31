package mount

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// prctl(2) options, from linux/prctl.h (Linux 5.6+).
const (
	prSetIOFlusher = 57 // PR_SET_IO_FLUSHER
	prGetIOFlusher = 58 // PR_GET_IO_FLUSHER
)

// IOFlusher reports whether the calling thread is marked PR_SET_IO_FLUSHER:
// its memory allocations do not wait on I/O, which a process that serves
// the block device under a loop device must not do (see doc.go).
func IOFlusher() bool {
	r, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetIOFlusher, 0, 0)
	return errno == 0 && r == 1
}

// ExecAsIOFlusher makes the whole process an I/O flusher. The flag is per
// thread and inherited by threads and across execve, but the Go runtime
// has started threads before main runs; so it sets the flag on one locked
// thread and re-executes the program from it. Call it first thing in
// main: it returns nil at once when the flag is already set (in the
// re-executed program), and otherwise does not return unless it fails
// (without CAP_SYS_RESOURCE, or before Linux 5.6).
func ExecAsIOFlusher() error {
	if IOFlusher() {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetIOFlusher, 1, 0); errno != 0 {
		hint := ""
		switch errno {
		case syscall.EPERM:
			hint = ": it needs CAP_SYS_RESOURCE (a container may need --cap-add SYS_RESOURCE)"
		case syscall.EINVAL:
			hint = ": it needs Linux 5.6 or later"
		}
		return fmt.Errorf("mount: prctl(PR_SET_IO_FLUSHER): %w%s", errno, hint)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("mount: re-exec as I/O flusher: %w", err)
	}
	return fmt.Errorf("mount: re-exec as I/O flusher: %w", syscall.Exec(exe, os.Args, os.Environ()))
}
