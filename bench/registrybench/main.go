// Command registrybench measures hubmesh side by side with CNCF distribution
// in one run: push and pull throughput of a large image in alternating
// rounds, manifest PUT latency, and memory. Both registries run as real
// processes on loopback with their data on the same filesystem, and are
// driven by the same OCI client (client.go, plain net/http).
//
// `make bench` runs it with the defaults and writes docs/benchmarks.md.
// Linux only: memory and CPU figures come from /proc.
package main

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digest algorithms for go-digest
	_ "crypto/sha512"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/report"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// config holds the flags.
type config struct {
	hubmesh      string
	distribution string
	aa           bool
	layers       int
	layerSize    stats.ByteSize
	rounds       int
	warmup       int
	conc         int
	prefault     prefaultFlag
	manifests    int
	manifestConc int
	workDir      string
	keep         bool
	out          string
	startTimeout time.Duration
	timeout      time.Duration
	args         []string // as given, for the report
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{layerSize: 128 << 20, prefault: prefaultFlag{auto: true}}
	fs := flag.NewFlagSet("registrybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: registrybench [flags]\n\n"+
			"Pushes and pulls the same image to hubmesh and CNCF distribution in alternating\n"+
			"rounds, then times manifest PUTs, and prints a markdown report.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.hubmesh, "hubmesh", "bin/hubmesh", "hubmesh binary")
	fs.StringVar(&c.distribution, "distribution", ".tools/bin/registry", "CNCF distribution binary (bench/install-distribution.sh)")
	fs.BoolVar(&c.aa, "aa", false, "A/A run: distribution in both columns, to see the harness's noise (hubmesh is not started)")
	fs.IntVar(&c.layers, "layers", 4, "layers per image")
	fs.Var(&c.layerSize, "layer-size", "size of each layer (B, KiB, MiB, GiB)")
	fs.IntVar(&c.rounds, "rounds", 5, "measured rounds per registry (the median is reported)")
	fs.IntVar(&c.warmup, "warmup", 1, "unmeasured rounds per registry before the measured ones")
	fs.IntVar(&c.conc, "concurrency", 4, "blobs in flight at once during push and pull")
	fs.IntVar(&c.manifests, "manifests", 2000, "manifest PUTs per latency run (0 skips them)")
	fs.IntVar(&c.manifestConc, "manifest-concurrency", 16, "concurrent PUTs in the second latency run")
	fs.Var(&c.prefault, "prefault", "touch and free this much memory before measuring, so the page cache the registries fill is not\nfresh VM memory: auto (what the run will write, plus a margin), 0 (off) or a size")
	fs.StringVar(&c.workDir, "workdir", "", "parent of the temporary directory for layers and registry data (default: the system temp dir)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory")
	fs.StringVar(&c.out, "out", "", "also write the report to this file (e.g. docs/benchmarks.md)")
	fs.DurationVar(&c.startTimeout, "start-timeout", time.Minute, "deadline for a registry to become ready")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "deadline for the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	for _, v := range []struct {
		name string
		n    int
		min  int
	}{
		{"layers", c.layers, 1}, {"rounds", c.rounds, 1}, {"warmup", c.warmup, 0},
		{"concurrency", c.conc, 1}, {"manifests", c.manifests, 0}, {"manifest-concurrency", c.manifestConc, 1},
	} {
		if v.n < v.min {
			errs = append(errs, fmt.Errorf("-%s %d: want at least %d", v.name, v.n, v.min))
		}
	}
	if c.layerSize < regclient.SaltLen {
		errs = append(errs, fmt.Errorf("-layer-size %s: want at least %d bytes", c.layerSize, regclient.SaltLen))
	}
	c.args = args
	return c, errors.Join(errs...)
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "registrybench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "registrybench:", err)
		os.Exit(1)
	}
}

// target is one column of the report: how to start the registry, and what
// was measured on it.
type target struct {
	name  string
	start func(ctx context.Context, ready time.Duration, name, bin, dir string) (*server, error)
	bin   string

	srv *server
	cl  *regclient.Client
	res result
}

