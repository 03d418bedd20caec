package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/report"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// benchReport renders the results of a run as markdown.
type benchReport struct {
	cfg      config
	env      report.Env
	targets  []*target
	prefault string // what runPrefault did
}

// render writes the summary table, the per-round table and the setup.
func (r benchReport) render(w io.Writer) {
	a, b := r.targets[0], r.targets[1]
	gib := float64(r.cfg.layers) * float64(r.cfg.layerSize) / (1 << 30)
	fmt.Fprintf(w, "| %d x %s image, median of %d rounds | %s | %s | %s / %s |\n",
		r.cfg.layers, r.cfg.layerSize, r.cfg.rounds, a.name, b.name, a.name, b.name)
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: |")
	row := func(label, unit string, f func(*result) float64) {
		x, y := f(&a.res), f(&b.res)
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", label, num(x, unit), num(y, unit), ratio(x, y))
	}
	row("push (MiB/s)", "", func(s *result) float64 { return stats.Median(s.push) })
	row("pull (MiB/s)", "", func(s *result) float64 { return stats.Median(s.pull) })
	row("server CPU per GiB pushed (s)", "s", func(s *result) float64 { return stats.Median(perGiB(s.pushCPU, gib)) })
	row("server CPU per GiB pulled (s)", "s", func(s *result) float64 { return stats.Median(perGiB(s.pullCPU, gib)) })
	if r.cfg.manifests > 0 {
		for _, m := range []struct {
			label string
			run   func(*result) regclient.PutRun
		}{
			{"sequential", func(s *result) regclient.PutRun { return s.seq }},
			{fmt.Sprintf("%d concurrent", r.cfg.manifestConc), func(s *result) regclient.PutRun { return s.conc }},
		} {
			row(fmt.Sprintf("manifest PUT p50, %s (ms)", m.label), "ms", func(s *result) float64 { return ms(stats.Percentile(m.run(s).Lat, 50)) })
			row(fmt.Sprintf("manifest PUT p99, %s (ms)", m.label), "ms", func(s *result) float64 { return ms(stats.Percentile(m.run(s).Lat, 99)) })
			row(fmt.Sprintf("manifest PUTs/s, %s", m.label), "", func(s *result) float64 {
				return m.run(s).PerSecond()
			})
		}
	}
	row("idle RSS (MiB)", "MiB", func(s *result) float64 { return stats.MiB(s.idleRSS) })
	row("peak RSS over the run (MiB)", "MiB", func(s *result) float64 { return stats.MiB(s.peakRSS) })
	fmt.Fprintf(w, "\nThe ratio column is %s / %s: above 1 is better for MiB/s and PUTs/s,\n"+
		"below 1 is better for latency, CPU and memory.\n", a.name, b.name)

	fmt.Fprintf(w, "\nMiB/s per round (push / pull):\n\n| round | %s | %s |\n| ---: | ---: | ---: |\n", a.name, b.name)
	for i := range r.cfg.rounds {
		fmt.Fprintf(w, "| %d | %.0f / %.0f | %.0f / %.0f |\n", i+1, a.res.push[i], a.res.pull[i], b.res.push[i], b.res.pull[i])
	}
	fmt.Fprintf(w, "\n- Date: %s\n", r.env.Date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- Machine: %s\n", r.env.Machine())
	fmt.Fprintf(w, "- Prefault: %s\n", r.prefault)
	for _, t := range r.targets {
		fmt.Fprintf(w, "- %s: `%s`\n", t.name, t.res.version)
	}
	fmt.Fprintf(w, "- Client: bench/registrybench (%s), flags `%s`\n", runtime.Version(), strings.Join(r.cfg.args, " "))
}

// document wraps the rendered results into docs/benchmarks.md.
func (r benchReport) document(results string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Benchmarks

hubmesh side by side with CNCF distribution v3.1.2, the reference registry. The
issue's goal: hubmesh at least 1.0x distribution for both push and pull.
Cluster figures (cross-node pulls, Raft manifest pushes, fan-out over shaped
links) are in [benchmarks-mesh.md](benchmarks-mesh.md), written by bench/meshbench.

`+"```"+`
make bench                                   # the figures below and benchmarks-mesh.md; rewrites both
make bench BENCHFLAGS='-rounds 9 -warmup 2'  # extra flags for bench/registrybench
go run ./bench/registrybench -h              # every flag
`+"```"+`

`+"`make bench`"+` builds bin/hubmesh, installs distribution into .tools/bin
(bench/install-distribution.sh, pinned, idempotent) and runs bench/registrybench.
Run it on a quiet machine: the two registries and the client share the CPUs.

## Method

- Both registries run as processes on 127.0.0.1 at the same time, data in one
  temporary directory on the same filesystem: hubmesh `+"`serve`"+` (one-node Raft,
  pebble, blob store) and distribution with its stock example configuration
  (filesystem driver, in-memory blob descriptor cache, delete enabled), both
  logging errors only. Distribution does not fsync blobs; hubmesh does.
  Authentication is on in hubmesh, as in every node: the client sends the
  administrator's Basic credentials on every request (the node caches a
  verified password for a minute); distribution runs without authentication.
- One client, plain net/http speaking the OCI API, identical for both. Push:
  for each layer a POST upload then one PUT streaming the file from disk,
  %d layers in flight like docker, then the config, then the manifest. Pull: GET
  the manifest, then the config and the layers %d at a time, each body read
  through SHA-256 and checked against its digest and size, then discarded.
- Image: %d layers of %v of random bytes (incompressible, "uncompressed" layer
  media type), generated once; each round rewrites the first 16 bytes of every
  layer so that no registry has seen the blobs before. MiB/s counts layer bytes
  over the wall time of the whole push (first POST to manifest 201) or pull
  (manifest GET to the last verified byte).
- Rounds alternate between the registries (%s, %s, %s, ...):
  %d warm-up round(s) each, then %d measured rounds each; the table shows the
  median. Before each
  push and each pull the harness calls sync(2), untimed, so that one registry's
  deferred writeback does not land in the other's timing.
- Before the registries start, the harness touches and frees about as much
  memory as the run will write (`+"`-prefault`"+`). On these VMs the host backs
  guest memory lazily: writing into never-used page cache runs at ~230 MB/s
  instead of ~2 GB/s, which would make pushes measure the host, and unevenly.
- Server CPU: user+system time of the registry process (/proc/PID/stat) during
  the push or pull, per GiB of layers.
- Manifest PUT latency: a small config and layer are pushed first, then %d
  distinct small OCI manifests (an annotation differs) are PUT under their own
  tags, once one at a time and once %d at a time; p50/p99 of the per-request
  time as the client sees it.
- Idle RSS: VmRSS (/proc/PID/status) right after the registry answered its
  readiness probe (hubmesh /readyz, then GET /v2/; distribution GET /v2/).
  Peak RSS: VmHWM at the end of the run.

## Results

`, r.cfg.conc, r.cfg.conc, r.cfg.layers, r.cfg.layerSize,
		r.targets[0].name, r.targets[1].name, r.targets[0].name, r.cfg.warmup, r.cfg.rounds,
		r.cfg.manifests, r.cfg.manifestConc)
	b.WriteString(results)
	return b.String()
}

func perGiB(ds []time.Duration, gib float64) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds() / gib
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// num formats a figure with precision that suits its size.
func num(x float64, unit string) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "n/a"
	case unit == "ms" || unit == "s" || x < 10:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case x < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

func ratio(x, y float64) string {
	if y == 0 || math.IsNaN(x) || math.IsNaN(y) {
		return "n/a"
	}
	return strconv.FormatFloat(x/y, 'f', 2, 64) + "x"
}
