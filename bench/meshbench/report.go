package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
	"github.com/hubmesh/hubmesh/bench/internal/report"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// env describes the machine a run happened on, and the hubmesh binary.
type env struct {
	report.Env
	hubmesh string // first line of `hubmesh version`
}

func probeEnv(ctx context.Context, bin, dir string) env {
	return env{Env: report.ProbeEnv(dir), hubmesh: proc.VersionOf(ctx, bin, "version")}
}

// benchReport renders what a run measured.
type benchReport struct {
	cfg                   config
	env                   env
	prefault              string
	loadBefore, loadAfter string
	pull                  *pullResult
	raft                  *raftResult
	fanout                *fanoutResult
}

// perGiB is CPU time per GiB moved, in seconds.
func perGiB(cpu []time.Duration, size int64) float64 {
	return stats.MedianDur(cpu).Seconds() / (float64(size) / (1 << 30))
}

// verdict compares a measured ratio with the goal.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func (r benchReport) render(w io.Writer) {
	fmt.Fprintf(w, "## Results\n\n")
	if p := r.pull; p != nil {
		same, cross := make([]float64, len(p.same)), make([]float64, len(p.cross))
		var sameTTFB, crossTTFB []time.Duration
		sameStream, crossStream := make([]float64, len(p.same)), make([]float64, len(p.cross))
		for i := range p.same {
			same[i] = stats.MiBps(p.same[i].Bytes, p.same[i].Total)
			cross[i] = stats.MiBps(p.cross[i].Bytes, p.cross[i].Total)
			sameStream[i] = stats.MiBps(p.same[i].Bytes, p.same[i].Total-p.same[i].TTFB)
			crossStream[i] = stats.MiBps(p.cross[i].Bytes, p.cross[i].Total-p.cross[i].TTFB)
			sameTTFB = append(sameTTFB, p.same[i].TTFB)
			crossTTFB = append(crossTTFB, p.cross[i].TTFB)
		}
		ratio := stats.Median(cross) / stats.Median(same)
		fmt.Fprintf(w, "### Cross-node pull\n\n")
		fmt.Fprintf(w, "| %s blob, median of %d rounds | same-node (through A) | cross-node (through B) | cross / same |\n", stats.ByteSize(p.size), len(same))
		fmt.Fprintf(w, "| --- | ---: | ---: | ---: |\n")
		fmt.Fprintf(w, "| pull (MiB/s) | %.0f | %.0f | **%.2fx** |\n", stats.Median(same), stats.Median(cross), ratio)
		fmt.Fprintf(w, "| time to first byte (ms) | %s | %s | |\n", ms(stats.MedianDur(sameTTFB)), ms(stats.MedianDur(crossTTFB)))
		fmt.Fprintf(w, "| rate after the first byte (MiB/s) | %.0f | %.0f | %.2fx |\n", stats.Median(sameStream), stats.Median(crossStream),
			stats.Median(crossStream)/stats.Median(sameStream))
		fmt.Fprintf(w, "| CPU of A, the holder (s per GiB) | %.2f | %.2f | |\n", perGiB(p.sameCPUA, p.size), perGiB(p.crossCPUA, p.size))
		fmt.Fprintf(w, "| CPU of B, the node pulled through (s per GiB) | - | %.2f | |\n", perGiB(p.crossCPUB, p.size))
		fmt.Fprintf(w, "| CPU of the client (s per GiB) | %.2f | %.2f | |\n\n", perGiB(p.sameCPUC, p.size), perGiB(p.crossCPUC, p.size))
		fmt.Fprintf(w, "Goal: cross-node at least 0.6x same-node (0.8x desired): %s (%.2fx).\n", verdict(ratio >= 0.6), ratio)
		fmt.Fprintf(w, "A is the Raft %s, B a %s.\n\n", p.roleA, p.roleB)
		fmt.Fprintf(w, "| round | same-node MiB/s | cross-node MiB/s |\n| ---: | ---: | ---: |\n")
		for i := range same {
			fmt.Fprintf(w, "| %d | %.0f | %.0f |\n", i+1, same[i], cross[i])
		}
		fmt.Fprintln(w)
	}
	if t := r.raft; t != nil {
		fmt.Fprintf(w, "### Raft: manifest pushes\n\n")
		fmt.Fprintf(w, "| 3 nodes, %d concurrent clients, %d PUTs each way | through the leader | through a follower |\n", t.conc, len(t.leader.Lat))
		fmt.Fprintf(w, "| --- | ---: | ---: |\n")
		fmt.Fprintf(w, "| manifest PUTs/s | %.0f | %.0f |\n", t.leader.PerSecond(), t.follower.PerSecond())
		for _, p := range []float64{50, 99} {
			fmt.Fprintf(w, "| PUT p%.0f (ms) | %s | %s |\n", p, ms(stats.Percentile(t.leader.Lat, p)), ms(stats.Percentile(t.follower.Lat, p)))
		}
		fmt.Fprintf(w, "| PUT max (ms) | %s | %s |\n\n", ms(stats.Percentile(t.leader.Lat, 100)), ms(stats.Percentile(t.follower.Lat, 100)))
	}
	if f := r.fanout; f != nil {
		fan := stats.MedianDur(f.fan)
		one := stats.MedianDur(f.single)
		ratio := fan.Seconds() / one.Seconds()
		floor := time.Duration(float64(f.size) / f.rate.bytesPerSecond() * float64(time.Second))
		var origin, peers []float64
		for _, s := range f.fanSent {
			origin = append(origin, stats.MiB(s[0]))
			var p int64
			for _, v := range s[1:] {
				p += v
			}
			peers = append(peers, stats.MiB(p))
		}
		fmt.Fprintf(w, "### Fan-out over shaped links\n\n")
		fmt.Fprintf(w, "| %s layer, 4 nodes, links %s each way, median of %d rounds | seconds |\n", stats.ByteSize(f.size), f.rate, len(f.fan))
		fmt.Fprintf(w, "| --- | ---: |\n")
		fmt.Fprintf(w, "| one pull through one node | %.2f |\n", one.Seconds())
		fmt.Fprintf(w, "| three pulls at once (nodes 2, 3, 4), until the last is done | %.2f |\n", fan.Seconds())
		fmt.Fprintf(w, "| **three at once / one** | **%.2fx** |\n", ratio)
		fmt.Fprintf(w, "| the link's floor for one pull (size / rate) | %.2f |\n\n", floor.Seconds())
		fmt.Fprintf(w, "Goal: three at once within 2x of one (one origin serving all three: ~3x): %s (%.2fx).\n", verdict(ratio <= 2), ratio)
		fmt.Fprintf(w, "While the three pulls ran, node 1 (the only holder) sent a median %.0f MiB on its link and nodes 2-4 together %.0f MiB", stats.Median(origin), stats.Median(peers))
		if f.client == "bridge" {
			fmt.Fprintf(w, " (this counts what they sent to the clients, %.0f MiB)", 3*stats.MiB(f.size))
		}
		fmt.Fprintf(w, ". Clients ran %s.\n\n", map[string]string{
			"node":   "in each node's namespace, off the shaped link",
			"bridge": "in their own namespace on the bridge (unshaped), so every byte to them crossed a node's link",
		}[f.client])
		fmt.Fprintf(w, "| round | one pull (s) | three at once (s) | each of the three (s) | sent by node 1 / 2 / 3 / 4 (MiB) |\n| ---: | ---: | ---: | --- | --- |\n")
		for i := range f.fan {
			each := make([]string, len(f.fanEach[i]))
			for j, d := range f.fanEach[i] {
				each[j] = fmt.Sprintf("%.2f", d.Seconds())
			}
			fmt.Fprintf(w, "| %d | %.2f | %.2f | %s | %s |\n", i+1, f.single[i].Seconds(), f.fan[i].Seconds(),
				strings.Join(each, " / "), strings.Join(mibAll(f.fanSent[i]), " / "))
		}
		fmt.Fprintln(w)
	}
	e := r.env
	fmt.Fprintf(w, "- Date: %s\n", e.Date.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- Machine: %s\n", e.Machine())
	fmt.Fprintf(w, "- Load average (1, 5, 15 min) before / after: %s / %s\n", r.loadBefore, r.loadAfter)
	if r.prefault != "" {
		fmt.Fprintf(w, "- Prefault: %s\n", r.prefault)
	}
	fmt.Fprintf(w, "- hubmesh: `%s`\n", e.hubmesh)
	fmt.Fprintf(w, "- Client: bench/meshbench (%s), flags `%s`\n", runtime.Version(), strings.Join(r.cfg.args, " "))
}

