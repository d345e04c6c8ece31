package catalog

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	at := func(s string) int64 {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UnixNano()
	}
	for _, c := range []struct {
		in   string
		want When
	}{
		{"latest", When{Kind: WhenLatest}},
		{"2026-11-25T14:03:10Z", When{Kind: WhenTime, Time: at("2026-11-25T14:03:10Z")}},
		{"2026-11-25T15:03:10.250+01:00", When{Kind: WhenTime, Time: at("2026-11-25T14:03:10.25Z")}},
		{"20261125T140310Z", When{Kind: WhenTime, Time: at("2026-11-25T14:03:10Z")}},
		{"20261125T140310.250Z", When{Kind: WhenTime, Time: at("2026-11-25T14:03:10.25Z")}},
		{"1764079390", When{Kind: WhenTime, Time: 1764079390e9}},
		{"1764079390.25", When{Kind: WhenTime, Time: 1764079390e9 + 250e6}},
		{"1764079390.000000001", When{Kind: WhenTime, Time: 1764079390e9 + 1}},
		{"-90s", When{Kind: WhenTime, Time: at("2026-11-25T14:58:30Z")}},
		{"-2h30m", When{Kind: WhenTime, Time: at("2026-11-25T12:30:00Z")}},
		{"before-patch", When{Kind: WhenLabel, Label: "before-patch"}},
		{"v1.2_x", When{Kind: WhenLabel, Label: "v1.2_x"}},
	} {
		got, err := ParseWhen(c.in, now)
		if err != nil || got != c.want {
			t.Errorf("ParseWhen(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-", "-x", "2026-13-45T00:00:00Z", "9bad", "a b", "x/y", "-5", "20261125T999999Z", "1.2.3", "é"} {
		if _, err := ParseWhen(bad, now); !errors.Is(err, ErrBadWhen) {
			t.Errorf("ParseWhen(%q) = %v, want ErrBadWhen", bad, err)
		}
	}
}

func TestSpecAndNames(t *testing.T) {
	now := time.Now()
	sp, err := ParseSpec("db01", now)
	if err != nil || !sp.Bare || sp.Volume != "db01" || sp.When.Kind != WhenLatest {
		t.Fatalf("ParseSpec(db01) = %+v, %v", sp, err)
	}
	sp, err = ParseSpec("db01@before", now)
	if err != nil || sp.Bare || sp.When.Label != "before" {
		t.Fatalf("ParseSpec(db01@before) = %+v, %v", sp, err)
	}
	for _, bad := range []string{"", "@x", "a/b@latest", "../x", "a@b@c"} {
		if _, err := ParseSpec(bad, now); err == nil {
			t.Errorf("ParseSpec(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"latest", "1abc", "20261125T140310Z", "", "a b"} {
		if err := CheckLabel(bad); err == nil {
			t.Errorf("CheckLabel(%q) accepted", bad)
		}
	}
}

// A time past what int64 nanoseconds hold is refused, saying the latest
// (or earliest) time that fits, never wrapped around.
func TestParseWhenBeyondTheClock(t *testing.T) {
	now := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	for _, c := range []struct{ in, want string }{
		{"2262-04-11T23:47:16.854775808Z", "latest time rewind can store is 2262-04-11T23:47:16.854775807Z"},
		{"2999-01-01T00:00:00Z", "latest time rewind can store is 2262-04-11T23:47:16.854775807Z"},
		{"29990101T000000Z", "latest time rewind can store"},
		{"22620411T234716.854775808Z", "latest time rewind can store"},
		{"9999999999", "latest time rewind can store"},
		{"9223372036.854775808", "latest time rewind can store"},
		{"1600-01-01T00:00:00Z", "earliest time rewind can store is 1677-09-21T00:12:43.145224192Z"},
	} {
		_, err := ParseWhen(c.in, now)
		if !errors.Is(err, ErrBadWhen) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseWhen(%q) = %v; want ErrBadWhen saying %q", c.in, err, c.want)
		}
	}
	for in, want := range map[string]int64{
		"2262-04-11T23:47:16.854775807Z": math.MaxInt64,
		"22620411T234716.854775807Z":     math.MaxInt64,
		"9223372036.854775807":           math.MaxInt64,
		"1677-09-21T00:12:43.145224192Z": math.MinInt64,
	} {
		got, err := ParseWhen(in, now)
		if err != nil || got.Kind != WhenTime || got.Time != want {
			t.Errorf("ParseWhen(%q) = %+v, %v; want %d", in, got, err, want)
		}
	}
}
