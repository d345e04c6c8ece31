package objstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// attemptTimeout bounds one request moving n bytes: 1 min plus 4 s per
// MiB, so a stalled transfer is cut off and retried.
func attemptTimeout(n int64) time.Duration {
	return time.Minute + time.Duration(max(n, 0))*4*time.Second/(1<<20)
}

// errStalled ends an attempt that outlived attemptTimeout (retried).
var errStalled = fmt.Errorf("transfer stalled: %w", context.DeadlineExceeded)

// backoff paces the retries of one call.
type backoff struct {
	budget time.Duration
	first  time.Time // of the current run of failures
	wait   time.Duration
}

func (s *S3) backoff() backoff { return backoff{budget: s.retryFor} }

// reset starts the budget again after progress.
func (b *backoff) reset() { b.first, b.wait = time.Time{}, 0 }

// again reports whether to retry after err, having waited for it.
func (b *backoff) again(ctx context.Context, err error) bool {
	if ctx.Err() != nil || kind(err) == failFinal {
		return false
	}
	now := time.Now()
	if b.first.IsZero() {
		b.first = now
	}
	left := b.budget - now.Sub(b.first)
	if left <= 0 {
		return false
	}
	b.wait = min(max(2*b.wait, 100*time.Millisecond), 2*time.Second)
	d := min(b.wait/2+rand.N(b.wait/2+1), left)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type failure int

const (
	failFinal   failure = iota // an answer that will not change
	failServer                 // the server answered busy or failing
	failNetwork                // no answer: refused, reset, timed out
)

// kind sorts an error from minio-go.
func kind(err error) failure {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode != 0 {
		switch resp.StatusCode {
		case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
			http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return failServer
		}
		switch resp.Code {
		case "SlowDown", "SlowDownRead", "SlowDownWrite", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable":
			return failServer
		}
		return failFinal
	}
	var cert *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var tlsHeader tls.RecordHeaderError
	if errors.As(err, &cert) || errors.As(err, &unknownCA) || errors.As(err, &host) ||
		errors.As(err, &invalid) || errors.As(err, &tlsHeader) {
		return failFinal
	}
	var urlErr *url.Error
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return failFinal
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &urlErr), errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return failNetwork
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) { // a body cut short
		return failNetwork
	}
	return failFinal
}

func errorCode(err error) string {
	if err == nil {
		return ""
	}
	return minio.ToErrorResponse(err).Code
}

func errorStatus(err error) int {
	if err == nil {
		return 0
	}
	return minio.ToErrorResponse(err).StatusCode
}

// wrap turns a final error into one line that says what to fix.
func (s *S3) wrap(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	what := s.String()
	if name != "" {
		what = op + " " + name + " in " + what
	} else {
		what = op + " " + what
	}
	if ctx.Err() != nil { // the caller's deadline or cancel, not the endpoint
		return fmt.Errorf("objstore: %s: %w", what, ctx.Err())
	}
	switch errorCode(err) {
	case minio.NoSuchKey:
		return fmt.Errorf("objstore: %s: %w", what, ErrNotExist)
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("%w: %s (%s at %s)", ErrCredentials, minio.ToErrorResponse(err).Message, what, s.endpoint)
	case minio.NoSuchBucket:
		return fmt.Errorf("objstore: %s: bucket %s is gone from %s", what, s.bucket, s.endpoint)
	}
	if kind(err) == failNetwork {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // the request's URL says nothing new
		}
		return fmt.Errorf("%w at %s (%s): %v; %s", ErrUnreachable, s.endpoint, what, err, s.hint)
	}
	return fmt.Errorf("objstore: %s at %s: %w", what, s.endpoint, err)
}
