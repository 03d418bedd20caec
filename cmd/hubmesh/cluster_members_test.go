package main_test

// Several real hubmesh processes on loopback forming one cluster, driven
// through their HTTP APIs and the real `hubmesh cluster` CLI.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// clusterRegistries is one registry client per node, in the same order.
func clusterRegistries(procs []*nodetest.Process) []*registry {
	regs := make([]*registry, len(procs))
	for i, p := range procs {
		regs[i] = adminRegistry(p)
	}
	return regs
}

// followers are the running nodes of procs other than leader.
func followers(procs []*nodetest.Process, leader *nodetest.Process) []*nodetest.Process {
	var out []*nodetest.Process
	for _, p := range procs {
		if p != leader && p.Running() {
			out = append(out, p)
		}
	}
	return out
}

// requirePulledEverywhere pulls repo:tag through every node in procs and
// compares manifest and blobs byte for byte with im.
func requirePulledEverywhere(t *testing.T, procs []*nodetest.Process, repo, tag string, im image) {
	t.Helper()
	for _, p := range procs {
		if err := adminRegistry(p).checkPulled(t.Context(), repo, tag, im); err != nil {
			t.Errorf("pull through %s: %v", p.URL(), err)
		}
	}
}

// TestClusterProcesses runs three voters as real processes: pushes through
// one node pull byte-identical through the others, a push through a
// follower pulls through the leader, `hubmesh cluster status --json` shows
// the members as an operator needs them, and a node joined with a mirror
// token is a non-voter that serves pulls.
func TestClusterProcesses(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	regs := clusterRegistries(procs)
	ctx := t.Context()

	first := randomImage(t, 256<<10)
	if err := regs[0].push(ctx, "mesh/first", "1.0", first); err != nil {
		t.Fatalf("push through node 1: %v", err)
	}
	// A pull right after the push, through another node, sees it.
	for _, i := range []int{2, 1} {
		if err := regs[i].checkPulled(ctx, "mesh/first", "1.0", first); err != nil {
			t.Fatalf("push through node 1, pull through node %d: %v", i+1, err)
		}
	}

	leader := nodetest.Leader(t, procs, time.Minute)
	follower := followers(procs, leader)[0]
	second := randomImage(t, 300<<10)
	if err := adminRegistry(follower).push(ctx, "mesh/second", "2.0", second); err != nil {
		t.Fatalf("push through follower %s: %v", follower.URL(), err)
	}
	if err := adminRegistry(leader).checkPulled(ctx, "mesh/second", "2.0", second); err != nil {
		t.Fatalf("push through a follower, pull through the leader: %v", err)
	}
	requirePulledEverywhere(t, procs, "mesh/second", "2.0", second)

	t.Run("status", func(t *testing.T) {
		res := nodetest.CLI(t, 0, nil, "cluster", "status", "--json", "--server", procs[1].URL())
		if res.Code != 0 {
			t.Fatalf("hubmesh cluster status --json: %s", res)
		}
		// The fields an operator's script reads, checked on the raw JSON.
		var raw struct {
			Members []map[string]json.RawMessage `json:"members"`
		}
		if err := json.Unmarshal([]byte(res.Stdout), &raw); err != nil {
			t.Fatalf("cluster status --json is not JSON: %v\n%s", err, res.Stdout)
		}
		for i, m := range raw.Members {
			for _, k := range []string{"id", "role", "leader", "http", "state"} {
				if _, ok := m[k]; !ok {
					t.Errorf("members[%d] lacks %q: %s", i, k, res.Stdout)
				}
			}
		}
		st := nodetest.CLIStatus(t, procs[1])
		if len(st.Members) != 3 {
			t.Fatalf("status lists %d members, want 3: %+v", len(st.Members), st.Members)
		}
		leaders := 0
		for _, p := range procs {
			m, ok := st.Member(p.PeerID())
			if !ok {
				t.Errorf("status does not list node %s (%s): %+v", p.PeerID(), p.URL(), st.Members)
				continue
			}
			if m.Role != "voter" || m.State != "alive" || m.HTTP != p.Addr() {
				t.Errorf("member %s: role %q, state %q, http %q; want voter, alive, %s", m.ID, m.Role, m.State, m.HTTP, p.Addr())
			}
			if m.Leader {
				leaders++
				if m.ID != leader.PeerID() {
					t.Errorf("member %s is marked leader, but the leader is %s", m.ID, leader.PeerID())
				}
			}
		}
		if leaders != 1 {
			t.Errorf("%d members marked leader, want exactly 1: %+v", leaders, st.Members)
		}
		if st.Leader != leader.PeerID() || st.ClusterID == "" {
			t.Errorf("status: leader %q, cluster id %q; want leader %s and a cluster id", st.Leader, st.ClusterID, leader.PeerID())
		}

		// The table view names every member too.
		res = nodetest.CLI(t, 0, nil, "cluster", "status", "--server", procs[2].URL())
		if res.Code != 0 {
			t.Fatalf("hubmesh cluster status: %s", res)
		}
		for _, p := range procs {
			if !strings.Contains(res.Stdout, p.PeerID()) || !strings.Contains(res.Stdout, p.Addr()) {
				t.Errorf("cluster status table does not show %s at %s:\n%s", p.PeerID(), p.Addr(), res.Stdout)
			}
		}
	})

	t.Run("mirror", func(t *testing.T) {
		tok := nodetest.JoinToken(t, procs[0], "--role", "mirror")
		// Join through a follower: any member admits a new node.
		mirror := nodetest.Join(t, follower, tok, nodetest.Options{})
		st := nodetest.WaitStatus(t, leader, time.Minute, "the mirror listed as an alive nonvoter", func(s nodetest.Status) bool {
			m, ok := s.Member(mirror.PeerID())
			return ok && m.Role == "nonvoter" && m.State == "alive" && len(s.Members) == 4
		})
		if n := st.Count("voter", "alive"); n != 3 {
			t.Errorf("after the mirror joined: %d alive voters, want 3: %+v", n, st.Members)
		}
		mreg := adminRegistry(mirror)
		for _, c := range []struct {
			repo, tag string
			im        image
		}{{"mesh/first", "1.0", first}, {"mesh/second", "2.0", second}} {
			if err := mreg.checkPulled(ctx, c.repo, c.tag, c.im); err != nil {
				t.Errorf("pull through the mirror: %v", err)
			}
		}
		// A push right after the mirror joined pulls through it too.
		third := randomImage(t, 128<<10)
		if err := regs[2].push(ctx, "mesh/third", "3.0", third); err != nil {
			t.Fatalf("push through node 3: %v", err)
		}
		if err := mreg.checkPulled(ctx, "mesh/third", "3.0", third); err != nil {
			t.Errorf("push through node 3, pull through the mirror: %v", err)
		}
	})
}

