package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/hubmesh/hubmesh/bench/internal/regclient"
	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// loopbackSpecs are n nodes on 127.0.0.1 with free ports and extra flags.
func loopbackSpecs(n int, args ...string) []nodeSpec {
	specs := make([]nodeSpec, n)
	for i := range specs {
		specs[i] = nodeSpec{httpAddr: "127.0.0.1:0", p2pAddr: "/ip4/127.0.0.1/tcp/0", args: args}
	}
	return specs
}

// layerImage salts the layer file for round r and returns the image that
// carries it.
func layerImage(l *layerFile, nonce, r uint64) (*regclient.Image, error) {
	d, err := l.salt(nonce, r)
	if err != nil {
		return nil, err
	}
	return regclient.NewImage([]regclient.Blob{{Path: l.path, Desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageLayer, Digest: d, Size: l.size,
	}}}, nil)
}

// pullResult is what the cross-node pull benchmark measured; the slices
// hold one entry per measured round.
type pullResult struct {
	size         int64
	roleA, roleB string // leader or follower
	same, cross  []regclient.Fetch
	sameCPUA     []time.Duration // A's CPU during the same-node pull
	sameCPUC     []time.Duration // the harness's (client's) CPU during it
	crossCPUA    []time.Duration // A's CPU during the cross-node pull
	crossCPUB    []time.Duration // B's CPU during the cross-node pull
	crossCPUC    []time.Duration // the harness's (client's) CPU during it
}

// benchPull: a 3-node cluster with --replicas 1, so a pushed blob stays on
// the node it was pushed to (A). Each round pushes a new blob to A, then
// pulls it through A (same-node) and through B (cross-node: B fetches it
// from A over the mesh while it streams it to the client), in alternating
// order.
func benchPull(ctx context.Context, cfg config, dir string, nonce uint64, logf func(string, ...any)) (res *pullResult, err error) {
	c, err := startCluster(ctx, cfg, filepath.Join(dir, "pull"), loopbackSpecs(3, "--replicas", "1"))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	a, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	b := c.follower(a)
	res = &pullResult{size: int64(cfg.pullSize), roleA: "leader", roleB: "follower"}
	logf("pull: 3 nodes up; A = %s (leader), B = %s", a.Name, b.Name)

	layer, err := newLayerFile(filepath.Join(dir, "pull-layer"), int64(cfg.pullSize), nonce)
	if err != nil {
		return nil, err
	}
	ca, cb := newClient(a, "", 4), newClient(b, "", 4)
	defer ca.Close()
	defer cb.Close()
	const repo = "bench/pull"
	for r := range cfg.pullWarmup + cfg.pullRounds {
		img, err := layerImage(layer, nonce, uint64(r))
		if err != nil {
			return nil, err
		}
		stB0, err := b.status(ctx)
		if err != nil {
			return nil, err
		}
		if err := ca.Push(ctx, repo, fmt.Sprintf("r%d", r), img); err != nil {
			return nil, fmt.Errorf("pull: push to A: %w", errors.Join(err, c.alive()))
		}
		stB1, err := b.status(ctx)
		if err != nil {
			return nil, err
		}
		if stB1.Blobs.Count != stB0.Blobs.Count {
			return nil, fmt.Errorf("pull: B's store went from %d to %d blobs on a push to A: the blob is not on A only",
				stB0.Blobs.Count, stB1.Blobs.Count)
		}
		var same, cross regclient.Fetch
		var cpuSame, cpuCross []time.Duration
		pullSame := func() (err error) {
			cpuSame, same, err = timed(ctx, ca, repo, img.Layers[0].Desc, a)
			return err
		}
		pullCross := func() (err error) {
			cpuCross, cross, err = timed(ctx, cb, repo, img.Layers[0].Desc, a, b)
			return err
		}
		steps := []func() error{pullSame, pullCross}
		if r%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, fmt.Errorf("pull: %w", errors.Join(err, c.alive()))
			}
		}
		// B keeps what it fetched; it installs the blob once it has
		// verified it, which may be just after the last byte went out.
		// Wait for that so that the next round's check sees a settled
		// store.
		kept, err := waitBlobs(ctx, b, stB1.Blobs.Count+1, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if !kept {
			logf("pull: B did not keep the blob it fetched (its store did not grow within 30s)")
		}
		label := "warm-up"
		if r >= cfg.pullWarmup {
			label = fmt.Sprintf("round %d/%d", r-cfg.pullWarmup+1, cfg.pullRounds)
			res.same = append(res.same, same)
			res.cross = append(res.cross, cross)
			res.sameCPUA = append(res.sameCPUA, cpuSame[0])
			res.sameCPUC = append(res.sameCPUC, cpuSame[1])
			res.crossCPUA = append(res.crossCPUA, cpuCross[0])
			res.crossCPUB = append(res.crossCPUB, cpuCross[1])
			res.crossCPUC = append(res.crossCPUC, cpuCross[2])
		}
		logf("pull %s: same-node %.0f MiB/s (first byte %s), cross-node %.0f MiB/s (first byte %s)",
			label, stats.MiBps(same.Bytes, same.Total), same.TTFB.Round(time.Millisecond),
			stats.MiBps(cross.Bytes, cross.Total), cross.TTFB.Round(time.Millisecond))
	}
	return res, nil
}

