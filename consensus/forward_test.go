package consensus

import (
	"testing"
	"time"
)

// TestForwardLeavesFrozenLeader: a write forwarded to a leader that is cut
// off without its connections failing (a frozen process, a partition that
// drops packets) is retried on the leader the others elect, instead of
// waiting for the frozen one until the forwarding deadline.
func TestForwardLeavesFrozenLeader(t *testing.T) {
	const forward = 10 * time.Second
	c := newCluster(t, 3, func(cfg *Config) { cfg.ForwardTimeout = forward })
	ctx := t.Context()
	old, fs := c.leader()
	layer := blobDesc("layer")

	c.tcp.isolate(old.ID(), true)
	c.rpc.freeze(old.ID(), true)
	start := time.Now()
	// The follower still takes old for the leader: the write goes there
	// first and hangs until the follower learns of the new leader.
	if err := fs[0].LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatalf("write through a follower while the leader is frozen: %v", err)
	}
	took := time.Since(start)
	t.Logf("the forwarded write committed %v after the leader froze", took)
	if took > forward/2 {
		t.Fatalf("the forwarded write took %v: it waited for the frozen leader", took)
	}
	if id, _ := fs[0].Leader(); id == old.ID() {
		t.Fatalf("the follower still names the frozen node as leader")
	}
}
