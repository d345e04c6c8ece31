package client

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/rewind-dev/rewind/nbd"
)

// Sentinels, checked with errors.Is.
var (
	ErrBadURI = errors.New("nbd client: bad NBD URI")
	// ErrUnreachable: the server could not be connected to.
	ErrUnreachable = errors.New("nbd client: cannot reach the NBD server")
	// ErrUnknownExport: the server does not serve the export named.
	ErrUnknownExport = errors.New("nbd client: unknown export")
	// ErrReadOnly: the export is read-only and Options.Writable was set,
	// or a write was attempted on a read-only export.
	ErrReadOnly = errors.New("nbd client: export is read-only")
	// ErrTLSRequired: the server accepts only TLS connections.
	ErrTLSRequired = errors.New("nbd client: the server requires TLS")
	// ErrRefused: the server refused the export for another reason.
	ErrRefused = errors.New("nbd client: the server refused the export")
	// ErrProtocol: the server broke the protocol; the connection is closed.
	ErrProtocol = errors.New("nbd client: protocol error")
	// ErrClosed: the connection was closed (by Close, or because it failed)
	// before the request was answered.
	ErrClosed = errors.New("nbd client: connection closed")
	// ErrUnaligned: a request is not aligned to the export's minimum block
	// size.
	ErrUnaligned = errors.New("nbd client: request not aligned to the export's minimum block size")
	// ErrOutOfRange: a request goes past the end of the export.
	ErrOutOfRange = errors.New("nbd client: request beyond the end of the export")
)

// maxNameLen is the protocol's limit for export names.
const maxNameLen = nbd.MaxString

// RequestError is a request the server answered with an error. It matches
// both the nbd.Errno it carries and the syscall.Errno of the same meaning
// (errors.Is(err, syscall.ENOSPC)).
type RequestError struct {
	Op     string // "read", "write", "write_zeroes", "trim", "flush"
	Offset int64
	Length int64
	Errno  nbd.Errno
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("nbd client: %s of %d bytes at %d: %v", e.Op, e.Length, e.Offset, e.Errno)
}

// Unwrap returns the NBD error and its syscall equivalent.
func (e *RequestError) Unwrap() []error { return []error{e.Errno, Syscall(e.Errno)} }

// Syscall maps an NBD error value to the errno of the same meaning. The
// protocol's values are Linux's; a value the protocol does not define is
// EINVAL, as libnbd treats it.
func Syscall(e nbd.Errno) syscall.Errno {
	switch e {
	case nbd.EPERM, nbd.EIO, nbd.ENOMEM, nbd.EINVAL, nbd.ENOSPC, nbd.EOVERFLOW, nbd.ENOTSUP, nbd.ESHUTDOWN:
		return syscall.Errno(e)
	}
	return syscall.EINVAL
}