// waitBlobs waits up to timeout for n's store to hold at least count
// blobs, and reports whether it did.
func waitBlobs(ctx context.Context, n *node, count int64, timeout time.Duration) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var reached bool
	err := n.Poll(wctx, func() (bool, error) {
		st, err := n.status(wctx)
		if err != nil {
			return false, nil // retried until the deadline
		}
		reached = st.Blobs.Count >= count
		return reached, nil
	})
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return false, nil
	}
	return reached, err
}

// timed flushes dirty pages (untimed), then pulls d through cl and returns
// the CPU time each of nodes used meanwhile, followed by the harness's own.
func timed(ctx context.Context, cl *regclient.Client, repo string, d v1.Descriptor, nodes ...*node) ([]time.Duration, regclient.Fetch, error) {
	syscall.Sync()
	before := make([]time.Duration, len(nodes)+1)
	for i, n := range nodes {
		var err error
		if before[i], err = n.CPU(); err != nil {
			return nil, regclient.Fetch{}, err
		}
	}
	before[len(nodes)] = selfCPU()
	f, err := cl.PullBlob(ctx, repo, d)
	if err != nil {
		return nil, f, err
	}
	used := make([]time.Duration, len(nodes)+1)
	for i, n := range nodes {
		after, err := n.CPU()
		if err != nil {
			return nil, f, err
		}
		used[i] = after - before[i]
	}
	used[len(nodes)] = selfCPU() - before[len(nodes)]
	return used, f, nil
}

// selfCPU is the user+system CPU time the harness has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raftResult is what the manifest PUT benchmark measured.
type raftResult struct {
	conc             int
	leader, follower regclient.PutRun
	warmup, replicas int
}

