// Command meshbench measures a hubmesh cluster: a blob pulled through a
// node that does not hold it against one pulled where it is stored, Raft
// manifest pushes with many concurrent clients, and the fan-out of one
// layer to three nodes at once over links shaped with tc in network
// namespaces. Every node is a real `hubmesh serve` process; clusters are
// formed with `hubmesh cluster join-token` and `serve --join`.
//
// `make bench` runs it with the defaults and writes docs/benchmarks-mesh.md.
// Linux only; the fan-out needs root and iproute2 (ip, tc).
package main

import (
	"context"
	"crypto/rand"
	_ "crypto/sha256" // digest algorithms for go-digest
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/report"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// scenarios are the benchmarks in the order they run.
var scenarios = []string{"pull", "raft", "fanout"}

// config holds the flags.
type config struct {
	hubmesh      string
	run          []string // scenarios to run
	pullSize     stats.ByteSize
	pullRounds   int
	pullWarmup   int
	manifests    int
	clients      int
	fanoutSize   stats.ByteSize
	fanoutRate   bitRate
	fanoutRounds int
	fanoutWarmup bool
	fanoutClient string // node or bridge
	prefault     bool
	workDir      string
	keep         bool
	out          string
	startTimeout time.Duration
	timeout      time.Duration
	args         []string // as given, for the report
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{pullSize: 256 << 20, fanoutSize: 100 << 20, fanoutRate: 200e6}
	fs := flag.NewFlagSet("meshbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: meshbench [flags]\n\n"+
			"Runs hubmesh clusters of real processes and measures cross-node pulls, Raft manifest\n"+
			"pushes and the fan-out of a layer over shaped links; prints a markdown report.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var runList string
	fs.StringVar(&c.hubmesh, "hubmesh", "bin/hubmesh", "hubmesh binary")
	fs.StringVar(&runList, "run", strings.Join(scenarios, ","), "benchmarks to run, comma separated: "+strings.Join(scenarios, ", "))
	fs.Var(&c.pullSize, "pull-size", "size of the blob of the cross-node pull (B, KiB, MiB, GiB)")
	fs.IntVar(&c.pullRounds, "pull-rounds", 5, "measured rounds of the cross-node pull (the median is reported)")
	fs.IntVar(&c.pullWarmup, "pull-warmup", 1, "unmeasured rounds before them")
	fs.IntVar(&c.manifests, "manifests", 2000, "manifest PUTs through the leader, and again through a follower")
	fs.IntVar(&c.clients, "clients", 32, "concurrent clients of the manifest PUTs")
	fs.Var(&c.fanoutSize, "fanout-size", "size of the fan-out layer")
	fs.Var(&c.fanoutRate, "fanout-rate", "rate of each node's link, each way, in tc notation (kbit, mbit, gbit)")
	fs.IntVar(&c.fanoutRounds, "fanout-rounds", 3, "measured fan-out rounds (each: one single pull and one triple pull)")
	fs.BoolVar(&c.fanoutWarmup, "fanout-warmup", true, "one unmeasured single pull before the fan-out rounds")
	fs.StringVar(&c.fanoutClient, "fanout-client", "node", "where the fan-out clients run: node (in the node's namespace, off the shaped link, like a\nclient next to its registry) or bridge (one namespace on the bridge, unshaped: blobs reach it over the nodes' links)")
	fs.BoolVar(&c.prefault, "prefault", true, "touch and free about as much memory as the nodes will write, first (see prefault in util.go)")
	fs.StringVar(&c.workDir, "workdir", "", "parent of the temporary directory for layers and node data (default: the system temp dir)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (node logs are in it)")
	fs.StringVar(&c.out, "out", "", "also write the report to this file (e.g. docs/benchmarks-mesh.md)")
	fs.DurationVar(&c.startTimeout, "start-timeout", time.Minute, "deadline for a node to become ready and for a cluster to form")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "deadline for the whole run")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	for _, s := range strings.Split(runList, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
		case !slices.Contains(scenarios, s):
			errs = append(errs, fmt.Errorf("-run: unknown benchmark %q (want %s)", s, strings.Join(scenarios, ", ")))
		case !slices.Contains(c.run, s):
			c.run = append(c.run, s)
		}
	}
	if len(c.run) == 0 {
		errs = append(errs, errors.New("-run: no benchmark"))
	}
	for _, v := range []struct {
		name   string
		n, min int
	}{
		{"pull-rounds", c.pullRounds, 1}, {"pull-warmup", c.pullWarmup, 0}, {"manifests", c.manifests, 1},
		{"clients", c.clients, 1}, {"fanout-rounds", c.fanoutRounds, 1},
	} {
		if v.n < v.min {
			errs = append(errs, fmt.Errorf("-%s %d: want at least %d", v.name, v.n, v.min))
		}
	}
	for _, v := range []struct {
		name string
		b    stats.ByteSize
	}{{"pull-size", c.pullSize}, {"fanout-size", c.fanoutSize}} {
		if v.b < regclient.SaltLen {
			errs = append(errs, fmt.Errorf("-%s %s: want at least %d bytes", v.name, v.b, regclient.SaltLen))
		}
	}
	if c.fanoutClient != "node" && c.fanoutClient != "bridge" {
		errs = append(errs, fmt.Errorf("-fanout-client %q: want node or bridge", c.fanoutClient))
	}
	c.args = args
	return c, errors.Join(errs...)
}

