package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// testCluster runs nodes in process: Raft over loopback TCP (tcpNet) and
// the consensus RPC through rpcNet. Node names are both Raft IDs and
// addresses, as peer IDs are in production.
type testCluster struct {
	t     *testing.T
	tcp   *tcpNet
	rpc   *rpcNet
	nodes map[string]*Node
	dirs  map[string]string
	tune  func(*Config)
}

func selfOf(name, role string) Member {
	return Member{ID: name, HTTP: "http://" + name + ".test:5000", P2P: []string{"/dns/" + name + ".test/tcp/4001"}, Role: role}
}

// newCluster starts node-1 (which bootstraps) and joins node-2..node-size
// as voters through AddMember on node-1.
func newCluster(t *testing.T, size int, tune func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, tcp: newTCPNet(), rpc: newRPCNet(), nodes: map[string]*Node{}, dirs: map[string]string{}, tune: tune}
	first := c.start("node-1", false, selfOf("node-1", RoleVoter))
	waitLeader(t, first)
	for i := 2; i <= size; i++ {
		name := fmt.Sprintf("node-%d", i)
		c.start(name, true, selfOf(name, RoleVoter))
		if err := first.AddMember(t.Context(), selfOf(name, RoleVoter)); err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
	}
	c.eventually("every node sees every member", 15*time.Second, func() error {
		for name, n := range c.nodes {
			if got := memberIDs(n.Members()); got != c.wantMembers(size) {
				return fmt.Errorf("%s: members %q", name, got)
			}
		}
		return nil
	})
	return c
}

func (c *testCluster) wantMembers(size int) string {
	var ids []string
	for i := 1; i <= size; i++ {
		ids = append(ids, fmt.Sprintf("node-%d=%s", i, RoleVoter))
	}
	return strings.Join(ids, ",")
}

// start opens (or reopens, with its old directory) the node name.
func (c *testCluster) start(name string, join bool, self Member) *Node {
	c.t.Helper()
	dir, ok := c.dirs[name]
	if !ok {
		dir = c.t.TempDir()
		c.dirs[name] = dir
	}
	cfg := testConfig(c.t, dir, c.tcp.listen(c.t, name))
	cfg.SkipBootstrap = join
	cfg.RPC = c.rpc.client(name)
	cfg.Self = self
	if c.tune != nil {
		c.tune(&cfg)
	}
	n := openNode(c.t, cfg)
	c.rpc.register(name, n)
	c.nodes[name] = n
	return n
}

// isolate cuts name off from the others, for Raft and RPC alike.
func (c *testCluster) isolate(name string, on bool) {
	c.tcp.isolate(name, on)
	c.rpc.isolate(name, on)
}

// eventually polls cond until it returns nil, failing the test with its
// last error after timeout.
func (c *testCluster) eventually(what string, timeout time.Duration, cond func() error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			c.t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
	}
}