// benchRaft: a 3-node cluster with the default replication factor. For the
// leader and then a follower: a small layer and config are pushed through
// it, a few PUTs warm up, then cfg.manifests distinct manifests are PUT
// through it by cfg.clients concurrent clients (a follower forwards each
// to the leader, which commits it in Raft).
func benchRaft(ctx context.Context, cfg config, dir string, logf func(string, ...any)) (res *raftResult, err error) {
	c, err := startCluster(ctx, cfg, filepath.Join(dir, "raft"), loopbackSpecs(3))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	leader, err := c.leader(ctx)
	if err != nil {
		return nil, err
	}
	res = &raftResult{conc: cfg.clients, warmup: 2 * cfg.clients}
	for _, t := range []struct {
		label string
		n     *node
		out   *regclient.PutRun
	}{{"leader", leader, &res.leader}, {"follower", c.follower(leader), &res.follower}} {
		cl := newClient(t.n, "", cfg.clients+4)
		repo := "bench/raft-" + t.label
		manifests, err := cl.SmallManifests(ctx, repo, t.label, res.warmup+cfg.manifests)
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("raft: %w", errors.Join(err, c.alive()))
		}
		if _, err := cl.ManifestPuts(ctx, repo, "warm", manifests[:res.warmup], cfg.clients); err != nil {
			cl.Close()
			return nil, fmt.Errorf("raft: warm-up through the %s: %w", t.label, errors.Join(err, c.alive()))
		}
		syscall.Sync()
		*t.out, err = cl.ManifestPuts(ctx, repo, "m", manifests[res.warmup:], cfg.clients)
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("raft: PUTs through the %s: %w", t.label, errors.Join(err, c.alive()))
		}
		logf("raft: %d PUTs through the %s (%s), %d at a time: %.0f/s, p50 %s, p99 %s", cfg.manifests, t.label, t.n.Name,
			cfg.clients, t.out.PerSecond(), stats.Percentile(t.out.Lat, 50), stats.Percentile(t.out.Lat, 99))
	}
	return res, nil
}

// fanoutResult is what the fan-out benchmark measured; the slices hold
// one entry per measured round.
type fanoutResult struct {
	size    int64
	rate    bitRate
	client  string          // where the clients ran: node or bridge
	single  []time.Duration // one pull through one node
	fan     []time.Duration // three pulls at once: until the last finished
	fanEach [][]time.Duration
	// fanSent is, per round, how many bytes each node sent on its link
	// while the three pulls ran (node 1, the origin, first).
	fanSent [][]int64
}

