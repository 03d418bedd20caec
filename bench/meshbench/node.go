package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
)

// node is one `hubmesh serve` process started by the harness, in the root
// network namespace or in one the harness created.
type node struct {
	*proc.Process        // Name is n1, n2, ...
	ns            string // network namespace, "" for the harness's own
	dir           string
	addrFile      string
	base          string       // http://host:port, from the addr file
	id            string       // libp2p peer ID == Raft server ID
	hc            *http.Client // probes and status, dialling inside ns
	// user and password are the cluster administrator's credentials, which
	// the benchmark's clients and CLI runs use.
	user, password string
}

// nodeSpec says where a node listens and with which extra flags it runs.
type nodeSpec struct {
	ns       string
	httpAddr string // host:port
	p2pAddr  string // multiaddr
	args     []string
}

// startNode runs `hubmesh serve` for spec with its data under dir. It
// returns once the process is started; waitReady waits for it to serve.
// The process gets SIGTERM when ctx ends.
func startNode(ctx context.Context, bin, dir, name string, spec nodeSpec) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &node{
		ns: spec.ns, dir: dir,
		addrFile: filepath.Join(dir, "addr.json"),
		hc:       &http.Client{Timeout: 10 * time.Second, Transport: newTransport(spec.ns, 4)},
	}
	args := append([]string{"serve",
		"--data-dir", filepath.Join(dir, "data"),
		"--http-addr", spec.httpAddr,
		"--p2p-addr", spec.p2pAddr,
		"--addr-file", n.addrFile,
		"--log-level", "warn",
		"--log-format", "text",
	}, spec.args...)
	p, err := proc.Start(name, nsCommand(ctx, spec.ns, bin, args...), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	n.Process = p
	return n, nil
}

// nsCommand is bin args run inside network namespace ns (through `ip netns
// exec`, which execs bin in place: the process's PID is bin's), or directly
// when ns is "".
func nsCommand(ctx context.Context, ns, bin string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
}

// waitReady waits until the node has written its addr file and answers
// /readyz with 200, which a joining node does once it is a member.
func (n *node) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := n.Poll(ctx, func() (bool, error) {
		a, ok, err := proc.ReadAddrFile(n.addrFile)
		if !ok || err != nil {
			return false, err
		}
		if a.HTTP == "" || a.PeerID == "" {
			return false, fmt.Errorf("addr file %s: no http address or peer id", n.addrFile)
		}
		n.base, n.id = "http://"+a.HTTP, a.PeerID
		return true, nil
	})
	if err == nil {
		err = n.Poll(ctx, proc.HTTPReady(n.hc, n.base+"/readyz"))
	}
	if err != nil {
		return n.Fail(fmt.Errorf("not ready within %s: %w", timeout, err))
	}
	return nil
}

// clusterStatus is the part of GET /api/v1/cluster/status the harness
// reads.
type clusterStatus struct {
	ID      string `json:"id"`
	Leader  string `json:"leader"`
	Members []struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		State string `json:"state"`
	} `json:"members"`
	Blobs struct {
		Count int64 `json:"count"`
		Bytes int64 `json:"bytes"`
	} `json:"blobs"`
}

// status asks the node for its view of the cluster.
func (n *node) status(ctx context.Context) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/api/v1/cluster/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: GET /api/v1/cluster/status: %s: %s", n.Name, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: cluster status: %w", n.Name, err)
	}
	return st, nil
}