// leader waits until the nodes in names (all when empty) agree on a
// leader among them and returns it with the others.
func (c *testCluster) leader(names ...string) (*Node, []*Node) {
	c.t.Helper()
	if len(names) == 0 {
		for name := range c.nodes {
			names = append(names, name)
		}
	}
	var leader *Node
	var followers []*Node
	c.eventually("a leader", 15*time.Second, func() error {
		leader, followers = nil, nil
		var ids []string
		for _, name := range names {
			n := c.nodes[name]
			id, _ := n.Leader()
			ids = append(ids, id)
			if n.IsLeader() {
				leader = n
			} else {
				followers = append(followers, n)
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader among %v", names)
		}
		for _, id := range ids {
			if id != leader.ID() {
				return fmt.Errorf("leaders %v", ids)
			}
		}
		return nil
	})
	return leader, followers
}

// signalled waits for a Changes signal on n.
func signalled(t *testing.T, n *Node, what string) {
	t.Helper()
	select {
	case <-n.Changes():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no Changes signal on %s", what, n.ID())
	}
}

func drain(n *Node) {
	select {
	case <-n.Changes():
	default:
	}
}

// TestClusterForwardingAndReadYourWrites: writes through followers reach
// the leader, their results and errors come back, and a write through one
// follower is visible through another on the very next read.
func TestClusterForwardingAndReadYourWrites(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	f1, f2 := fs[0], fs[1]

	// Every node has the same cluster identity, set by the first leader.
	info, ok := leader.Cluster()
	if !ok || info.ID == "" || len(info.TokenKey) != TokenKeySize {
		t.Fatalf("cluster identity %+v, %v", info, ok)
	}
	for _, n := range fs {
		if got, ok := n.Cluster(); !ok || got.ID != info.ID || !bytes.Equal(got.TokenKey, info.TokenKey) {
			t.Fatalf("%s: cluster identity %+v, want %+v", n.ID(), got, info)
		}
	}
	if ms := f1.Members(); !ms[0].Equal(selfOf("node-1", RoleVoter)) {
		t.Fatalf("member node-1 = %+v", ms[0])
	}

	layer := blobDesc("layer")
	if err := f1.LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatalf("link through a follower: %v", err)
	}
	if d, err := f2.StatBlob(ctx, "alice/app", layer.Digest); err != nil || d.Digest != layer.Digest {
		t.Fatalf("stat through the other follower = %+v, %v", d, err)
	}
	for i := range 10 {
		writer, reader := fs[i%2], fs[(i+1)%2]
		m := imageManifest("alice/app", fmt.Sprint("v", i), layer)
		tag := fmt.Sprint("t", i)
		if err := writer.PutManifest(ctx, m, []string{tag}); err != nil {
			t.Fatalf("put %s through %s: %v", tag, writer.ID(), err)
		}
		got, err := reader.GetManifest(ctx, "alice/app", tag)
		if err != nil || !bytes.Equal(got.Payload, m.Payload) {
			t.Fatalf("get %s through %s right after the put: %v", tag, reader.ID(), err)
		}
	}
	if tags, err := f2.Tags(ctx, "bob/app", hubmesh.Page{}); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Fatalf("tags of an unknown repo = %v, %v", tags, err)
	}

	// A command's result comes back through forwarding.
	desc, err := f2.MountBlob(ctx, "bob/app", "alice/app", layer.Digest)
	if err != nil || desc.Digest != layer.Digest || desc.Size != layer.Size || desc.MediaType != layer.MediaType {
		t.Fatalf("mount through a follower = %+v, %v", desc, err)
	}
	if tags, err := f1.Tags(ctx, "alice/app", hubmesh.Page{N: 2}); err != nil || strings.Join(tags, ",") != "t0,t1" {
		t.Fatalf("tags = %q, %v", tags, err)
	}
	subject, _ := leader.GetManifest(ctx, "alice/app", "t0")
	sig := imageManifest("alice/app", "sig")
	sig.Subject = subject.Digest
	if err := f1.PutManifest(ctx, sig, nil); err != nil {
		t.Fatal(err)
	}
	if refs, err := f2.Referrers(ctx, "alice/app", subject.Digest, ""); err != nil || len(refs) != 1 || refs[0].Digest != sig.Digest {
		t.Fatalf("referrers through the other follower = %v, %v", refs, err)
	}

	// The leader's refusals come back as the same errors.
	bad := imageManifest("alice/app", "bad", blobDesc("never linked"))
	if err := f1.PutManifest(ctx, bad, []string{"bad"}); !errors.Is(err, hubmesh.ErrManifestBlobUnknown) {
		t.Fatalf("forwarded put with an unknown blob: %v, want ErrManifestBlobUnknown", err)
	}
	if err := f2.DeleteTag(ctx, "alice/app", "nope"); !errors.Is(err, hubmesh.ErrManifestUnknown) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("forwarded delete of an unknown tag: %v", err)
	}
	// A miss that is real stays a miss, answered after one barrier.
	start := time.Now()
	if _, err := f2.GetManifest(ctx, "alice/app", "nope"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("get of an unknown tag: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a miss took %v", d)
	}

	servers, err := f1.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("servers = %+v, %v", servers, err)
	}
	leaders := 0
	for _, s := range servers {
		if s.Suffrage != RoleVoter || s.Address != s.ID {
			t.Fatalf("server %+v", s)
		}
		if s.Leader {
			leaders++
			if s.ID != leader.ID() {
				t.Fatalf("server %s marked leader, leader is %s", s.ID, leader.ID())
			}
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders in %+v", leaders, servers)
	}
}