// TestClusterJoinRefused starts nodes that present an expired, a forged
// and a foreign cluster's token: each exits non-zero with one line that
// says why, and the cluster does not gain a member.
func TestClusterJoinRefused(t *testing.T) {
	member := nodetest.Start(t, nodetest.Options{})
	other := nodetest.Start(t, nodetest.Options{}) // a separate one-node cluster

	// An expired token: valid for one second; wait on the clock until the
	// expiry it reports has passed.
	res := nodetest.CLI(t, 0, nil, "cluster", "join-token", "--ttl", "1s", "--json", "--server", member.URL())
	var expiring struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if res.Code != 0 || json.Unmarshal([]byte(res.Stdout), &expiring) != nil || expiring.Token == "" {
		t.Fatalf("hubmesh cluster join-token --ttl 1s --json: %s", res)
	}
	waitUntil(t, expiring.ExpiresAt, 10*time.Second)

	good := nodetest.JoinToken(t, member)
	parts := strings.Split(good, ".")
	if len(parts) != 3 || parts[2] == "" {
		t.Fatalf("join token %q is not prefix.payload.signature", good)
	}
	sig := []byte(parts[2])
	if sig[0] == 'A' { // alter one character of the signature
		sig[0] = 'B'
	} else {
		sig[0] = 'A'
	}
	forged := parts[0] + "." + parts[1] + "." + string(sig)
	foreign := nodetest.JoinToken(t, other)

	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", expiring.Token, "expired"},
		{"forged", forged, "signature"},
		{"foreign cluster", foreign, "another cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(serveArgs(t, t.TempDir(), "127.0.0.1:0"), "--log-format", "text", "--join", member.URL(), "--join-token", tc.token)
			_, stderr, code := cliRun(t, nil, args...)
			requireClearFailure(t, stderr, code, tc.want, "join")
			t.Logf("refused as expected: %s", lastLine(stderr))
		})
	}

	// Join tokens are for administrators only.
	res = nodetest.CLI(t, 0, []string{"HUBMESH_USERNAME="}, "cluster", "join-token", "--server", member.URL())
	if res.Code == 0 || !strings.Contains(res.Stderr, "UNAUTHORIZED") {
		t.Errorf("hubmesh cluster join-token without credentials: %s; want it refused (UNAUTHORIZED)", res)
	}

	st := nodetest.CLIStatus(t, member)
	if len(st.Members) != 1 || st.Members[0].ID != member.PeerID() {
		t.Errorf("after refused joins the cluster lists %+v, want only %s", st.Members, member.PeerID())
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	ls := lines([]byte(s))
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}

