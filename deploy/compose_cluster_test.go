package deploy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// TestComposeCluster runs deploy/docker-compose.yml: three voters from the
// project image join one cluster by themselves; an image pushed with the
// docker CLI to node 1 pulls from node 3. With the leader's container
// stopped, the other two elect a leader and go on taking pushes and
// serving pulls; started again, the old leader catches up and serves what
// was pushed while it was down.
func TestComposeCluster(t *testing.T) {
	c := startCompose(t)
	if c == nil {
		return
	}
	first := c.push("node1", "alice/app:1")
	c.pull("node3", first)

	// The leader every node agrees on (on a busy machine an election may
	// be under way right after a push).
	st := c.waitFormed(composeServices...)
	oldLeader := st.Leader
	down := serviceOf(st, oldLeader)
	if down == "" {
		t.Fatalf("leader %s has no nodeN:5000 address in %+v", oldLeader, st.Members)
	}
	rest := others(down)
	stopped := time.Now()
	c.composeRun("stop", "--timeout", "20", down)
	if code := c.dockerRun("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.container(down)); code != "exited 0" {
		t.Fatalf("leader %s after docker-compose stop: %s, want exited 0", down, code)
	}

	var newLeader nodetest.Status
	eventually(t, 30*time.Second, "a new leader on "+rest[0]+" and "+rest[1], func(ctx context.Context) error {
		lead := ""
		for _, s := range rest {
			addr, err := c.addrTry(ctx, s)
			if err != nil {
				return err
			}
			st, err := status(ctx, addr)
			if err != nil {
				return err
			}
			if st.Leader == "" || st.Leader == oldLeader {
				return fmt.Errorf("%s sees leader %q", s, st.Leader)
			}
			if lead != "" && st.Leader != lead {
				return fmt.Errorf("%s sees leader %s, %s sees %s", s, st.Leader, rest[0], lead)
			}
			lead = st.Leader
			newLeader = st
		}
		return nil
	})
	t.Logf("stopped the leader %s; %s leads %s later", down, serviceOf(newLeader, newLeader.Leader), time.Since(stopped).Round(time.Millisecond))

	// Pushes and pulls go on through both remaining nodes, and what was
	// pushed before still pulls from each of them.
	second := c.push(rest[0], "alice/app:2")
	c.pull(rest[1], second)
	third := c.push(rest[1], "bob/tool:1")
	c.pull(rest[0], third)
	for _, s := range rest {
		c.pull(s, first)
	}

	st, err := status(t.Context(), c.addr(serviceOf(newLeader, newLeader.Leader)))
	if err != nil {
		t.Fatal(err)
	}
	target := st.Raft.AppliedIndex

	restarted := time.Now()
	c.composeRun("start", down)
	c.waitCaughtUp(down, target, 60*time.Second)
	t.Logf("%s started again and applied index %d within %s", down, target, time.Since(restarted).Round(time.Millisecond))
	c.waitFormed(composeServices...)

	// The restarted node serves what was pushed while it was down, and
	// takes pushes again.
	c.pull(down, second)
	c.pull(down, third)
	fourth := c.push(down, "alice/app:3")
	for _, s := range rest {
		c.pull(s, fourth)
	}
}
