package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressBar draws a one-line bar on a terminal, at most ten times a
// second.
type progressBar struct {
	w     io.Writer
	label string
	start time.Time
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// newProgress returns a progress callback, or nil when w is not a
// terminal or output is JSON.
func newProgress(label string, enabled bool) (*progressBar, func(done, total int64)) {
	if !enabled || !isTerminal(os.Stderr) {
		return nil, nil
	}
	p := &progressBar{w: os.Stderr, label: label, start: time.Now()}
	return p, p.update
}

func (p *progressBar) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	const width = 30
	fill := int(frac * width)
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s/%s %s/s ", p.label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		frac*100, human(done), human(total), human(int64(rate)))
	p.drawn = true
}

// done ends the bar's line.
func (p *progressBar) done() {
	if p != nil && p.drawn {
		fmt.Fprintln(p.w)
	}
}
