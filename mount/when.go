package mount

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// settle is how far before now an absolute instant must lie for the tree to
// treat it as fixed: writes stamped just before now may still be landing.
const settle = 10 * time.Second

var unixTime = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// moving reports whether WHEN (CLI.md's forms) names contents that can
// still change: latest, a time relative to now, or an absolute time that
// has not settled yet. Recovery point labels and settled times are fixed.
func moving(when string, now time.Time) bool {
	if when == "latest" || strings.HasPrefix(when, "-") || strings.HasPrefix(when, "+") {
		return true
	}
	t, ok := parseInstant(when)
	if !ok {
		return false // a recovery point label
	}
	return t.After(now.Add(-settle))
}

// parseInstant parses the absolute WHEN forms: RFC 3339, compact UTC and
// Unix time, each with an optional fraction.
func parseInstant(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "20060102T150405Z"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	if !unixTime.MatchString(s) {
		return time.Time{}, false
	}
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var ns int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		ns, _ = strconv.ParseInt(frac, 10, 64)
	}
	return time.Unix(n, ns), true
}
