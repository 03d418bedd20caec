package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// byteSize is a size flag: a number with an optional binary unit.
type byteSize int64

var units = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}

func (b byteSize) String() string {
	for _, u := range units[:3] {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Set parses "256MiB", "512KiB", "1G", "4096".
func (b *byteSize) Set(s string) error {
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
	*b = byteSize(n * mult)
	return nil
}

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

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// mibps is n bytes over d in MiB/s.
func mibps(n int64, d time.Duration) float64 { return mib(n) / d.Seconds() }

// median returns the median of xs (the mean of the middle two for an even
// count), or NaN for none.
func median(xs []float64) float64 {
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

// medianDur is median for durations.
func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	m := median(xs)
	if math.IsNaN(m) {
		return 0
	}
	return time.Duration(m)
}

// percentile returns the nearest-rank p-th percentile of ds (0 < p <= 100),
// or 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// saltLen is the number of leading bytes of a layer file that salt
// rewrites, so that every round pushes a blob no node has seen.
const saltLen = 16

// layerFile is a file of random bytes, generated once and salted per round.
type layerFile struct {
	path string
	size int64
}

// newLayerFile writes size random bytes to path.
func newLayerFile(path string, size int64, seed uint64) (*layerFile, error) {
	if size < saltLen {
		return nil, fmt.Errorf("layer size %d: want at least %d bytes", size, saltLen)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8(s), size); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &layerFile{path: path, size: size}, nil
}

// salt rewrites the first saltLen bytes with (a, b) and returns the
// layer's new digest.
func (l *layerFile) salt(a, b uint64) (digest.Digest, error) {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var head [saltLen]byte
	binary.LittleEndian.PutUint64(head[0:], a)
	binary.LittleEndian.PutUint64(head[8:], b)
	if _, err := f.WriteAt(head[:], 0); err != nil {
		return "", fmt.Errorf("salt %s: %w", l.path, err)
	}
	dg := digest.SHA256.Digester()
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(dg.Hash(), io.NewSectionReader(f, 0, l.size), buf); err != nil {
		return "", fmt.Errorf("hash %s: %w", l.path, err)
	}
	return dg.Digest(), nil
}

// prefault maps size bytes of anonymous memory, writes one byte to every
// page and unmaps it again, and returns the rate in MiB/s.
//
// Why: on a VM whose memory the host backs lazily (the machines this
// project runs on), the first use of a guest page faults on the host, and
// writing a file into never-used page cache runs at a fraction of the
// usual speed. The nodes write every pushed and every fetched blob, so a
// pull through a node that got fresh pages would measure the host. See
// bench/registrybench/prefault.go, which measured it.
func prefault(ctx context.Context, size int64) (float64, error) {
	const chunk = 256 << 20
	start := time.Now()
	page := int64(os.Getpagesize())
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("prefault: %w", err)
		}
		n := min(chunk, (size-done+page-1)/page*page)
		b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return 0, fmt.Errorf("prefault: mmap after %d MiB: %w", done>>20, err)
		}
		for i := 0; i < len(b); i += int(page) {
			b[i] = 1
		}
		// Unmapped right away: the point is that the guest has touched
		// the pages once; it reuses them for the page cache.
		if err := syscall.Munmap(b); err != nil {
			return 0, fmt.Errorf("prefault: %w", err)
		}
		done += n
	}
	return mibps(size, time.Since(start)), nil
}

// memAvailable returns MemAvailable from /proc/meminfo in bytes.
func memAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return procField(b, "MemAvailable")
}

// procField finds "field:   N kB" in a /proc status-like text and returns
// it in bytes.
func procField(text []byte, field string) (int64, error) {
	for line := range strings.SplitSeq(string(text), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", field, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no field %s", field)
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

// writeAtomic writes b to path through a temporary file and a rename.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
