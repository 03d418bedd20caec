package stats

import (
	"testing"
	"time"
)

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		str  string
	}{
		{"128MiB", 128 << 20, "128MiB"},
		{"256MiB", 256 << 20, "256MiB"},
		{"1G", 1 << 30, "1GiB"},
		{"512KiB", 512 << 10, "512KiB"},
		{"4096", 4096, "4KiB"},
		{"1000B", 1000, "1000B"},
		{" 2 MiB", 2 << 20, "2MiB"},
		{" 2 KiB", 2048, "2KiB"},
	} {
		var b ByteSize
		if err := b.Set(tc.in); err != nil {
			t.Fatalf("Set(%q): %v", tc.in, err)
		}
		if int64(b) != tc.want || b.String() != tc.str {
			t.Errorf("Set(%q) = %d %q, want %d %q", tc.in, b, b, tc.want, tc.str)
		}
	}
	if s := ByteSize(100 << 20).String(); s != "100MiB" {
		t.Errorf("String = %q", s)
	}
	for _, bad := range []string{"", "MiB", "-1", "1.5MiB", "12XB", "99999999999GiB"} {
		var b ByteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) = %d, want an error", bad, b)
		}
	}
}

func TestMedianPercentile(t *testing.T) {
	if got := Median([]float64{5, 1, 3}); got != 3 {
		t.Errorf("median odd = %v", got)
	}
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	if m := MedianDur([]time.Duration{4, 1, 3, 2}); m != 2 {
		t.Errorf("MedianDur = %v", m)
	}
	if m := MedianDur(nil); m != 0 {
		t.Errorf("MedianDur of none = %v", m)
	}
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	if p50, p99, p100 := Percentile(ds, 50), Percentile(ds, 99), Percentile(ds, 100); p50 != 50*time.Millisecond ||
		p99 != 99*time.Millisecond || p100 != 100*time.Millisecond {
		t.Errorf("p50 %v p99 %v p100 %v", p50, p99, p100)
	}
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if p := Percentile(lat, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := Percentile(lat, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile of one = %v", got)
	}
	if p := Percentile(nil, 99); p != 0 {
		t.Errorf("p99 of none = %v", p)
	}
	if got := MiBps(3<<20, 2*time.Second); got != 1.5 {
		t.Errorf("MiBps = %v", got)
	}
}
