package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/node/nodetest"
)

func TestMain(m *testing.M) { nodetest.Main(m) }

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.run, scenarios) || c.pullSize != 256<<20 || c.fanoutSize != 100<<20 ||
		c.fanoutRate != 200e6 || c.clients != 32 || c.fanoutClient != "node" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseFlags([]string{"-run", "raft, pull,raft", "-fanout-rate", "1gbit", "-pull-size", "1MiB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.run, []string{"raft", "pull"}) || c.fanoutRate != 1e9 || c.pullSize != 1<<20 {
		t.Errorf("parsed: run %v rate %v size %v", c.run, c.fanoutRate, c.pullSize)
	}
	for _, bad := range [][]string{
		{"-run", "pull,bogus"},
		{"-run", ""},
		{"-fanout-rate", "fast"},
		{"-fanout-rate", "0mbit"},
		{"-fanout-client", "elsewhere"},
		{"-pull-size", "8B"},
		{"-clients", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestRates(t *testing.T) {
	for in, want := range map[string]bitRate{"200mbit": 200e6, "1Gbit": 1e9, "500kbit": 500e3, "1234bit": 1234} {
		var r bitRate
		if err := r.Set(in); err != nil || r != want {
			t.Errorf("bitRate %q = %d, %v; want %d", in, r, err, want)
		}
	}
	if s := bitRate(200e6).String(); s != "200mbit" {
		t.Errorf("String = %q", s)
	}
	if got := bitRate(200e6).bytesPerSecond(); got != 25e6 {
		t.Errorf("bytesPerSecond = %v", got)
	}
	if got := tbfBurst(200e6); got != 250000 {
		t.Errorf("tbfBurst(200mbit) = %d, want 10ms worth", got)
	}
	if got := tbfBurst(1e6); got != 64<<10 {
		t.Errorf("tbfBurst(1mbit) = %d, want the 64KiB floor", got)
	}
}

func TestParseTxBytes(t *testing.T) {
	tx := []byte(`[{"ifname":"eth0","stats64":{"rx":{"bytes":5},"tx":{"bytes":123456789}}}]`)
	if n, err := parseTxBytes(tx); err != nil || n != 123456789 {
		t.Errorf("parseTxBytes = %d, %v", n, err)
	}
	if _, err := parseTxBytes([]byte(`[]`)); err == nil {
		t.Error("parseTxBytes(no link): no error")
	}
}

func TestStaleNamespaces(t *testing.T) {
	list := fmt.Sprintf("hmbench-111-n1 (id: 3)\nhmbench-111-br\nhmbench-222-n1 (id: 4)\nother-333-x\nhmbench-%d-n1\nhmbench-junk\n", os.Getpid())
	got := staleNamespaces(list, func(pid int) bool { return pid == 222 })
	want := []string{"hmbench-111-n1", "hmbench-111-br"}
	if !slices.Equal(got, want) {
		t.Errorf("stale = %q, want %q (live runs, this run and other names are kept)", got, want)
	}
}

func TestSaltGivesFreshDigests(t *testing.T) {
	l, err := newLayerFile(filepath.Join(t.TempDir(), "layer"), 64<<10, 7)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[digest.Digest]bool{}
	for r := range uint64(3) {
		d, err := l.salt(1, r)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(l.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 64<<10 || digest.FromBytes(b) != d {
			t.Fatalf("round %d: digest %s does not match the file (%d bytes)", r, d, len(b))
		}
		if seen[d] {
			t.Fatalf("round %d: digest %s repeats", r, d)
		}
		seen[d] = true
	}
}

func TestReportRenders(t *testing.T) {
	cfg, err := parseFlags([]string{"-pull-rounds", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	f := func(mibs float64) regclient.Fetch {
		return regclient.Fetch{Bytes: 256 << 20, Total: sec(256 / mibs), TTFB: 10 * time.Millisecond}
	}
	lat := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	r := benchReport{
		cfg: cfg, env: probeEnv(t.Context(), "/nonexistent", t.TempDir()), loadBefore: "1.00 1.00 1.00", loadAfter: "2.00 1.50 1.00",
		pull: &pullResult{
			size: 256 << 20, roleA: "leader", roleB: "follower",
			same: []regclient.Fetch{f(1000), f(800)}, cross: []regclient.Fetch{f(600), f(540)},
			sameCPUA: []time.Duration{sec(0.1), sec(0.1)}, sameCPUC: []time.Duration{sec(0.2), sec(0.2)},
			crossCPUA: []time.Duration{sec(0.5), sec(0.5)}, crossCPUB: []time.Duration{sec(0.25), sec(0.25)},
			crossCPUC: []time.Duration{sec(0.2), sec(0.2)},
		},
		raft: &raftResult{conc: 32, leader: regclient.PutRun{Lat: lat, Elapsed: sec(0.003)}, follower: regclient.PutRun{Lat: lat, Elapsed: sec(0.006)}},
		fanout: &fanoutResult{
			size: 100 << 20, rate: 200e6, client: "node",
			single: []time.Duration{sec(5), sec(5)}, fan: []time.Duration{sec(8), sec(9)},
			fanEach: [][]time.Duration{{sec(7), sec(8), sec(6)}, {sec(9), sec(8), sec(7)}},
			fanSent: [][]int64{{200 << 20, 50 << 20, 30 << 20, 20 << 20}, {100 << 20, 100 << 20, 50 << 20, 50 << 20}},
		},
	}
	var b strings.Builder
	r.render(&b)
	doc := r.document(b.String())
	for _, want := range []string{
		"| pull (MiB/s) | 900 | 570 | **0.63x** |",
		"Goal: cross-node at least 0.6x same-node (0.8x desired): met (0.63x).",
		"| CPU of A, the holder (s per GiB) | 0.40 | 2.00 | |",
		"| time to first byte (ms) | 10.00 | 10.00 | |",
		"| 2 | 800 | 540 |",
		"| manifest PUTs/s | 1000 | 500 |",
		"| PUT p99 (ms) | 4.00 | 4.00 |",
		"| **three at once / one** | **1.70x** |",
		"| the link's floor for one pull (size / rate) | 4.19 |",
		"Goal: three at once within 2x of one (one origin serving all three: ~3x): met (1.70x).",
		"node 1 (the only holder) sent a median 150 MiB on its link and nodes 2-4 together 150 MiB",
		"| 1 | 5.00 | 8.00 | 7.00 / 8.00 / 6.00 | 200 / 50 / 30 / 20 |",
		"Load average (1, 5, 15 min) before / after: 1.00 1.00 1.00 / 2.00 1.50 1.00",
		"[benchmarks.md](benchmarks.md)",
		"## Method",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
}

// TestClusterBenchmarks runs the loopback benchmarks at tiny sizes against
// the real binary: clusters form, blobs cross nodes, PUTs are counted.
func TestClusterBenchmarks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two 3-node clusters")
	}
	cfg, err := parseFlags([]string{"-hubmesh", nodetest.Binary(t), "-pull-size", "2MiB", "-pull-rounds", "2",
		"-pull-warmup", "0", "-manifests", "40", "-clients", "8"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pull, err := benchPull(t.Context(), cfg, dir, 42, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(pull.same) != 2 || len(pull.cross) != 2 {
		t.Fatalf("pull rounds: %d same, %d cross; want 2 each", len(pull.same), len(pull.cross))
	}
	for i, f := range append(pull.same, pull.cross...) {
		if f.Bytes != 2<<20 || f.Total <= 0 {
			t.Errorf("fetch %d = %+v", i, f)
		}
	}
	raft, err := benchRaft(t.Context(), cfg, dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if len(raft.leader.Lat) != 40 || len(raft.follower.Lat) != 40 || raft.leader.PerSecond() <= 0 {
		t.Errorf("raft: %d and %d PUTs timed", len(raft.leader.Lat), len(raft.follower.Lat))
	}
}

// TestDialInNamespace checks that the harness reaches a listener that
// exists only inside a network namespace it created. It needs root and
// iproute2, and changes the host's namespace list for a moment, so it runs
// only with MESHBENCH_NETNS=1.
func TestDialInNamespace(t *testing.T) {
	if os.Getenv("MESHBENCH_NETNS") != "1" {
		t.Skip("set MESHBENCH_NETNS=1 (root, iproute2) to create network namespaces")
	}
	if err := checkNetnsTools(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := newLab(ctx, 1, 100e6, false, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.close(); err != nil {
			t.Error(err)
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), l.bridge) {
			t.Errorf("namespaces left behind:\n%s", out)
		}
	}()
	// A listener inside the node's namespace: a shell-free way is a tiny
	// HTTP server run by `ip netns exec`, but the harness's own binary is
	// a test binary here, so listen from a locked thread like dialIn does.
	ln, err := listenIn(l.nodes[0], nodeIP(0)+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "inside") })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatalf("%s reachable from the harness's own namespace; the test proves nothing", ln.Addr())
	}
	c := newClient(&node{base: "http://" + ln.Addr().String()}, l.nodes[0], 1)
	defer c.Close()
	resp, err := c.Get(ctx, c.Base(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "inside" {
		t.Errorf("got %q", b)
	}
}
