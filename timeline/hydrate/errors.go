package hydrate

import "errors"

var (
	// ErrFailed marks a copy that stopped on an error; the reason is
	// wrapped with it.
	ErrFailed = errors.New("hydrate: copy failed")
	// ErrCancelled is returned once Cancel was called.
	ErrCancelled = errors.New("hydrate: copy cancelled")
	// ErrStopped is returned by Cutover when Run returned before the
	// copy converged.
	ErrStopped = errors.New("hydrate: copy stopped")
	// ErrCutOver is returned by calls made after a cutover.
	ErrCutOver = errors.New("hydrate: already cut over")
	// ErrTargetTooSmall is returned by New for a target smaller than the
	// source.
	ErrTargetTooSmall = errors.New("hydrate: target smaller than source")
	// ErrProgressMismatch is returned by New when the saved progress is
	// for another size or granularity, or is corrupt.
	ErrProgressMismatch = errors.New("hydrate: saved progress does not match this copy")
)
