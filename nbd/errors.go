package nbd

import (
	"errors"
	"fmt"
	"syscall"
	"unicode/utf8"
)

var (
	// ErrServerClosed is returned by Serve after Shutdown.
	ErrServerClosed = errors.New("nbd: server closed")
	// ErrUnknownExport is returned (or wrapped) by Resolver.Open for a
	// name it does not serve.
	ErrUnknownExport = errors.New("nbd: unknown export")
)

// Reasons a connection ends without a reply; they are logged, never sent.
var (
	errBadMagic         = errors.New("nbd: bad magic")
	errBadClientFlags   = errors.New("nbd: unknown client flags")
	errOptionTooLong    = errors.New("nbd: option data too long")
	errHandshakeTooLong = errors.New("nbd: handshake too long")
	errNotFixed         = errors.New("nbd: option other than EXPORT_NAME without fixed newstyle")
	errAbort            = errors.New("nbd: client aborted negotiation")
	errTLSRequired      = errors.New("nbd: EXPORT_NAME before STARTTLS on a TLS-only server")
	errPipelinedTLS     = errors.New("nbd: data pipelined after STARTTLS")
	errExportName       = errors.New("nbd: EXPORT_NAME refused")
	errPayloadTooLarge  = errors.New("nbd: request payload too large to skip")
	errReplyStalled     = errors.New("nbd: client stopped taking its replies; connection closed")
)

var errnoNames = map[Errno]string{
	EPERM:     "EPERM (operation not permitted)",
	EIO:       "EIO (input/output error)",
	ENOMEM:    "ENOMEM (cannot allocate memory)",
	EINVAL:    "EINVAL (invalid argument)",
	ENOSPC:    "ENOSPC (no space left on device)",
	EOVERFLOW: "EOVERFLOW (value too large)",
	ENOTSUP:   "ENOTSUP (operation not supported)",
	ESHUTDOWN: "ESHUTDOWN (server is shutting down)",
}

func (e Errno) Error() string {
	if s, ok := errnoNames[e]; ok {
		return "nbd: " + s
	}
	return fmt.Sprintf("nbd: error %d", uint32(e))
}

// ToErrno maps an error from a Backend to the NBD error value sent to the
// client. nil maps to 0.
func ToErrno(err error) Errno {
	var e Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES):
		return EPERM
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ENOSPC
	case errors.Is(err, syscall.EINVAL):
		return EINVAL
	case errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP):
		return ENOTSUP
	case errors.Is(err, syscall.ENOMEM):
		return ENOMEM
	case errors.Is(err, syscall.EOVERFLOW):
		return EOVERFLOW
	case errors.Is(err, syscall.ESHUTDOWN):
		return ESHUTDOWN
	default:
		return EIO
	}
}

// replyError is a failed request: the errno sent and a message for the
// client (sent in structured error chunks).
type replyError struct {
	errno Errno
	msg   string
}

func (e *replyError) Error() string { return e.msg }
func (e *replyError) Unwrap() error { return e.errno }

func rejectf(errno Errno, format string, args ...any) *replyError {
	return &replyError{errno: errno, msg: fmt.Sprintf(format, args...)}
}

// truncString cuts s to at most maxString bytes on a rune boundary, as the
// protocol requires of every string (CVE-2020-10761).
func truncString(s string) string {
	if len(s) <= maxString {
		return s
	}
	s = s[:maxString]
	// Drop a rune cut in half (at most UTFMax-1 bytes).
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}