// result is what was measured on one registry.
type result struct {
	version          string
	idleRSS, peakRSS int64
	push, pull       []float64       // MiB/s per measured round
	pushCPU, pullCPU []time.Duration // server CPU time per measured round
	seq, conc        regclient.PutRun
}

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "registrybench: "+format+"\n", a...) }
	targets := []*target{
		{name: "hubmesh", start: startHubmesh, bin: cfg.hubmesh},
		{name: "distribution", start: startDistribution, bin: cfg.distribution},
	}
	if cfg.aa {
		targets = []*target{
			{name: "distribution A", start: startDistribution, bin: cfg.distribution},
			{name: "distribution B", start: startDistribution, bin: cfg.distribution},
		}
	}
	for _, t := range targets {
		abs, err := filepath.Abs(t.bin)
		if err != nil {
			return err
		}
		if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s binary %s: not an executable file (make build; bench/install-distribution.sh)", t.name, abs)
		}
		t.bin = abs
	}

	dir, err := os.MkdirTemp(cfg.workDir, "registrybench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("keeping %s", dir)
	} else {
		defer func() {
			if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}
	env := report.ProbeEnv(dir)

	var nonceB [8]byte
	_, _ = rand.Read(nonceB[:])
	nonce := binary.LittleEndian.Uint64(nonceB[:])
	logf("generating %d x %s random layers in %s", cfg.layers, cfg.layerSize, dir)
	layerDir := filepath.Join(dir, "layers")
	if err := os.Mkdir(layerDir, 0o755); err != nil {
		return err
	}
	layers, err := generateLayers(layerDir, cfg.layers, int64(cfg.layerSize), nonce)
	if err != nil {
		return err
	}

	prefaulted, err := runPrefault(ctx, cfg, len(targets))
	if err != nil {
		return err
	}
	logf("prefault: %s", prefaulted)

	for i, t := range targets {
		t.srv, err = t.start(ctx, cfg.startTimeout, t.name, t.bin, filepath.Join(dir, fmt.Sprintf("registry-%d", i)))
		if err != nil {
			return err
		}
		defer func() {
			if serr := t.srv.Stop(); serr != nil && err == nil {
				err = serr
			}
		}()
		// Ready, and one GET /v2/ answered: this is the idle footprint.
		if t.res.idleRSS, err = t.srv.Status("VmRSS"); err != nil {
			return err
		}
		t.res.version = t.srv.version
		t.cl = regclient.NewClient(t.srv.base, t.srv.transport(regclient.NewTransport(64)), cfg.conc)
		defer t.cl.Close()
		logf("%s (%s) ready at %s, idle RSS %.1f MiB", t.name, t.res.version, t.srv.base, stats.MiB(t.res.idleRSS))
	}

	total := cfg.warmup + cfg.rounds
	for r := range total {
		blobs, err := layers.salt(nonce, uint64(r))
		if err != nil {
			return err
		}
		img, err := regclient.NewImage(blobs, nil)
		if err != nil {
			return err
		}
		measured := r >= cfg.warmup
		for _, t := range targets {
			push, pull, pushCPU, pullCPU, err := round(ctx, t, img, fmt.Sprintf("r%d", r))
			if err != nil {
				return err
			}
			label := "warm-up"
			if measured {
				label = fmt.Sprintf("round %d/%d", r-cfg.warmup+1, cfg.rounds)
				t.res.push = append(t.res.push, push)
				t.res.pull = append(t.res.pull, pull)
				t.res.pushCPU = append(t.res.pushCPU, pushCPU)
				t.res.pullCPU = append(t.res.pullCPU, pullCPU)
			}
			logf("%s %s: push %.0f MiB/s, pull %.0f MiB/s", label, t.name, push, pull)
		}
	}

	if cfg.manifests > 0 {
		for _, t := range targets {
			for _, m := range []struct {
				conc int
				out  *regclient.PutRun
			}{{1, &t.res.seq}, {cfg.manifestConc, &t.res.conc}} {
				syscall.Sync()
				repo := fmt.Sprintf("bench/manifests-c%d", m.conc)
				if *m.out, err = manifestPuts(ctx, t.cl, repo, cfg.manifests, m.conc); err != nil {
					return fmt.Errorf("%s: manifest PUTs: %w", t.name, errors.Join(err, t.srv.Alive()))
				}
				logf("%s: %d manifest PUTs, %d at a time: p50 %s p99 %s", t.name, cfg.manifests, m.conc,
					stats.Percentile(m.out.Lat, 50), stats.Percentile(m.out.Lat, 99))
			}
		}
	}
	for _, t := range targets {
		if t.res.peakRSS, err = t.srv.Status("VmHWM"); err != nil {
			return err
		}
	}

	rep := benchReport{cfg: cfg, env: env, targets: targets, prefault: prefaulted}
	var md strings.Builder
	rep.render(&md)
	if _, err := io.WriteString(stdout, md.String()); err != nil {
		return err
	}
	if cfg.out != "" {
		if err := report.WriteAtomic(cfg.out, []byte(rep.document(md.String()))); err != nil {
			return err
		}
		logf("wrote %s", cfg.out)
	}
	return nil
}