// benchFanout: four nodes, each in its own network namespace with its link
// to a shared bridge shaped to cfg.fanoutRate each way. A new layer is
// pushed to node 1 (--replicas 1: only node 1 holds it), then pulled
// either through one other node, or through nodes 2, 3 and 4 at once.
func benchFanout(ctx context.Context, cfg config, dir string, nonce uint64, logf func(string, ...any)) (res *fanoutResult, err error) {
	if err := removeStale(ctx, logf); err != nil {
		return nil, err
	}
	l, err := newLab(ctx, 4, cfg.fanoutRate, cfg.fanoutClient == "bridge", logf)
	if err != nil {
		return nil, fmt.Errorf("fan-out: network namespaces: %w", err)
	}
	defer func() { err = errors.Join(err, l.close()) }()
	specs := make([]nodeSpec, 4)
	for i := range specs {
		specs[i] = nodeSpec{
			ns:       l.nodes[i],
			httpAddr: nodeIP(i) + ":5000",
			p2pAddr:  "/ip4/" + nodeIP(i) + "/tcp/4001",
			args:     []string{"--replicas", "1"},
		}
	}
	c, err := startCluster(ctx, cfg, filepath.Join(dir, "fanout"), specs)
	if err != nil {
		return nil, fmt.Errorf("fan-out: %w", err)
	}
	defer func() { err = errors.Join(err, c.stop()) }()
	logf("fan-out: 4 nodes up in namespaces %s..., links %s each way", l.nodes[0], cfg.fanoutRate)

	// A client for each node, in the node's namespace (talking to it over
	// its loopback, off the shaped link) or on the bridge.
	clients := make([]*regclient.Client, 4)
	for i, n := range c.nodes {
		ns := l.nodes[i]
		if l.client != "" {
			ns = l.client
		}
		clients[i] = newClient(n, ns, 4)
		defer clients[i].Close()
	}
	res = &fanoutResult{size: int64(cfg.fanoutSize), rate: cfg.fanoutRate, client: cfg.fanoutClient}
	layer, err := newLayerFile(filepath.Join(dir, "fanout-layer"), int64(cfg.fanoutSize), nonce^0xfa)
	if err != nil {
		return nil, err
	}
	const repo = "bench/fanout"
	round := uint64(0)
	pushNew := func() (*regclient.Image, error) {
		round++
		img, err := layerImage(layer, nonce^0xfa, round)
		if err != nil {
			return nil, err
		}
		if err := clients[0].Push(ctx, repo, fmt.Sprintf("r%d", round), img); err != nil {
			return nil, fmt.Errorf("fan-out: push to node 1: %w", errors.Join(err, c.alive()))
		}
		syscall.Sync()
		return img, nil
	}
	single := func(via int) (time.Duration, error) {
		img, err := pushNew()
		if err != nil {
			return 0, err
		}
		f, err := clients[via].PullBlob(ctx, repo, img.Layers[0].Desc)
		if err != nil {
			return 0, fmt.Errorf("fan-out: pull through %s: %w", c.nodes[via].Name, errors.Join(err, c.alive()))
		}
		return f.Total, nil
	}
	fan := func() (time.Duration, []time.Duration, []int64, error) {
		img, err := pushNew()
		if err != nil {
			return 0, nil, nil, err
		}
		tx0, err := l.txBytes(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		each := make([]time.Duration, 3)
		start := time.Now()
		g, gctx := errgroup.WithContext(ctx)
		for i := range 3 {
			g.Go(func() error {
				f, err := clients[i+1].PullBlob(gctx, repo, img.Layers[0].Desc)
				if err != nil {
					return fmt.Errorf("pull through %s: %w", c.nodes[i+1].Name, err)
				}
				each[i] = f.Total
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return 0, nil, nil, fmt.Errorf("fan-out: %w", errors.Join(err, c.alive()))
		}
		all := time.Since(start)
		tx1, err := l.txBytes(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		sent := make([]int64, len(tx0))
		for i := range sent {
			sent[i] = tx1[i] - tx0[i]
		}
		return all, each, sent, nil
	}

	if cfg.fanoutWarmup {
		d, err := single(1)
		if err != nil {
			return nil, err
		}
		logf("fan-out warm-up: one pull through n2 in %s", d.Round(time.Millisecond))
	}
	for r := range cfg.fanoutRounds {
		via := 1 + r%3
		var one, all time.Duration
		var each []time.Duration
		var sent []int64
		doSingle := func() (err error) { one, err = single(via); return err }
		doFan := func() (err error) { all, each, sent, err = fan(); return err }
		steps := []func() error{doSingle, doFan}
		if r%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return nil, err
			}
		}
		res.single = append(res.single, one)
		res.fan = append(res.fan, all)
		res.fanEach = append(res.fanEach, each)
		res.fanSent = append(res.fanSent, sent)
		logf("fan-out round %d/%d: one pull through %s %s; three at once %s (each %v), sent per node %v MiB",
			r+1, cfg.fanoutRounds, c.nodes[via].Name, one.Round(time.Millisecond), all.Round(time.Millisecond),
			roundAll(each), mibAll(sent))
	}
	return res, nil
}

// txBytes returns how many bytes each node has sent on its link.
func (l *lab) txBytes(ctx context.Context) ([]int64, error) {
	out := make([]int64, len(l.nodes))
	for i, ns := range l.nodes {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		b, err := exec.CommandContext(ctx, "ip", "-n", ns, "-s", "-j", "link", "show", "dev", "eth0").Output()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("ip -n %s -s link show eth0: %w", ns, err)
		}
		if out[i], err = parseTxBytes(b); err != nil {
			return nil, fmt.Errorf("%s: %w", ns, err)
		}
	}
	return out, nil
}

// parseTxBytes reads stats64.tx.bytes of the one link in `ip -s -j link
// show dev X` output.
func parseTxBytes(b []byte) (int64, error) {
	var links []struct {
		Stats64 *struct {
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(b, &links); err != nil {
		return 0, fmt.Errorf("link statistics: %w", err)
	}
	if len(links) != 1 || links[0].Stats64 == nil {
		return 0, fmt.Errorf("link statistics: want one link with stats64, got %s", b)
	}
	return links[0].Stats64.TX.Bytes, nil
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func mibAll(ns []int64) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = fmt.Sprintf("%.0f", stats.MiB(n))
	}
	return out
}
