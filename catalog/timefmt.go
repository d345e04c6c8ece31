package catalog

import (
	"encoding/json"
	"strconv"
	"time"
)

// Time is an instant in nanoseconds. Text output prints RFC 3339 UTC with
// the precision needed; JSON always carries the nanoseconds.
type Time int64

// String prints RFC 3339 UTC with as many fraction digits as needed.
func (t Time) String() string { return time.Unix(0, int64(t)).UTC().Format(time.RFC3339Nano) }

// Compact prints the compact UTC form (20261125T140310.25Z).
func (t Time) Compact() string {
	s := time.Unix(0, int64(t)).UTC().Format("20060102T150405.999999999")
	return s + "Z"
}

// MarshalJSON writes RFC 3339 UTC with all nine fraction digits, so
// scripts get the nanoseconds and can sort the strings.
func (t Time) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Unix(0, int64(t)).UTC().Format("2006-01-02T15:04:05.000000000Z07:00"))
}

// UnmarshalJSON reads what MarshalJSON writes, or a number of ns.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return err
		}
		*t = Time(n)
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	*t = Time(v.UnixNano())
	return nil
}