// document is the whole of docs/benchmarks-mesh.md around the results.
func (r benchReport) document(results string) string {
	return `# Mesh benchmarks

A hubmesh cluster of real ` + "`hubmesh serve`" + ` processes, measured against the goals of
issue 3. The single-node figures (hubmesh next to CNCF distribution) are in
[benchmarks.md](benchmarks.md).

` + "```" + `
make bench                                        # both harnesses; rewrites this file and benchmarks.md
go run ./bench/meshbench -hubmesh bin/hubmesh -out docs/benchmarks-mesh.md
go run ./bench/meshbench -run pull,raft           # no root needed without the fan-out
go run ./bench/meshbench -h                       # every flag
` + "```" + `

## Method

- Clusters are formed as an operator would: node 1 bootstraps, ` + "`hubmesh cluster join-token --server URL`" + `
  prints a token, and the other nodes run ` + "`hubmesh serve --join URL --join-token T`" + `. The harness
  reads each node's address from its ` + "`--addr-file`" + `, waits for ` + "`/readyz`" + `, then until every node
  lists all members as alive voters and names the same leader. Nodes log warnings and errors only.
  Authentication is on: node 1 creates the administrator from ` + "`--admin-password-file`" + `, and the
  CLI and every client request carry its Basic credentials.
- Blobs are random (incompressible) and new in every round: the first 16 bytes of the layer file
  are rewritten, so no node has seen the blob before. Every GET is read through SHA-256 and
  checked against the digest and size. Before each timed pull the harness calls sync(2), untimed.
  Before anything starts it touches and frees about as much memory as the nodes will write: on
  these VMs the host backs guest memory lazily, and writing into fresh page cache is several times
  slower (see bench/internal/proc/prefault.go).
- **Cross-node pull**: 3 nodes on 127.0.0.1, all with ` + "`--replicas 1`" + `, so that a pushed blob
  stays on the node it was pushed to (the harness checks that B's store did not grow on the push).
  A is the leader, B a follower. Each round pushes a new image (one layer of the given size) to A,
  then GETs the layer through A (same-node: from A's disk) and through B (cross-node: B looks the
  blob up in the Raft state, asks A for its chunk root, fetches its 1 MiB chunks over libp2p
  (bitswap) and streams them to the client as they arrive, keeping the blob), in alternating
  order. MiB/s is layer bytes over the wall time from the request to the last verified byte; time
  to first byte is from the request to the first body bytes. CPU is user+system time from
  /proc/PID/stat of the nodes and getrusage of the harness, during the pull.
- **Raft**: 3 nodes on 127.0.0.1 with the default replication factor (2). Through the leader, then
  through a follower (which forwards every write to the leader): a 1 KiB layer and a config are
  pushed, 2 x clients warm-up PUTs, then the measured PUTs, each a distinct small OCI manifest
  (an annotation differs) under its own tag, from the given number of concurrent clients (one
  keep-alive connection each). Latency is per request as the client sees it (201 received);
  PUTs/s is the count over the wall time of the run.
- **Fan-out**: 4 nodes, each in its own network namespace, connected by a veth pair to a bridge in
  another namespace (all created by the harness, names ` + "`hmbench-<pid>-*`" + `, deleted at the end;
  leftovers of a killed run are deleted by the next). Each node's link is shaped to the rate in
  both directions with a token bucket (` + "`tc qdisc ... tbf`" + `, 20 ms of queue): on the node's end
  for what it sends, on the bridge's end for what it receives. The nodes listen on their namespace
  address (` + "`--http-addr 10.231.0.N:5000 --p2p-addr /ip4/10.231.0.N/tcp/4001`" + `) with ` + "`--replicas 1`" + `.
  By default each client runs in its node's namespace and reaches the node over loopback, like a
  client next to its registry mirror: the shaped links carry only node-to-node traffic, so the
  figure is about how the cluster spreads a layer (` + "`-fanout-client bridge`" + ` puts the clients
  on the bridge instead, so that the blobs to them also cross the nodes' links). A round pushes a
  new layer to node 1 (only node 1 holds it) and pulls it through one other node (rotating n2, n3,
  n4); another round pushes a new layer and pulls it through nodes 2, 3 and 4 at once, timed until
  the last pull finishes. The two alternate in order. Bytes sent per node are the tx counters of
  its link. If the shaped link were the only limit, one pull would take size / rate, and one
  origin serving all three about 3x that.

` + results
}
