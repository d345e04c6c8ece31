package catalog

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

// TestActivity buckets versions imported at known instants, and agrees
// with Log on what each interval holds.
func TestActivity(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, off := range []time.Duration{0, 30 * time.Second, time.Minute, 5 * time.Minute} {
		data := bytes.Repeat([]byte{byte(i + 1)}, 4096*(i+1))
		if _, err := s.Import(ctx, ImportRequest{Volume: "v", Source: "test", Stream: bytes.NewReader(data), Size: int64(len(data)),
			At: base.Add(off).Format(time.RFC3339)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	log, err := s.Log(ctx, LogRequest{Volume: "v"})
	if err != nil || len(log) != 4 {
		t.Fatalf("log: %+v, %v", log, err)
	}
	a, err := s.Activity(ctx, ActivityRequest{Volume: "v", Buckets: 5})
	if err != nil {
		t.Fatal(err)
	}
	if a.From != Time(base.UnixNano()) || a.To != log[3].Time || a.Step != int64(time.Minute) || len(a.Buckets) != 5 || a.Versions != 4 {
		t.Fatalf("activity: from %s to %s step %d, %d buckets, %d versions", a.From, a.To, a.Step, len(a.Buckets), a.Versions)
	}
	want := []struct{ versions, bytes int64 }{
		{2, log[0].Bytes + log[1].Bytes}, {1, log[2].Bytes}, {0, 0}, {0, 0}, {1, log[3].Bytes},
	}
	for i, w := range want {
		b := a.Buckets[i]
		if b.Start != Time(base.Add(time.Duration(i)*time.Minute).UnixNano()) || b.Versions != w.versions || b.Bytes != w.bytes {
			t.Errorf("bucket %d: %+v, want %d versions, %d bytes", i, b, w.versions, w.bytes)
		}
	}

	// A range in the middle, by WHEN, with the default bucket count.
	a, err = s.Activity(ctx, ActivityRequest{Volume: "v", Since: base.Add(20 * time.Second).Format(time.RFC3339), Until: base.Add(90 * time.Second).Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}
	if a.Versions != 2 || len(a.Buckets) != DefaultActivityBuckets {
		t.Fatalf("a range: %d versions in %d buckets, want 2 in %d", a.Versions, len(a.Buckets), DefaultActivityBuckets)
	}

	// A volume of one version: one bucket.
	if a, err := s.Activity(ctx, ActivityRequest{Volume: "v", Since: "latest"}); err != nil || len(a.Buckets) != 1 || a.Versions != 1 {
		t.Fatalf("one instant: %+v, %v", a, err)
	}
	for _, bad := range []ActivityRequest{
		{Volume: "v", Buckets: MaxActivityBuckets + 1},
		{Volume: "v", Buckets: -1},
		{Volume: "v", Since: "not a time"},
		{Volume: "v", Since: base.Add(time.Hour).Format(time.RFC3339), Until: base.Format(time.RFC3339)},
	} {
		if _, err := s.Activity(ctx, bad); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrBadWhen) {
			t.Errorf("%+v: %v, want an invalid request", bad, err)
		}
	}
	if _, err := s.Activity(ctx, ActivityRequest{Volume: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing volume: %v", err)
	}
}

// TestLogLimit keeps the newest N versions of the range, oldest first.
func TestLogLimit(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 7 {
		data := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if _, err := s.Import(ctx, ImportRequest{Volume: "v", Source: "test", Stream: bytes.NewReader(data), Size: 4096,
			At: base.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.Log(ctx, LogRequest{Volume: "v"})
	if err != nil || len(all) != 7 {
		t.Fatalf("log: %d, %v", len(all), err)
	}
	for _, limit := range []int{1, 3, 7, 10} {
		got, err := s.Log(ctx, LogRequest{Volume: "v", Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		want := all[max(0, 7-limit):]
		if len(got) != len(want) {
			t.Fatalf("limit %d: %d versions", limit, len(got))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("limit %d: version %d is %+v, want %+v", limit, i, got[i], want[i])
			}
		}
	}
	if _, err := s.Log(ctx, LogRequest{Volume: "v", Limit: -1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limit -1: %v", err)
	}
}