// TestClusterMembership joins a nonvoter through a follower, records a
// replica on it, removes it, then lets the leader leave.
func TestClusterMembership(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	for _, n := range c.nodes {
		drain(n)
	}

	mirror := selfOf("node-4", RoleNonvoter)
	n4 := c.start("node-4", true, mirror)
	if err := fs[0].AddMember(ctx, mirror); err != nil {
		t.Fatalf("add a nonvoter through a follower: %v", err)
	}
	signalled(t, leader, "join")
	signalled(t, fs[1], "join")
	if got := memberIDs(fs[1].Members()); got != "node-1=voter,node-2=voter,node-3=voter,node-4=nonvoter" {
		t.Fatalf("members after join = %q", got)
	}
	servers, err := leader.Servers()
	if err != nil || len(servers) != 4 || servers[3].ID != "node-4" || servers[3].Suffrage != RoleNonvoter {
		t.Fatalf("servers after join = %+v, %v", servers, err)
	}
	// Adding it again changes nothing.
	if err := leader.AddMember(ctx, mirror); err != nil {
		t.Fatalf("add again: %v", err)
	}
	if s, _ := leader.Servers(); len(s) != 4 {
		t.Fatalf("servers after adding again = %+v", s)
	}

	// The nonvoter reads what is written elsewhere, and records a replica.
	layer := blobDesc("layer")
	if err := fs[1].LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatal(err)
	}
	m := imageManifest("alice/app", "v1", layer)
	if err := fs[1].PutManifest(ctx, m, []string{"1.0"}); err != nil {
		t.Fatal(err)
	}
	if got, err := n4.GetManifest(ctx, "alice/app", "1.0"); err != nil || got.Digest != m.Digest {
		t.Fatalf("read on the new nonvoter = %v, %v", got, err)
	}
	if info, ok := n4.Cluster(); !ok || info.ID == "" {
		t.Fatal("the new node has no cluster identity")
	}
	if err := n4.AddReplica(ctx, layer.Digest, layer.Size, "node-4"); err != nil {
		t.Fatalf("add replica from the nonvoter: %v", err)
	}
	if info, err := leader.Blob(ctx, layer.Digest); err != nil || strings.Join(info.Replicas, ",") != fs[1].ID()+",node-4" {
		t.Fatalf("blob record = %+v, %v", info, err)
	}

	// Remove it through the other follower: out of Raft, records and replicas.
	drain(leader)
	if err := fs[1].RemoveMember(ctx, "node-4"); err != nil {
		t.Fatalf("remove through a follower: %v", err)
	}
	signalled(t, leader, "remove")
	if got := memberIDs(leader.Members()); got != c.wantMembers(3) {
		t.Fatalf("members after remove = %q", got)
	}
	if s, _ := leader.Servers(); len(s) != 3 {
		t.Fatalf("servers after remove = %+v", s)
	}
	if info, _ := leader.Blob(ctx, layer.Digest); strings.Join(info.Replicas, ",") != fs[1].ID() {
		t.Fatalf("replicas after remove = %v", info.Replicas)
	}
	if err := fs[0].RemoveMember(ctx, "node-4"); err != nil {
		t.Fatalf("remove again: %v", err)
	}
	// The removed node may no longer use the leader.
	req := []byte(`{"kind":"read-index"}`)
	if _, err := leader.HandleRPC(ctx, "node-4", req); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("rpc from a removed node: %v, want ErrDenied", err)
	}

	// The leader leaves: it hands over leadership and is removed.
	old := leader.ID()
	if err := leader.RemoveMember(ctx, old); err != nil {
		t.Fatalf("the leader leaves: %v", err)
	}
	rest := []string{fs[0].ID(), fs[1].ID()}
	newLeader, others := c.leader(rest...)
	c.eventually("the leaver is gone", 10*time.Second, func() error {
		for _, n := range []*Node{newLeader, others[0]} {
			for _, mb := range n.Members() {
				if mb.ID == old {
					return fmt.Errorf("%s still lists %s", n.ID(), old)
				}
			}
		}
		return nil
	})
	if s, _ := newLeader.Servers(); len(s) != 2 {
		t.Fatalf("servers after the leader left = %+v", s)
	}
	if err := others[0].RemoveMember(ctx, others[0].ID()); err != nil {
		t.Fatalf("a follower leaves: %v", err)
	}
	if err := newLeader.RemoveMember(ctx, newLeader.ID()); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("removing the last voter: %v, want ErrInvalid", err)
	}
}

