package catalog

import (
	"errors"
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
