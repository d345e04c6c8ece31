package recovery

import (
	"sync"
	"time"
)

// rateMeter turns a growing byte count into a recent rate: the rate over
// the last rateWindow of samples, taken whenever status is asked.
type rateMeter struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	t time.Time
	n int64
}

const rateWindow = 10 * time.Second

// rate records n at now and returns the bytes per second since the
// oldest sample of the window; ok is false until samples span a second.
func (m *rateMeter) rate(now time.Time, n int64) (float64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := len(m.samples); k == 0 || now.Sub(m.samples[k-1].t) >= 200*time.Millisecond {
		m.samples = append(m.samples, sample{now, n})
	}
	for len(m.samples) > 2 && now.Sub(m.samples[1].t) >= rateWindow {
		m.samples = m.samples[1:]
	}
	first := m.samples[0]
	d := now.Sub(first.t).Seconds()
	if d < 1 {
		return 0, false
	}
	return float64(n-first.n) / d, true
}
