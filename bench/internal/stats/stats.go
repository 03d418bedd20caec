// Package stats holds the summary statistics and units the benchmark
// harnesses report in: medians, nearest-rank percentiles, MiB, and the
// byte-size flag. It imports nothing of the harnesses.
package stats

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ByteSize is a size flag: a number with an optional binary unit.
type ByteSize int64

var units = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}

// String is the size in the largest binary unit that divides it evenly.
func (b ByteSize) String() string {
	for _, u := range units[:3] {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Set parses "128MiB", "512KiB", "1G", "4096".
func (b *ByteSize) Set(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("bad size %q: want a number with an optional unit B, KiB, MiB or GiB", s)
	}
	*b = ByteSize(n * mult)
	return nil
}

// MiB is n bytes in MiB.
func MiB(n int64) float64 { return float64(n) / (1 << 20) }

// MiBps is n bytes over d in MiB/s.
func MiBps(n int64, d time.Duration) float64 { return MiB(n) / d.Seconds() }

// Median returns the median of xs (the mean of the middle two for an even
// count), or NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MedianDur is Median for durations, with 0 for none.
func MedianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	m := Median(xs)
	if math.IsNaN(m) {
		return 0
	}
	return time.Duration(m)
}

// Percentile returns the nearest-rank p-th percentile of ds (0 < p <= 100),
// or 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}
