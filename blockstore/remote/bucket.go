package remote

import (
	"context"
	"io"
	"sync"
	"time"
)

// Bucket is a token bucket on bytes: Take(n) returns once n bytes fit
// in the rate. It holds one second of rate; a take larger than what it
// holds runs it into debt, which later takes wait off. A nil *Bucket
// limits nothing.
type Bucket struct {
	rate  float64 // bytes per second
	burst float64
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewBucket returns a bucket of rate bytes per second, or nil for none
// (rate <= 0).
func NewBucket(rate int64) *Bucket {
	return newBucket(rate, time.Now, sleepCtx)
}

func newBucket(rate int64, now func() time.Time, sleep func(context.Context, time.Duration) error) *Bucket {
	if rate <= 0 {
		return nil
	}
	r := float64(rate)
	return &Bucket{rate: r, burst: r, now: now, sleep: sleep, tokens: r, last: now()}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Take waits until n more bytes keep to the rate.
func (b *Bucket) Take(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return ctx.Err()
	}
	b.mu.Lock()
	now := b.now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	wait := time.Duration(0)
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if wait > 0 {
		return b.sleep(ctx, wait)
	}
	return ctx.Err()
}

// limitedReader reads through a bucket in small steps, counting what it
// hands on.
type limitedReader struct {
	ctx  context.Context
	r    io.Reader
	b    *Bucket
	sent func(n int64)
}

// limitStep is the most a read takes from the bucket at once.
const limitStep = 256 << 10

func (l *limitedReader) Read(p []byte) (int, error) {
	if len(p) > limitStep {
		p = p[:limitStep]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		if terr := l.b.Take(l.ctx, int64(n)); terr != nil {
			return 0, terr
		}
		if l.sent != nil {
			l.sent(int64(n))
		}
	}
	return n, err
}
