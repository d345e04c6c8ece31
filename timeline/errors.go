package timeline

import (
	"errors"
	"fmt"
	"syscall"
)

// errnoError is a sentinel that also matches a syscall.Errno with
// errors.Is, so the NBD and FUSE edges can turn it into the right code
// without knowing this package.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string        { return e.msg }
func (e *errnoError) Is(target error) bool { return target == e.errno }

// Sentinel errors. Check them with errors.Is.
var (
	// ErrReadOnly: a write to history (a view at a fixed instant, or a
	// volume that is not a clone).
	ErrReadOnly error = &errnoError{"timeline: history is read-only (clone it to write)", syscall.EPERM}
	// ErrOutOfRange: a read or trim past the end of the volume.
	ErrOutOfRange error = &errnoError{"timeline: range is past the end of the volume", syscall.EINVAL}
	// ErrNoSpace: a write or zero past the end of the volume.
	ErrNoSpace error = &errnoError{"timeline: write past the end of the volume", syscall.ENOSPC}
	// ErrNotFound: no such volume.
	ErrNotFound error = &errnoError{"timeline: no such volume", syscall.ENOENT}
	// ErrExists: a volume of that name exists.
	ErrExists = errors.New("timeline: volume exists")
	// ErrBeforeFirst: an instant before the volume's first version.
	ErrBeforeFirst = errors.New("timeline: instant is before the volume's first version")
	// ErrTooOld: a new version not later than the volume's newest.
	ErrTooOld = errors.New("timeline: time is not later than the volume's newest version")
	// ErrInUse: the volume has clones or is otherwise pinned.
	ErrInUse = errors.New("timeline: volume is in use")
	// ErrUnwritable: the store stopped taking writes (its disk is full,
	// or the index could not commit); reads go on. The error returned
	// also wraps the cause, so a full disk matches syscall.ENOSPC and
	// anything else maps to EIO.
	ErrUnwritable = errors.New("timeline: the store takes no more writes")
	// ErrClosed: the view or store is closed.
	ErrClosed error = &errnoError{"timeline: closed", syscall.ESHUTDOWN}
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
