package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// Cluster deadlines.
const (
	// DefaultCLITimeout bounds one run of a hubmesh CLI command.
	DefaultCLITimeout = 30 * time.Second
	// DefaultClusterTimeout bounds the wait for a cluster to settle: every
	// member alive and one leader agreed on.
	DefaultClusterTimeout = 60 * time.Second
	// statusTimeout bounds one GET /api/v1/cluster/status. A node probes
	// unreachable members for up to a second before it answers.
	statusTimeout = 10 * time.Second
	// clusterPoll paces the status polls of the cluster waits.
	clusterPoll = 50 * time.Millisecond
)

// Member is one node as `hubmesh cluster status --json` lists it.
type Member struct {
	ID     string   `json:"id"`
	Role   string   `json:"role"` // voter or nonvoter
	Leader bool     `json:"leader"`
	HTTP   string   `json:"http"`
	P2P    []string `json:"p2p"`
	State  string   `json:"state"` // alive, unreachable or joining
}

// Status is the answer of GET /api/v1/cluster/status, which `hubmesh
// cluster status --json` prints. It is declared here, from the wire
// format, so that the harness links none of the node's packages.
type Status struct {
	ClusterID string `json:"cluster_id"`
	ID        string `json:"id"`
	Leader    string `json:"leader"`
	Healthy   bool   `json:"healthy"`
	Raft      struct {
		State        string `json:"state"`
		Term         uint64 `json:"term"`
		LastIndex    uint64 `json:"last_index"`
		AppliedIndex uint64 `json:"applied_index"`
	} `json:"raft"`
	// Blobs counts what the answering node holds in its own store.
	Blobs struct {
		Count int64 `json:"count"`
		Bytes int64 `json:"bytes"`
	} `json:"blobs"`
	Members []Member `json:"members"`
}

// Member returns the member with the given ID.
func (s Status) Member(id string) (Member, bool) {
	i := slices.IndexFunc(s.Members, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return Member{}, false
	}
	return s.Members[i], true
}

// Count is how many members have the role and the state; "" matches any.
func (s Status) Count(role, state string) int {
	n := 0
	for _, m := range s.Members {
		if (role == "" || m.Role == role) && (state == "" || m.State == state) {
			n++
		}
	}
	return n
}

// CLIResult is what one run of the hubmesh CLI printed and how it exited.
type CLIResult struct {
	Stdout, Stderr string
	// Code is the exit code; -1 when the process was ended by a signal
	// (for example at the deadline).
	Code int
}

func (r CLIResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
}

// CLI runs the hubmesh binary with args under timeout (DefaultCLITimeout
// if 0), in the test's environment minus every HUBMESH_* variable plus env.
// When args (--server) or env (HUBMESH_SERVER) name a node the harness
// runs and env holds no HUBMESH_USERNAME, HUBMESH_PASSWORD or
// HUBMESH_TOKEN, the command runs as that node's administrator (see
// Process.Admin); pass "HUBMESH_USERNAME=" in env to run it anonymously.
// It fails the test only when the binary could not be run at all; a
// non-zero exit is reported in the result.
func CLI(t testing.TB, timeout time.Duration, env []string, args ...string) CLIResult {
	t.Helper()
	return CLIStdin(t, timeout, env, "", args...)
}

