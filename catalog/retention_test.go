package catalog

import (
	"slices"
	"testing"
	"time"
)

// The policy keeps every version of the last KeepAll, then the newest of
// each minute, hour and day over their spans, and nothing older.
func TestRetentionKeep(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(d string) int64 {
		v, err := time.ParseDuration(d)
		if err != nil {
			t.Fatal(err)
		}
		return now.Add(-v).UnixNano()
	}
	times := []int64{
		at("800h"),                 // older than every span
		at("49h30m"), at("49h10m"), // one day: the newer stays
		at("3h50m"), at("3h20m"), // one hour (8:00-9:00): the newer stays
		at("30m30s"), at("30m10s"), // one minute: the newer stays
		at("5m"), at("4m"), at("1m"), // within KeepAll: all stay
	}
	slices.Sort(times)
	r := &Retention{KeepAll: Span(10 * time.Minute), KeepMinutely: Span(time.Hour), KeepHourly: Span(24 * time.Hour), KeepDaily: Span(7 * 24 * time.Hour)}
	got := r.keep(times, now)
	slices.Sort(got)
	got = slices.Compact(got)
	want := []int64{at("49h10m"), at("3h20m"), at("30m10s"), at("5m"), at("4m"), at("1m")}
	slices.Sort(want)
	// The newest of each minute, hour and day includes versions that a
	// finer rule keeps too; what matters is the set.
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("version %s ago was not kept", now.Sub(time.Unix(0, w)))
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("version %s ago was kept", now.Sub(time.Unix(0, g)))
		}
	}
}

func TestParseSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "36h": 36 * time.Hour, "90m": 90 * time.Minute,
		"7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1y": 365 * 24 * time.Hour} {
		got, err := ParseSpan(in)
		if err != nil || time.Duration(got) != want {
			t.Errorf("ParseSpan(%q) = %v, %v; want %v", in, time.Duration(got), err, want)
		}
		if again, err := ParseSpan(got.String()); err != nil || again != got {
			t.Errorf("%q prints as %q, which parses as %v, %v", in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "x", "-1h", "1x", "3 days"} {
		if _, err := ParseSpan(bad); err == nil {
			t.Errorf("ParseSpan(%q) took it", bad)
		}
	}
}