// TestClusterReadWhileCatchingUp: a follower that misses locally, gets a
// read index from the leader, but cannot apply up to it within
// ReadBarrierTimeout answers ErrUnavailable rather than a miss that may be
// false; once it has caught up, the same read succeeds.
func TestClusterReadWhileCatchingUp(t *testing.T) {
	const lagging = "node-3"
	const barrier = 300 * time.Millisecond
	c := newCluster(t, 3, func(cfg *Config) {
		if cfg.NodeID == lagging {
			// With its Raft traffic cut it keeps taking the leader for the
			// leader, so its read barrier still reaches it over RPC.
			cfg.HeartbeatTimeout = time.Minute
			cfg.ElectionTimeout = time.Minute
			cfg.ReadBarrierTimeout = barrier
		}
	})
	ctx := t.Context()
	leader, _ := c.leader()
	if leader.ID() == lagging {
		t.Fatalf("%s leads; the test needs it to follow", lagging)
	}
	f := c.nodes[lagging]
	c.tcp.isolate(lagging, true) // Raft only: RPCs still reach the leader
	layer := blobDesc("layer")
	if err := leader.LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatal(err)
	}
	m := imageManifest("alice/app", "v1", layer)
	if err := leader.PutManifest(ctx, m, []string{"1.0"}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_, err := f.GetManifest(ctx, "alice/app", "1.0")
	if !errors.Is(err, hubmesh.ErrUnavailable) || errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("read on a follower behind the leader: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > barrier+2*time.Second {
		t.Fatalf("the read failed after %v, barrier timeout %v", d, barrier)
	}
	if id, _ := f.Leader(); id != leader.ID() {
		t.Fatalf("%s names %q as leader, want %s", lagging, id, leader.ID())
	}

	c.tcp.isolate(lagging, false)
	c.eventually("the follower catches up", 20*time.Second, func() error {
		got, err := f.GetManifest(ctx, "alice/app", "1.0")
		if err != nil {
			return err
		}
		if got.Digest != m.Digest {
			return fmt.Errorf("1.0 is %s", got.Digest)
		}
		return nil
	})
}

