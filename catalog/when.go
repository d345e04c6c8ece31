package catalog

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WhenKind says how a WHEN was written.
type WhenKind int

// The forms of WHEN.
const (
	WhenLatest WhenKind = iota
	WhenTime
	WhenLabel
)

// When is a parsed point in time: the newest write, an instant, or a
// recovery point label (resolved against a volume later).
type When struct {
	Kind  WhenKind
	Time  int64 // ns, for WhenTime
	Label string
}

var (
	labelRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]{0,127}$`)
	volumeRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	unixRE    = regexp.MustCompile(`^([0-9]{1,12})(?:\.([0-9]{1,9}))?$`)
	compactRE = regexp.MustCompile(`^([0-9]{8}T[0-9]{6})(?:\.([0-9]{1,9}))?Z$`)
)

const whenHelp = "use latest, an RFC 3339 time (2026-11-25T14:03:10Z), compact UTC (20261125T140310Z), Unix seconds (1764079390), a duration before now (-90s, -2h30m) or a recovery point label"

// ParseWhen parses every WHEN form of the CLI contract. A WHEN that parses
// as a time is a time; otherwise it must be a valid label.
func ParseWhen(s string, now time.Time) (When, error) {
	switch {
	case s == "latest":
		return When{Kind: WhenLatest}, nil
	case s == "":
		return When{}, errorf(ErrBadWhen, "bad time: it is empty; %s", whenHelp)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return whenTime(s, t)
	}
	if m := compactRE.FindStringSubmatch(s); m != nil {
		t, err := time.Parse("20060102T150405", m[1])
		if err == nil {
			return whenTime(s, t.Add(time.Duration(fraction(m[2]))))
		}
	}
	if m := unixRE.FindStringSubmatch(s); m != nil {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		return whenTime(s, time.Unix(sec, fraction(m[2])))
	}
	if strings.HasPrefix(s, "-") {
		d, err := time.ParseDuration(s[1:])
		if err != nil || d < 0 {
			return When{}, errorf(ErrBadWhen, "bad time %q: not a duration; %s", s, whenHelp)
		}
		return whenTime(s, now.Add(-d))
	}
	if labelRE.MatchString(s) {
		return When{Kind: WhenLabel, Label: s}, nil
	}
	return When{}, errorf(ErrBadWhen, "bad time %q: %s", s, whenHelp)
}

// Times are stored as int64 nanoseconds since 1970: these are the
// first and the last instants that fit.
var (
	earliestTime = time.Unix(0, math.MinInt64).UTC()
	latestTime   = time.Unix(0, math.MaxInt64).UTC()
)

// whenTime is t as a WhenTime, or an error when t does not fit the
// nanosecond clock.
func whenTime(s string, t time.Time) (When, error) {
	if t.After(latestTime) {
		return When{}, errorf(ErrBadWhen, "bad time %q: the latest time rewind can store is %s", s, Time(math.MaxInt64))
	}
	if t.Before(earliestTime) {
		return When{}, errorf(ErrBadWhen, "bad time %q: the earliest time rewind can store is %s", s, Time(math.MinInt64))
	}
	return When{Kind: WhenTime, Time: t.UnixNano()}, nil
}

// fraction turns the digits after a decimal point into nanoseconds.
func fraction(digits string) int64 {
	if digits == "" {
		return 0
	}
	n, _ := strconv.ParseInt((digits + "000000000")[:9], 10, 64)
	return n
}

// Spec is a parsed VOLUME[@WHEN].
type Spec struct {
	Volume string
	When   When
	// Bare is true when no @WHEN was given: a clone's writable head for
	// NBD and FUSE, the newest version elsewhere.
	Bare bool
}

// ParseSpec parses VOLUME or VOLUME@WHEN.
func ParseSpec(s string, now time.Time) (Spec, error) {
	vol, when, hasAt := strings.Cut(s, "@")
	if err := CheckVolumeName(vol); err != nil {
		return Spec{}, err
	}
	if !hasAt {
		return Spec{Volume: vol, When: When{Kind: WhenLatest}, Bare: true}, nil
	}
	w, err := ParseWhen(when, now)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Volume: vol, When: w}, nil
}

// CheckVolumeName checks a volume name: a letter or digit, then letters,
// digits, '.', '_' or '-', up to 128 characters.
func CheckVolumeName(name string) error {
	if !volumeRE.MatchString(name) {
		return errorf(ErrBadName, "%q: a volume name is a letter or digit followed by letters, digits, '.', '_' or '-' (at most 128)", name)
	}
	return nil
}

// CheckLabel checks a recovery point label.
func CheckLabel(label string) error {
	if label == "latest" || !labelRE.MatchString(label) {
		return errorf(ErrBadName, "%q: a label starts with a letter, uses letters, digits, '.', '_' or '-', and is not \"latest\"", label)
	}
	if _, err := ParseWhen(label, time.Time{}); err == nil {
		if w, _ := ParseWhen(label, time.Time{}); w.Kind != WhenLabel {
			return errorf(ErrBadName, "%q reads as a time, so it cannot be a label", label)
		}
	}
	return nil
}
