package consensus

import (
	"errors"
	"fmt"
	"sync"
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

// TestForwardHeldBurst: several writes that the network held for minutes
// are all refused when it delivers them, none applied; the follower
// writes again at once afterwards.
func TestForwardHeldBurst(t *testing.T) {
	const forward = time.Second
	c := newCluster(t, 2, func(cfg *Config) { cfg.ForwardTimeout = forward })
	ctx := t.Context()
	leader, fs := c.leader()
	f := fs[0]
	if err := f.LinkBlob(ctx, "alice/app", blobDesc("before")); err != nil {
		t.Fatal(err)
	}

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
	if len(errs) == 0 {
		t.Fatal("the network held no write")
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
	if err := f.LinkBlob(ctx, "alice/app", blobDesc("after")); err != nil {
		t.Fatalf("write after the network healed: %v", err)
	}
}
