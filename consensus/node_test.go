package consensus

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

// tcpNet is a tiny raft.StreamLayer network over loopback TCP. As with the
// libp2p stream layer, a node's Raft address is its name (not a host:port),
// and a directory maps names to the listeners' current addresses, so a node
// can restart on a new port under the same address. A node can be cut off
// (isolate): its connections close and dials from or to it fail until it
// is let back.
type tcpNet struct {
	mu    sync.Mutex
	addrs map[string]string
	cut   map[string]bool
	conns map[*netConn][2]string // dialled connections and their two ends
}

func newTCPNet() *tcpNet {
	return &tcpNet{addrs: map[string]string{}, cut: map[string]bool{}, conns: map[*netConn][2]string{}}
}

// isolate cuts name off from every other node (on) or lets it back (off).
func (n *tcpNet) isolate(name string, on bool) {
	n.mu.Lock()
	n.cut[name] = on
	var doomed []*netConn
	if on {
		for c, ends := range n.conns {
			if ends[0] == name || ends[1] == name {
				doomed = append(doomed, c)
			}
		}
	}
	n.mu.Unlock()
	for _, c := range doomed {
		_ = c.Close()
	}
}

type netConn struct {
	net.Conn
	dir *tcpNet
}

func (c *netConn) Close() error {
	c.dir.mu.Lock()
	delete(c.dir.conns, c)
	c.dir.mu.Unlock()
	return c.Conn.Close()
}

type nameAddr string

func (a nameAddr) Network() string { return "hubmesh-test" }
func (a nameAddr) String() string  { return string(a) }

type tcpLayer struct {
	net.Listener
	name string
	dir  *tcpNet
}

func (n *tcpNet) listen(t testing.TB, name string) *tcpLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.addrs[name] = ln.Addr().String()
	n.mu.Unlock()
	return &tcpLayer{Listener: ln, name: name, dir: n}
}

func (l *tcpLayer) Addr() net.Addr { return nameAddr(l.name) }

func (l *tcpLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	l.dir.mu.Lock()
	hp, ok := l.dir.addrs[string(address)]
	cut := l.dir.cut[l.name] || l.dir.cut[string(address)]
	l.dir.mu.Unlock()
	if !ok {
		return nil, errors.New("unknown address " + string(address))
	}
	if cut {
		return nil, errors.New("partitioned: " + l.name + " -> " + string(address))
	}
	c, err := net.DialTimeout("tcp", hp, timeout)
	if err != nil {
		return nil, err
	}
	nc := &netConn{Conn: c, dir: l.dir}
	l.dir.mu.Lock()
	defer l.dir.mu.Unlock()
	if l.dir.cut[l.name] || l.dir.cut[string(address)] {
		_ = c.Close()
		return nil, errors.New("partitioned: " + l.name + " -> " + string(address))
	}
	l.dir.conns[nc] = [2]string{l.name, string(address)}
	return nc, nil
}

func testConfig(t testing.TB, dir string, layer *tcpLayer) Config {
	return Config{
		Dir:         dir,
		NodeID:      layer.name,
		Address:     layer.name,
		StreamLayer: layer,
		Logger:      testLogger(t),
	}
}

func openNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func waitLeader(t testing.TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOpenValidatesConfig(t *testing.T) {
	layer := newTCPNet().listen(t, "node-1")
	defer layer.Close()
	for name, cfg := range map[string]Config{
		"no dir":        {NodeID: "n", StreamLayer: layer},
		"no node id":    {Dir: t.TempDir(), StreamLayer: layer},
		"no stream":     {Dir: t.TempDir(), NodeID: "n"},
		"wrong address": {Dir: t.TempDir(), NodeID: "n", Address: "other", StreamLayer: layer},
	} {
		if _, err := Open(t.Context(), cfg); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: Open error %v, want ErrInvalid", name, err)
		}
	}

	// A data directory that cannot be created is an error, not a panic.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, filepath.Join(file, "consensus"), newTCPNet().listen(t, "node-2"))
	if _, err := Open(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "consensus") {
		t.Fatalf("Open under a regular file: %v", err)
	}
}

