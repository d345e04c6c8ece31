package catalog

import (
	"fmt"
	"time"
)

// Window is a daily span of local time, HH:MM-HH:MM, that may wrap
// midnight (22:00-06:00). The zero Window is always open.
type Window struct {
	set        bool
	start, end int // minutes after midnight
	text       string
}

// ParseWindow parses HH:MM-HH:MM; "" is the always-open window.
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{}, nil
	}
	var h1, m1, h2, m2 int
	var rest string
	n, _ := fmt.Sscanf(s, "%d:%d-%d:%d%s", &h1, &m1, &h2, &m2, &rest)
	if n != 4 || h1 < 0 || h1 > 23 || h2 < 0 || h2 > 24 || m1 < 0 || m1 > 59 || m2 < 0 || m2 > 59 || (h2 == 24 && m2 != 0) {
		return Window{}, errorf(ErrInvalid, "bad window %q: give local times as HH:MM-HH:MM, like 22:00-06:00", s)
	}
	w := Window{set: true, start: h1*60 + m1, end: h2*60 + m2, text: s}
	if w.start == w.end%(24*60) {
		return Window{}, errorf(ErrInvalid, "window %q is empty: give two different times, or no window for any time", s)
	}
	return w, nil
}

func (w Window) String() string { return w.text }

// IsSet reports whether w limits anything.
func (w Window) IsSet() bool { return w.set }

func minuteOf(t time.Time) int { return t.Hour()*60 + t.Minute() }

// Open reports whether t (local time) is inside the window.
func (w Window) Open(t time.Time) bool {
	if !w.set {
		return true
	}
	m := minuteOf(t)
	if w.start < w.end {
		return m >= w.start && m < w.end
	}
	return m >= w.start || m < w.end
}

// Next returns when the window next opens at or after t (t itself when
// it is open).
func (w Window) Next(t time.Time) time.Time {
	if w.Open(t) {
		return t
	}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	at := day.Add(time.Duration(w.start) * time.Minute)
	if !at.After(t) {
		at = day.AddDate(0, 0, 1).Add(time.Duration(w.start) * time.Minute)
	}
	return at
}
