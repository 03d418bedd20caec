package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// bitRate is a link rate flag in tc's notation: "200mbit", "1gbit",
// "500kbit", "1000000bit" (decimal units, bits per second).
type bitRate int64

func (r bitRate) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if r != 0 && int64(r)%u.mult == 0 {
			return strconv.FormatInt(int64(r)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(r), 10) + "bit"
}

// Set parses a rate in tc's notation.
func (r *bitRate) Set(s string) error {
	num, mult := strings.ToLower(strings.TrimSpace(s)), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("bad rate %q: want a positive number with a unit bit, kbit, mbit or gbit", s)
	}
	*r = bitRate(n * mult)
	return nil
}

// bytesPerSecond is the rate in bytes per second.
func (r bitRate) bytesPerSecond() float64 { return float64(r) / 8 }

// layerFile is a file of random bytes, generated once and salted per round
// so that every round pushes a blob no node has seen.
type layerFile struct {
	path string
	size int64
}

// newLayerFile writes size random bytes to path.
func newLayerFile(path string, size int64, seed uint64) (*layerFile, error) {
	if size < regclient.SaltLen {
		return nil, fmt.Errorf("layer size %d: want at least %d bytes", size, regclient.SaltLen)
	}
	if err := regclient.WriteRandom(path, size, regclient.SeedBytes(seed, 0)); err != nil {
		return nil, err
	}
	return &layerFile{path: path, size: size}, nil
}

// salt rewrites the first regclient.SaltLen bytes with (a, b) and returns
// the layer's new digest.
func (l *layerFile) salt(a, b uint64) (digest.Digest, error) {
	head := regclient.SeedBytes(a, b)
	return regclient.RewriteHead(l.path, head[:regclient.SaltLen])
}

// prefault touches size bytes of fresh memory (proc.Prefault keeps every
// page mapped until the end, so the kernel cannot hand the same freed pages
// back) and returns the rate in MiB/s.
//
// Why: on a VM whose memory the host backs lazily (the machines this
// project runs on), the first use of a guest page faults on the host, and
// writing a file into never-used page cache runs at a fraction of the
// usual speed. The nodes write every pushed and every fetched blob, so a
// pull through a node that got fresh pages would measure the host.
func prefault(ctx context.Context, size int64) (float64, error) {
	d, err := proc.Prefault(ctx, size)
	if err != nil {
		return 0, err
	}
	return stats.MiBps(size, d), nil
}

// loadAvg returns the first three fields of /proc/loadavg, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
