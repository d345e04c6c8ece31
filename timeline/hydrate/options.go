package hydrate

import (
	"fmt"
	"log/slog"
	"time"
)

// Options configure a Copier. The zero value is usable.
type Options struct {
	// Granularity is the size of one dirty bit (default 64 KiB).
	Granularity int64
	// MaxRequest bounds one copy request (default 1 MiB, at least one
	// granule).
	MaxRequest int64
	// Workers is the number of requests in flight (default 16).
	Workers int
	// Rate limits the copy in bytes/s (0 = unlimited); see SetRate.
	Rate int64
	// TargetZeroed says the target reads as zeroes (a new sparse file),
	// so holes of the source are skipped. Ignored when progress is
	// resumed: the saved progress says which granules are zero.
	TargetZeroed bool
	// WriteBlocking starts in write-blocking mode.
	WriteBlocking bool
	// StallPasses is how many passes over the bitmap in a row the dirty
	// count may fail to shrink before the copier switches to
	// write-blocking mode (default 3; negative = never).
	StallPasses int
	// Store keeps the progress; nil keeps none.
	Store Store
	// SaveInterval is how often Run saves progress (default 10 s).
	SaveInterval time.Duration
	// Watermark, if set, is read each time progress is saved, under the
	// same lock as the bitmap, and saved with it (see Copier.Resumed).
	// It must be cheap: it runs with the copier locked.
	Watermark func() int64
	// FlushSource, if set, makes the source's completed writes durable.
	// Checkpoint calls it after taking its snapshot and before saving it,
	// so that nothing the saved bitmap calls copied can be lost from the
	// source by a crash (a clone write acknowledged but not yet flushed
	// may already be on the target).
	FlushSource func() error
	// Clock is the time source (default the wall clock).
	Clock Clock
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) normalized() (Options, error) {
	if o.Granularity == 0 {
		o.Granularity = 64 << 10
	}
	if o.Granularity < 512 {
		return o, fmt.Errorf("hydrate: granularity %d is below 512 bytes", o.Granularity)
	}
	if o.MaxRequest == 0 {
		o.MaxRequest = 1 << 20
	}
	o.MaxRequest = max(o.MaxRequest/o.Granularity, 1) * o.Granularity
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Rate < 0 {
		return o, fmt.Errorf("hydrate: negative rate %d", o.Rate)
	}
	if o.StallPasses == 0 {
		o.StallPasses = 3
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = 10 * time.Second
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
