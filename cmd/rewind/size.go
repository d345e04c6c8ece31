package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a byte count given as 512, 64KiB, 10GiB or 1.5TB.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1}, {"", 1},
}

// ParseSize parses a size with an optional unit.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok || num == "" {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			break
		}
		v := f * u.mult
		if v > math.MaxInt64/2 {
			break
		}
		return int64(v), nil
	}
	return 0, fmt.Errorf("bad size %q: use a number with an optional unit, like 512, 64KiB, 10GiB or 1.5TB", s)
}

// UnmarshalText lets kong parse sizes.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	*s = Size(v)
	return err
}

// Rate is bytes per second, given as 100MiB/s.
type Rate int64

// UnmarshalText lets kong parse rates.
func (r *Rate) UnmarshalText(b []byte) error {
	s, _ := strings.CutSuffix(string(b), "/s")
	v, err := ParseSize(s)
	if err != nil {
		return fmt.Errorf("bad rate %q: use a size per second, like 100MiB/s", string(b))
	}
	*r = Rate(v)
	return nil
}

// human prints a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