// CLIStdin is CLI with stdin as the command's standard input, for
// --password-stdin.
func CLIStdin(t testing.TB, timeout time.Duration, env []string, stdin string, args ...string) CLIResult {
	t.Helper()
	if timeout == 0 {
		timeout = DefaultCLITimeout
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	cmd.Env = append(cleanEnv(), withAdmin(env, args)...)
	cmd.Dir = t.TempDir()
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout = &o
	cmd.Stderr = &e
	err := cmd.Run()
	res := CLIResult{Stdout: o.String(), Stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("hubmesh %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("hubmesh %s: no exit within %s: %s", strings.Join(args, " "), timeout, res)
	}
	return res
}

// JoinToken runs `hubmesh cluster join-token --server <p> [args...]` (for
// example "--role", "mirror" or "--ttl", "1s") and returns the token it
// printed. It fails the test if the command fails.
func JoinToken(t testing.TB, p *Process, args ...string) string {
	t.Helper()
	res := CLI(t, 0, nil, append([]string{"cluster", "join-token", "--server", p.URL()}, args...)...)
	tok := strings.TrimSpace(res.Stdout)
	if res.Code != 0 || tok == "" || strings.ContainsAny(tok, " \n") {
		t.Fatalf("hubmesh cluster join-token: %s; want exit 0 and one token", res)
	}
	return tok
}

// Join starts a node that joins the cluster through via with token
// (`--join <via> --join-token <token>`, appended to opts.Args) and waits
// until it is ready, which it is once it has joined and knows the leader.
// On restarts the same flags are passed; a node that has state ignores them.
// Unless opts sets one, the node gets via's administrator password, so that
// Admin of any node of a cluster returns the cluster's credentials.
func Join(t testing.TB, via *Process, token string, opts Options) *Process {
	t.Helper()
	if opts.AdminPassword == "" && !opts.NoAdminPassword {
		opts.AdminPassword = via.opts.AdminPassword
		opts.NoAdminPassword = via.opts.NoAdminPassword
	}
	opts.Args = append(slices.Clone(opts.Args), "--join", via.URL(), "--join-token", token)
	return Start(t, opts)
}

// StartCluster starts n nodes with opts (each gets its own data dir): node
// 1 bootstraps a cluster, a voter token is taken from it with the real CLI,
// and nodes 2..n join through node 1. Every node gets the same
// administrator password (opts.AdminPassword, or a random one). It returns once every node lists n
// alive voters and they agree on one leader. The nodes are in start order;
// Leader finds which one leads.
func StartCluster(t testing.TB, n int, opts Options) []*Process {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartCluster: n = %d, want at least 1", n)
	}
	opts.DataDir = ""
	if opts.AdminPassword == "" && !opts.NoAdminPassword {
		opts.AdminPassword = newPassword(t)
	}
	procs := []*Process{Start(t, opts)}
	if n > 1 {
		tok := JoinToken(t, procs[0])
		for range n - 1 {
			procs = append(procs, Join(t, procs[0], tok, opts))
		}
	}
	for _, p := range procs {
		WaitStatus(t, p, DefaultClusterTimeout, fmt.Sprintf("%d alive voters", n), func(s Status) bool {
			return s.Count("voter", "alive") == n && len(s.Members) == n
		})
	}
	Leader(t, procs, DefaultClusterTimeout)
	return procs
}

// Status asks the node for GET /api/v1/cluster/status.
func (p *Process) Status(ctx context.Context) (Status, error) {
	return GetStatus(ctx, p.URL())
}

// GetStatus asks the node at base (such as "http://127.0.0.1:5000") for
// GET /api/v1/cluster/status, bounding the request to statusTimeout. It
// serves nodes the harness did not start, such as containers.
func GetStatus(ctx context.Context, base string) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var st Status
	url := base + "/api/v1/cluster/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s: %w: %s", url, err, b)
	}
	return st, nil
}

// CLIStatus runs `hubmesh cluster status --json --server <p>` and decodes
// what it printed. It fails the test if the command fails or prints
// something else than the status.
func CLIStatus(t testing.TB, p *Process) Status {
	t.Helper()
	res := CLI(t, 0, nil, "cluster", "status", "--json", "--server", p.URL())
	if res.Code != 0 {
		t.Fatalf("hubmesh cluster status --json: %s", res)
	}
	var st Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatalf("hubmesh cluster status --json printed no status: %v: %s", err, res.Stdout)
	}
	return st
}

// WaitStatus polls the node's status until cond holds, for at most timeout,
// and returns the status that satisfied it. It fails the test with what and
// the last status (or error) at the deadline.
func WaitStatus(t testing.TB, p *Process, timeout time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(clusterPoll)
	defer tick.Stop()
	var last string
	for {
		st, err := p.Status(ctx)
		if err == nil && cond(st) {
			return st
		}
		if err != nil {
			last = err.Error()
		} else {
			b, _ := json.Marshal(st)
			last = string(b)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no %s within %s; last status: %s", p.URL(), what, timeout, last)
			return Status{}
		case <-tick.C:
		}
	}
}

// Leader polls the running nodes among procs until every one of them
// names the same leader, and that leader is one of the running procs,
// for at most timeout. It returns the leading process.
func Leader(t testing.TB, procs []*Process, timeout time.Duration) *Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(clusterPoll)
	defer tick.Stop()
	var last []string
	for {
		leader, seen := agreedLeader(ctx, procs)
		if leader != nil {
			return leader
		}
		last = seen
		select {
		case <-ctx.Done():
			t.Fatalf("the nodes did not agree on a running leader within %s; they said: %s", timeout, strings.Join(last, "; "))
			return nil
		case <-tick.C:
		}
	}
}

// agreedLeader returns the process all running procs name as leader, or
// nil with what each said.
func agreedLeader(ctx context.Context, procs []*Process) (*Process, []string) {
	var (
		seen   []string
		leader string
		agreed = true
		asked  int
	)
	for _, p := range procs {
		if !p.Running() {
			continue
		}
		asked++
		st, err := p.Status(ctx)
		switch {
		case err != nil:
			seen = append(seen, fmt.Sprintf("%s: %v", p.URL(), err))
			agreed = false
		case st.Leader == "" || (leader != "" && st.Leader != leader):
			seen = append(seen, fmt.Sprintf("%s: leader %q", p.URL(), st.Leader))
			agreed = false
		default:
			leader = st.Leader
			seen = append(seen, fmt.Sprintf("%s: leader %q", p.URL(), st.Leader))
		}
	}
	if !agreed || asked == 0 {
		return nil, seen
	}
	for _, p := range procs {
		if p.Running() && p.PeerID() == leader {
			return p, seen
		}
	}
	return nil, append(seen, "the leader is none of the running nodes")
}
