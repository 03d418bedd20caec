package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// cluster is a set of running nodes that form one hubmesh cluster.
type cluster struct {
	nodes []*node
}

// startCluster starts len(specs) nodes the way an operator does: node 1
// bootstraps, a voter token is taken from it with `hubmesh cluster
// join-token --server URL`, and the others run `hubmesh serve --join URL
// --join-token T`. It returns once every node lists all of them as alive
// voters and they agree on a leader. On error, the nodes started are
// stopped.
func startCluster(ctx context.Context, cfg config, dir string, specs []nodeSpec) (c *cluster, err error) {
	c = &cluster{}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.stop())
		}
	}()
	// The administrator's password, given to node 1, which bootstraps the
	// cluster (nodes that join have no use for it).
	password, pwFile, err := writeAdminPassword(dir)
	if err != nil {
		return c, err
	}
	spec := specs[0]
	spec.args = append(append([]string(nil), spec.args...), "--admin-password-file", pwFile)
	first, err := startNode(ctx, cfg.hubmesh, filepath.Join(dir, "n1"), "n1", spec)
	if err != nil {
		return c, err
	}
	first.user, first.password = adminUser, password
	c.nodes = append(c.nodes, first)
	if err := first.waitReady(ctx, cfg.startTimeout); err != nil {
		return c, err
	}
	if len(specs) > 1 {
		tok, err := joinToken(ctx, cfg.hubmesh, first)
		if err != nil {
			return c, err
		}
		for i, spec := range specs[1:] {
			name := fmt.Sprintf("n%d", i+2)
			spec.args = append(append([]string(nil), spec.args...), "--join", first.base, "--join-token", tok)
			n, err := startNode(ctx, cfg.hubmesh, filepath.Join(dir, name), name, spec)
			if err != nil {
				return c, err
			}
			n.user, n.password = adminUser, password
			c.nodes = append(c.nodes, n)
		}
		g, gctx := errgroup.WithContext(ctx)
		for _, n := range c.nodes[1:] {
			g.Go(func() error { return n.waitReady(gctx, cfg.startTimeout) })
		}
		if err := g.Wait(); err != nil {
			return c, err
		}
	}
	return c, c.waitFormed(ctx, cfg.startTimeout)
}

// joinToken runs the real CLI against node n (from inside its namespace)
// and returns the token it printed.
func joinToken(ctx context.Context, bin string, n *node) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := nsCommand(ctx, n.ns, bin, "cluster", "join-token", "--server", n.base)
	cmd.Env = append(cleanEnv(), "HUBMESH_USERNAME="+n.user, "HUBMESH_PASSWORD="+n.password)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	tok := strings.TrimSpace(string(out))
	if err == nil && (tok == "" || strings.ContainsAny(tok, " \n")) {
		err = fmt.Errorf("printed %q, want one token", out)
	}
	if err != nil {
		return "", fmt.Errorf("hubmesh cluster join-token --server %s: %w", n.base, err)
	}
	return tok, nil
}

// adminUser is the administrator a hubmesh cluster creates when it
// bootstraps.
const adminUser = "admin"

// writeAdminPassword writes a random password to dir/admin-password (mode
// 0600) and returns it and the file's path.
func writeAdminPassword(dir string) (password, path string, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	password = hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, "admin-password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write admin password: %w", err)
	}
	return password, path, nil
}

// cleanEnv is the harness's environment without HUBMESH_* variables, so
// that a developer's settings do not reach the CLI runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HUBMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitFormed waits until every node lists all nodes as alive voters and
// names the same leader.
func (c *cluster) waitFormed(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := len(c.nodes)
	var last string
	err := c.nodes[0].Poll(ctx, func() (bool, error) {
		leader := ""
		for _, n := range c.nodes {
			if err := n.Alive(); err != nil {
				return false, err
			}
			st, err := n.status(ctx)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			voters := 0
			for _, m := range st.Members {
				if m.Role == "voter" && m.State == "alive" {
					voters++
				}
			}
			if voters != want || len(st.Members) != want || st.Leader == "" || (leader != "" && st.Leader != leader) {
				last = fmt.Sprintf("%s sees %d alive voters of %d members, leader %q", n.Name, voters, len(st.Members), st.Leader)
				return false, nil
			}
			leader = st.Leader
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("cluster of %d not formed within %s (%s): %w", want, timeout, last, err)
	}
	return nil
}

// leader returns the node the first node names as leader.
func (c *cluster) leader(ctx context.Context) (*node, error) {
	st, err := c.nodes[0].status(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.nodes {
		if n.id == st.Leader {
			return n, nil
		}
	}
	return nil, fmt.Errorf("leader %q is none of the cluster's nodes", st.Leader)
}

// follower returns a node other than leader.
func (c *cluster) follower(leader *node) *node {
	for _, n := range c.nodes {
		if n != leader {
			return n
		}
	}
	return nil
}

// alive reports the first node that has exited.
func (c *cluster) alive() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.Alive())
	}
	return errors.Join(errs...)
}

// stop stops every node, the last started first.
func (c *cluster) stop() error {
	var errs []error
	for i := len(c.nodes) - 1; i >= 0; i-- {
		errs = append(errs, c.nodes[i].Stop())
	}
	return errors.Join(errs...)
}
