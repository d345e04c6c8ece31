package catalog

import (
	"errors"
	"fmt"

	"github.com/rewind-dev/rewind/timeline"
)

// Error classes. Check them with errors.Is.
var (
	ErrBadWhen  = errors.New("bad time")
	ErrBadName  = errors.New("bad name")
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
	ErrBusy     = errors.New("data directory is in use")
	ErrInvalid  = errors.New("invalid argument")
)

// Class returns the class of err as a short word for the socket API.
func Class(err error) string {
	switch {
	case errors.Is(err, ErrBadWhen), errors.Is(err, ErrBadName), errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrNotFound), errors.Is(err, timeline.ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrExists), errors.Is(err, timeline.ErrExists):
		return "exists"
	case errors.Is(err, ErrConflict), errors.Is(err, timeline.ErrTooOld), errors.Is(err, timeline.ErrBeforeFirst), errors.Is(err, timeline.ErrInUse):
		return "conflict"
	case errors.Is(err, ErrBusy):
		return "busy"
	case errors.Is(err, ErrNoSpace):
		return "no_space"
	}
	return "internal"
}

// classed is an error whose message is for the user and whose class is
// for errors.Is.
type classed struct {
	class error
	msg   string
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

// errorf makes an error of class with a formatted message.
func errorf(class error, format string, args ...any) error {
	return &classed{class: class, msg: fmt.Sprintf(format, args...)}
}

// Errorf makes an error of class (ErrInvalid, ErrConflict, ...) whose
// message is the formatted text alone, for the packages around the
// catalog.
func Errorf(class error, format string, args ...any) error { return errorf(class, format, args...) }