// TestClusterPartition: a node cut off from the others keeps serving what
// it has, fails writes with ErrUnavailable within the forward timeout, and
// catches up after healing. A node without quorum fails writes the same
// way.
func TestClusterPartition(t *testing.T) {
	const forward = 1500 * time.Millisecond
	const margin = 2 * time.Second
	c := newCluster(t, 3, func(cfg *Config) { cfg.ForwardTimeout = forward })
	ctx := t.Context()
	old, _ := c.leader()
	layer := blobDesc("layer")
	if err := old.LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatal(err)
	}
	if err := old.PutManifest(ctx, imageManifest("alice/app", "v1", layer), []string{"1.0"}); err != nil {
		t.Fatal(err)
	}

	c.isolate(old.ID(), true)
	start := time.Now()
	err := old.PutManifest(ctx, imageManifest("alice/app", "v-cut", layer), []string{"cut"})
	if !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("write on the cut-off leader: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > forward+margin {
		t.Fatalf("write on the cut-off leader failed after %v", d)
	}
	if _, err := old.GetManifest(ctx, "alice/app", "1.0"); err != nil {
		t.Fatalf("read of held data on the cut-off node: %v", err)
	}
	start = time.Now()
	if _, err := old.GetManifest(ctx, "alice/app", "2.0"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("read of a missing tag on the cut-off node: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second+margin {
		t.Fatalf("a miss on the cut-off node took %v", d)
	}

	// The majority elects a leader and takes writes through a follower.
	var rest []string
	for name := range c.nodes {
		if name != old.ID() {
			rest = append(rest, name)
		}
	}
	_, fs := c.leader(rest...)
	m2 := imageManifest("alice/app", "v2", layer)
	if err := fs[0].PutManifest(ctx, m2, []string{"2.0"}); err != nil {
		t.Fatalf("write on the majority: %v", err)
	}

	c.isolate(old.ID(), false)
	c.eventually("the healed node catches up", 20*time.Second, func() error {
		got, err := old.GetManifest(ctx, "alice/app", "2.0")
		if err != nil {
			return err
		}
		if got.Digest != m2.Digest {
			return fmt.Errorf("2.0 is %s", got.Digest)
		}
		return nil
	})
	if _, err := old.GetManifest(ctx, "alice/app", "cut"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("the write refused during the partition exists: %v", err)
	}
	c.eventually("a write through the healed node", 20*time.Second, func() error {
		return old.DeleteTag(ctx, "alice/app", "1.0")
	})

	// Without quorum: two of three nodes gone.
	_, fs = c.leader()
	last := fs[0]
	for name, n := range c.nodes {
		if name != last.ID() {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	start = time.Now()
	if err := last.DeleteTag(ctx, "alice/app", "2.0"); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("write without quorum: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > forward+margin {
		t.Fatalf("write without quorum failed after %v", d)
	}
	if _, err := last.GetManifest(ctx, "alice/app", "2.0"); err != nil {
		t.Fatalf("read of held data without quorum: %v", err)
	}
}

// TestClusterRestartRecordsNewAddresses: a node restarting with other
// addresses updates its own member record, keeping its role.
func TestClusterRestartRecordsNewAddresses(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader, fs := c.leader()
	moved := fs[0]
	if err := moved.Close(); err != nil {
		t.Fatal(err)
	}
	drain(leader)
	self := selfOf(moved.ID(), RoleNonvoter) // the role is not the node's to change
	self.HTTP = "http://moved.test:5000"
	self.P2P = []string{"/ip4/10.9.9.9/udp/4001/quic-v1", "/ip4/10.9.9.9/tcp/4001"}
	c.start(moved.ID(), false, self)
	c.eventually("the new addresses are recorded", 15*time.Second, func() error {
		for _, m := range leader.Members() {
			if m.ID == self.ID {
				want := self
				want.Role = RoleVoter
				if !m.Equal(want) {
					return fmt.Errorf("record %+v", m)
				}
				return nil
			}
		}
		return errors.New("no record")
	})
	signalled(t, leader, "address change")
}

// TestHandleRPCRejects covers requests HandleRPC must refuse.
func TestHandleRPCRejects(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	cmd, err := Encode(&DeleteTag{Repo: "a", Tag: "b"})
	if err != nil {
		t.Fatal(err)
	}
	apply, err := json.Marshal(&rpcRequest{Kind: rpcApply, Command: cmd})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		node *Node
		from string
		req  []byte
		want error
	}{
		{"not json", leader, fs[0].ID(), []byte("{"), hubmesh.ErrInvalid},
		{"unknown kind", leader, fs[0].ID(), []byte(`{"kind":"launch"}`), hubmesh.ErrInvalid},
		{"undecodable command", leader, fs[0].ID(), []byte(`{"kind":"apply","command":"AQ=="}`), hubmesh.ErrInvalid},
		{"join without member", leader, fs[0].ID(), []byte(`{"kind":"join"}`), hubmesh.ErrInvalid},
		{"join with bad role", leader, fs[0].ID(), []byte(`{"kind":"join","member":{"id":"x","role":"boss"}}`), hubmesh.ErrInvalid},
		{"stranger", leader, "stranger", apply, hubmesh.ErrDenied},
		{"anonymous", leader, "", apply, hubmesh.ErrDenied},
		{"follower", fs[0], leader.ID(), apply, hubmesh.ErrNotLeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.node.HandleRPC(ctx, tc.from, tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("HandleRPC: %v, want %v", err, tc.want)
			}
		})
	}
}