// runPrefault touches and frees memory as -prefault says (see
// proc.Prefault)
// and describes what it did.
func runPrefault(ctx context.Context, cfg config, targets int) (string, error) {
	size := int64(cfg.prefault.size)
	if cfg.prefault.auto {
		avail, err := proc.MemAvailable()
		if err != nil {
			return "", fmt.Errorf("prefault: %w", err)
		}
		writes := int64(cfg.warmup+cfg.rounds) * int64(targets) * int64(cfg.layers) * int64(cfg.layerSize)
		size = proc.PrefaultSize(writes, avail)
	}
	if size <= 0 {
		return "off", nil
	}
	d, err := proc.Prefault(ctx, size)
	if err != nil {
		return "", err
	}
	// A rate of a few hundred MiB/s means the VM's memory was fresh.
	return fmt.Sprintf("%.1f GiB touched and freed at %.0f MiB/s", float64(size)/(1<<30), stats.MiB(size)/d.Seconds()), nil
}

// round pushes img to t under a fresh tag, then pulls it back, and returns
// the throughput of each in MiB/s of layer data and the server CPU each
// used. Dirty pages are flushed before each step, untimed, so that one
// registry's deferred writeback does not land in another's timing.
func round(ctx context.Context, t *target, img *regclient.Image, tag string) (push, pull float64, pushCPU, pullCPU time.Duration, err error) {
	var size int64
	for _, l := range img.Layers {
		size += l.Desc.Size
	}
	const repo = "bench/image"
	fail := func(what string, err error) error {
		return fmt.Errorf("%s: %s %s:%s: %w", t.name, what, repo, tag, errors.Join(err, t.srv.Alive()))
	}

	syscall.Sync()
	cpu0, err := t.srv.CPU()
	if err != nil {
		return 0, 0, 0, 0, err
	}
	start := time.Now()
	if err := t.cl.Push(ctx, repo, tag, img); err != nil {
		return 0, 0, 0, 0, fail("push", err)
	}
	push = stats.MiB(size) / time.Since(start).Seconds()
	cpu1, err := t.srv.CPU()
	if err != nil {
		return 0, 0, 0, 0, err
	}

	syscall.Sync()
	cpu2, err := t.srv.CPU()
	if err != nil {
		return 0, 0, 0, 0, err
	}
	start = time.Now()
	n, err := t.cl.Pull(ctx, repo, tag, img.Digest)
	if err != nil {
		return 0, 0, 0, 0, fail("pull", err)
	}
	pull = stats.MiB(n) / time.Since(start).Seconds()
	cpu3, err := t.srv.CPU()
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return push, pull, cpu1 - cpu0, cpu3 - cpu2, nil
}

// manifestPuts pushes a small config and layer to repo, then PUTs n
// distinct small manifests that reference them, each under its own tag,
// conc at a time, and times every PUT. The manifests are built before the
// clock starts.
func manifestPuts(ctx context.Context, cl *regclient.Client, repo string, n, conc int) (regclient.PutRun, error) {
	ms, err := cl.SmallManifests(ctx, repo, "", n)
	if err != nil {
		return regclient.PutRun{}, err
	}
	return cl.ManifestPuts(ctx, repo, "m", ms, conc)
}
