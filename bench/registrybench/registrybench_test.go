package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/report"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-layer-size", "8MiB", "-rounds", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.layerSize != 8<<20 || c.rounds != 3 || c.layers != 4 || c.manifests != 2000 {
		t.Errorf("got %+v", c)
	}
	_, err = parseFlags([]string{"-rounds", "0", "-layer-size", "8", "-concurrency", "0", "extra"}, io.Discard)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"-rounds 0", "-layer-size 8B", "-concurrency 0", `"extra"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSaltGivesFreshDigests(t *testing.T) {
	dir := t.TempDir()
	ls, err := generateLayers(dir, 3, 4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[digest.Digest]bool{}
	for round := range uint64(2) {
		blobs, err := ls.salt(7, round)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blobs {
			data, err := os.ReadFile(b.Path)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(data)) != b.Desc.Size || digest.FromBytes(data) != b.Desc.Digest {
				t.Errorf("%s: descriptor %v does not match the file", filepath.Base(b.Path), b.Desc)
			}
			if seen[b.Desc.Digest] {
				t.Errorf("digest %s repeats across layers or rounds", b.Desc.Digest)
			}
			seen[b.Desc.Digest] = true
		}
	}
}

func TestReportRenders(t *testing.T) {
	cfg, err := parseFlags([]string{"-rounds", "2", "-manifests", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, push float64) *target {
		lat := []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
		return &target{name: name, res: result{
			version: name + " 1.0", idleRSS: 30 << 20, peakRSS: 90 << 20,
			push: []float64{push, push + 10}, pull: []float64{900, 1000},
			pushCPU: []time.Duration{time.Second, time.Second}, pullCPU: []time.Duration{time.Second, time.Second},
			seq:  regclient.PutRun{Lat: lat, Elapsed: 6 * time.Millisecond},
			conc: regclient.PutRun{Lat: lat, Elapsed: 3 * time.Millisecond},
		}}
	}
	r := benchReport{cfg: cfg, env: report.ProbeEnv(t.TempDir()), targets: []*target{mk("hubmesh", 600), mk("distribution", 500)}}
	var b strings.Builder
	r.render(&b)
	doc := r.document(b.String())
	for _, want := range []string{
		"| push (MiB/s) | 605 | 505 | 1.20x |",
		"| pull (MiB/s) | 950 | 950 | 1.00x |",
		"| manifest PUT p50, sequential (ms) | 2.00 | 2.00 | 1.00x |",
		"| manifest PUTs/s, 16 concurrent | 1000 | 1000 | 1.00x |",
		"| idle RSS (MiB) | 30.0 | 30.0 | 1.00x |",
		"| 2 | 610 / 1000 | 510 / 1000 |",
		"make bench",
		"[benchmarks-mesh.md](benchmarks-mesh.md)",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
}

func TestPrefaultFlag(t *testing.T) {
	for in, want := range map[string]string{"auto": "auto", "0": "0B", "3GiB": "3GiB"} {
		var p prefaultFlag
		if err := p.Set(in); err != nil || p.String() != want {
			t.Errorf("Set(%q): %q, %v; want %q", in, p.String(), err, want)
		}
	}
	var p prefaultFlag
	if err := p.Set("lots"); err == nil {
		t.Errorf("Set(lots): %q, want an error", p.String())
	}
}