func (c config) runs(s string) bool { return slices.Contains(c.run, s) }

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "meshbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "meshbench: "+format+"\n", a...) }
	abs, err := filepath.Abs(cfg.hubmesh)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("hubmesh binary %s: not an executable file (make build)", abs)
	}
	cfg.hubmesh = abs
	if cfg.runs("fanout") {
		if err := checkNetnsTools(); err != nil {
			return fmt.Errorf("fan-out: %w (or leave it out: -run pull,raft)", err)
		}
	}

	dir, err := os.MkdirTemp(cfg.workDir, "meshbench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		logf("keeping %s", dir)
	} else {
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	}
	rep := benchReport{cfg: cfg, env: probeEnv(ctx, cfg.hubmesh, dir)}
	var nb [8]byte
	_, _ = rand.Read(nb[:])
	nonce := binary.LittleEndian.Uint64(nb[:])

	if cfg.prefault {
		// What the nodes write: each pull round stores the blob on A
		// and B, each fan-out round on up to four nodes.
		var writes int64
		if cfg.runs("pull") {
			writes += int64(cfg.pullWarmup+cfg.pullRounds) * 2 * int64(cfg.pullSize)
		}
		if cfg.runs("fanout") {
			writes += int64(2*cfg.fanoutRounds+1) * 4 * int64(cfg.fanoutSize)
		}
		avail, err := proc.MemAvailable()
		if err != nil {
			return err
		}
		size := proc.PrefaultSize(writes, avail)
		rate, err := prefault(ctx, size)
		if err != nil {
			return err
		}
		rep.prefault = fmt.Sprintf("%.1f GiB touched and freed at %.0f MiB/s", float64(size)/(1<<30), rate)
		logf("prefault: %s", rep.prefault)
	}

	rep.loadBefore = loadAvg()
	if cfg.runs("pull") {
		if rep.pull, err = benchPull(ctx, cfg, dir, nonce, logf); err != nil {
			return err
		}
	}
	if cfg.runs("raft") {
		if rep.raft, err = benchRaft(ctx, cfg, dir, logf); err != nil {
			return err
		}
	}
	if cfg.runs("fanout") {
		if rep.fanout, err = benchFanout(ctx, cfg, dir, nonce, logf); err != nil {
			return err
		}
	}
	rep.loadAfter = loadAvg()

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