// TestSingleNode runs a one-voter cluster over real TCP: it bootstraps,
// serves writes and reads, snapshots, and keeps everything across restarts.
func TestSingleNode(t *testing.T) {
	tn := newTCPNet()
	dir := t.TempDir()
	ctx := t.Context()

	start := time.Now()
	n := openNode(t, testConfig(t, dir, tn.listen(t, "node-1")))
	waitLeader(t, n)
	t.Logf("leader after %v", time.Since(start))
	if !n.IsLeader() {
		t.Fatal("the only voter is not the leader")
	}
	if id, _ := n.Leader(); id != "node-1" {
		t.Fatalf("leader %q", id)
	}

	layer := blobDesc("layer")
	m := imageManifest("alice/app", "v1", layer)
	if err := n.PutManifest(ctx, m, []string{"1.0"}); !errors.Is(err, hubmesh.ErrManifestBlobUnknown) {
		t.Fatalf("put before link: %v, want ErrManifestBlobUnknown", err)
	}
	if err := n.LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatal(err)
	}
	if err := n.PutManifest(ctx, m, []string{"1.0"}); err != nil {
		t.Fatal(err)
	}
	got, err := n.GetManifest(ctx, "alice/app", "1.0")
	if err != nil || string(got.Payload) != string(m.Payload) {
		t.Fatalf("get = %v, %v", got, err)
	}
	desc, err := n.MountBlob(ctx, "bob/app", "alice/app", layer.Digest)
	if err != nil || desc.Digest != layer.Digest || desc.Size != layer.Size {
		t.Fatalf("mount = %+v, %v", desc, err)
	}
	if _, err := n.MountBlob(ctx, "bob/app", "carol/app", layer.Digest); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Fatalf("mount from a repo without it: %v", err)
	}
	if info, err := n.Blob(ctx, layer.Digest); err != nil || strings.Join(info.Replicas, ",") != "node-1" {
		t.Fatalf("blob record %+v, %v", info, err)
	}
	st := n.Stats()
	if st.State != "Leader" || st.LeaderID != "node-1" || st.Term == 0 || st.AppliedIndex == 0 ||
		st.LastLogIndex < st.AppliedIndex || st.Repositories != 1 || st.Manifests != 1 || st.Blobs != 1 {
		t.Fatalf("stats %+v", st)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := n.DeleteTag(cancelled, "alice/app", "1.0"); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("apply under a cancelled ctx: %v", err)
	}

	// Snapshot, then write more, so a restart restores the snapshot and
	// replays the entries after it.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	m2 := imageManifest("alice/app", "v2", layer)
	if err := n.PutManifest(ctx, m2, []string{"2.0"}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.GetManifest(ctx, "alice/app", "1.0"); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("read after Close: %v", err)
	}
	if err := n.DeleteTag(ctx, "alice/app", "1.0"); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("write after Close: %v", err)
	}
	if st := n.Stats(); st.State != "Shutdown" {
		t.Fatalf("state after Close %q", st.State)
	}

	n = openNode(t, testConfig(t, dir, tn.listen(t, "node-1")))
	waitLeader(t, n)
	for _, ref := range []string{"1.0", "2.0"} {
		if _, err := n.GetManifest(ctx, "alice/app", ref); err != nil {
			t.Fatalf("get %s after restart: %v", ref, err)
		}
	}
	if _, err := n.StatBlob(ctx, "bob/app", layer.Digest); err != nil {
		t.Fatalf("mounted blob after restart: %v", err)
	}
	if err := n.DeleteTag(ctx, "alice/app", "1.0"); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	tags, err := n.Tags(ctx, "alice/app", hubmesh.Page{})
	if err != nil || strings.Join(tags, ",") != "2.0" {
		t.Fatalf("tags after restart = %q, %v", tags, err)
	}
}

// waitLeaderNot waits until n knows a leader other than old.
func waitLeaderNot(t *testing.T, n *Node, old string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	ch, stop := n.observeLeader()
	defer stop()
	for {
		if id, _ := n.Leader(); id != "" && id != old {
			return id
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no new leader: %v", ctx.Err())
		}
	}
}

// TestThreeNodes adds two voters by hand, replicates writes to them, and
// survives the loss of the leader.
func TestThreeNodes(t *testing.T) {
	tn := newTCPNet()
	ctx := t.Context()
	names := []string{"node-1", "node-2", "node-3"}
	nodes := map[string]*Node{}
	for i, name := range names {
		cfg := testConfig(t, t.TempDir(), tn.listen(t, name))
		cfg.SkipBootstrap = i > 0
		nodes[name] = openNode(t, cfg)
	}
	first := nodes["node-1"]
	waitLeader(t, first)
	for _, name := range names[1:] {
		if err := first.AddVoter(ctx, name, name); err != nil {
			t.Fatal(err)
		}
	}

	layer := blobDesc("layer")
	m := imageManifest("alice/app", "v1", layer)
	if err := first.LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatal(err)
	}
	if err := first.PutManifest(ctx, m, []string{"1.0"}); err != nil {
		t.Fatal(err)
	}
	idx := first.Stats().AppliedIndex
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, name := range names[1:] {
		n := nodes[name]
		if err := n.WaitApplied(wctx, idx); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := n.GetManifest(ctx, "alice/app", "1.0")
		if err != nil || got.Digest != m.Digest {
			t.Fatalf("%s: get = %v, %v", name, got, err)
		}
		if err := n.DeleteTag(ctx, "alice/app", "1.0"); !errors.Is(err, hubmesh.ErrNotLeader) {
			t.Fatalf("%s: write on a follower: %v, want ErrNotLeader", name, err)
		}
	}

	// Lose the leader: the other two elect one and keep the data.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	leader := nodes[waitLeaderNot(t, nodes["node-2"], "node-1")]
	m2 := imageManifest("alice/app", "v2", layer)
	if err := leader.PutManifest(ctx, m2, []string{"2.0"}); err != nil {
		t.Fatal(err)
	}
	tags, err := leader.Tags(ctx, "alice/app", hubmesh.Page{})
	if err != nil || strings.Join(tags, ",") != "1.0,2.0" {
		t.Fatalf("tags on the new leader = %q, %v", tags, err)
	}
}
