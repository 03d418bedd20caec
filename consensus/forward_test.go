package consensus

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
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

// TestForwardDelayedPastDeadline: a forwarded write that the network
// delivers only after its caller gave up (the caller answered 503) is
// refused by the leader, so a write reported as failed does not happen
// later when a partition heals.
func TestForwardDelayedPastDeadline(t *testing.T) {
	const forward = time.Second
	c := newCluster(t, 2, func(cfg *Config) { cfg.ForwardTimeout = forward })
	ctx := t.Context()
	leader, fs := c.leader()
	layer := blobDesc("late layer")
	// A write in time first: the follower has measured the leader's clock.
	if err := fs[0].LinkBlob(ctx, "alice/app", blobDesc("in time")); err != nil {
		t.Fatal(err)
	}

	c.rpc.hold(leader.ID())
	err := fs[0].LinkBlob(ctx, "alice/app", layer)
	if !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("write through a follower whose requests the network holds: %v, want unavailable", err)
	}
	// The network delivers the request 10 s after it was sent.
	errs, err := c.rpc.release(ctx, leader.ID(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) == 0 {
		t.Fatal("the network held no request")
	}
	for i, err := range errs {
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Errorf("held request %d delivered after its deadline: %v, want unavailable", i, err)
		}
	}
	if _, err := leader.Blob(ctx, layer.Digest); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Fatalf("blob of the refused write on the leader: %v, want unknown", err)
	}
	// The same write, delivered in time, goes through.
	if err := fs[0].LinkBlob(ctx, "alice/app", layer); err != nil {
		t.Fatalf("the write again once the network delivers: %v", err)
	}
	if _, err := leader.Blob(ctx, layer.Digest); err != nil {
		t.Fatalf("blob after the write went through: %v", err)
	}
}

// TestForwardSkewedClocks: nodes whose wall clocks disagree by far more
// than the forwarding timeout forward writes normally (the follower
// measures the leader's clock); writes held by the network for minutes
// are all refused however many there were; after the leader's clock
// steps forward, the next write still goes through.
func TestForwardSkewedClocks(t *testing.T) {
	const forward = time.Second
	var step atomic.Int64 // the leader's clock step, in nanoseconds
	c := newCluster(t, 2, func(cfg *Config) {
		cfg.ForwardTimeout = forward
		switch cfg.NodeID {
		case "node-1":
			cfg.clock = func() time.Time { return time.Now().Add(20*time.Second + time.Duration(step.Load())) }
		default:
			cfg.clock = func() time.Time { return time.Now().Add(-20 * time.Second) }
		}
	})
	ctx := t.Context()
	leader, fs := c.leader()
	f := fs[0]
	for i := range 3 {
		b := blobDesc(fmt.Sprintf("skewed %d", i))
		if err := f.LinkBlob(ctx, "alice/app", b); err != nil {
			t.Fatalf("write %d through the follower, clocks 40 s apart: %v", i, err)
		}
	}

	// Three writes at once, held by the network for five minutes.
	c.rpc.hold(leader.ID())
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if err := f.LinkBlob(ctx, "alice/app", blobDesc(fmt.Sprintf("held %d", i))); !errors.Is(err, hubmesh.ErrUnavailable) {
				t.Errorf("held write %d: %v, want unavailable", i, err)
			}
		})
	}
	wg.Wait()
	errs, err := c.rpc.release(ctx, leader.ID(), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 3 {
		t.Fatalf("the network held %d writes, want 3", len(errs))
	}
	for i, err := range errs {
		if !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Errorf("held write %d delivered 5 min late: %v, want unavailable", i, err)
		}
	}
	for i := range 3 {
		if _, err := leader.Blob(ctx, blobDesc(fmt.Sprintf("held %d", i)).Digest); !errors.Is(err, hubmesh.ErrBlobUnknown) {
			t.Fatalf("held write %d applied: %v", i, err)
		}
	}

	// The leader's clock steps 10 s forward: the follower's measurement is
	// stale; the refused attempt makes it measure again.
	step.Store(int64(10 * time.Second))
	if err := f.LinkBlob(ctx, "alice/app", blobDesc("after the step")); err != nil {
		t.Fatalf("write after the leader's clock stepped: %v", err)
	}
}