// waitUntil polls the clock until it is past when, failing the test if
// that takes longer than limit.
func waitUntil(t *testing.T, when time.Time, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !time.Now().After(when) {
		select {
		case <-ctx.Done():
			t.Fatalf("the clock did not pass %s within %s", when, limit)
		case <-tick.C:
		}
	}
}

// TestClusterRemoveAndLeave takes one follower out with `hubmesh cluster
// remove` and lets another leave with `hubmesh cluster leave`: the status
// stops listing each, and the remaining node keeps taking pushes.
func TestClusterRemoveAndLeave(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	leader := nodetest.Leader(t, procs, time.Minute)
	fs := followers(procs, leader)
	removed, leaving := fs[0], fs[1]

	res := nodetest.CLI(t, 0, nil, "cluster", "remove", removed.PeerID(), "--server", leaving.URL())
	if res.Code != 0 {
		t.Fatalf("hubmesh cluster remove %s: %s", removed.PeerID(), res)
	}
	for _, p := range []*nodetest.Process{leader, leaving} {
		nodetest.WaitStatus(t, p, 30*time.Second, "two members without the removed node", func(s nodetest.Status) bool {
			_, listed := s.Member(removed.PeerID())
			return !listed && len(s.Members) == 2 && s.Count("voter", "alive") == 2
		})
	}
	if st := nodetest.CLIStatus(t, leader); len(st.Members) != 2 {
		t.Errorf("cluster status after remove: %+v, want 2 members", st.Members)
	}

	res = nodetest.CLI(t, 0, nil, "cluster", "leave", "--server", leaving.URL())
	if res.Code != 0 {
		t.Fatalf("hubmesh cluster leave: %s", res)
	}
	st := nodetest.WaitStatus(t, leader, 30*time.Second, "only the leader listed", func(s nodetest.Status) bool {
		_, listed := s.Member(leaving.PeerID())
		return !listed && len(s.Members) == 1
	})
	if m := st.Members[0]; m.ID != leader.PeerID() || !m.Leader || m.Role != "voter" {
		t.Errorf("the remaining member is %+v, want the leader %s", m, leader.PeerID())
	}

	// The one-node cluster left behind still takes pushes.
	im := randomImage(t, 64<<10)
	reg := adminRegistry(leader)
	if err := reg.push(t.Context(), "mesh/alone", "1", im); err != nil {
		t.Fatalf("push to the remaining node: %v", err)
	}
	if err := reg.checkPulled(t.Context(), "mesh/alone", "1", im); err != nil {
		t.Fatal(err)
	}
}
