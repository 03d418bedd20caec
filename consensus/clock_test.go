package consensus

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// TestHandleRPCDeadline: the leader refuses a forwarded write whose
// deadline on its clock has passed, or that was set on another run's
// clock, and applies one in time; every member answers a clock request
// with its run's clock and epoch.
func TestHandleRPCDeadline(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	from := fs[0].ID()
	apply := func(blob, epoch string, deadline time.Duration) error {
		cmd, err := Encode(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{blobDesc(blob)}, Node: from})
		if err != nil {
			t.Fatal(err)
		}
		req, err := json.Marshal(&rpcRequest{Kind: rpcApply, Command: cmd, Deadline: int64(deadline), Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		_, err = leader.HandleRPC(ctx, from, req)
		return err
	}
	linked := func(blob string) bool {
		_, err := leader.Blob(ctx, blobDesc(blob).Digest)
		return err == nil
	}
	now := func() time.Duration { return time.Since(leader.clock.started) }
	epoch := leader.clock.epoch
	if err := apply("late", epoch, now()-time.Second); !errors.Is(err, hubmesh.ErrUnavailable) || linked("late") {
		t.Fatalf("write past its deadline: %v, linked %v; want unavailable, not linked", err, linked("late"))
	}
	if err := apply("other run", "0123456789abcdef", now()+time.Hour); !errors.Is(err, hubmesh.ErrUnavailable) || linked("other run") {
		t.Fatalf("write with another run's epoch: %v, linked %v; want unavailable, not linked", err, linked("other run"))
	}
	if err := apply("in time", epoch, now()+3*time.Second); err != nil || !linked("in time") {
		t.Fatalf("write in time: %v, linked %v", err, linked("in time"))
	}
	for _, pair := range [][2]*Node{{leader, fs[0]}, {fs[0], leader}} {
		n, caller := pair[0], pair[1]
		before := time.Since(n.clock.started)
		out, err := n.HandleRPC(ctx, caller.ID(), []byte(`{"kind":"clock"}`))
		var resp rpcResponse
		if err != nil || json.Unmarshal(out, &resp) != nil {
			t.Fatalf("clock of %s: %v", n.ID(), err)
		}
		if got := time.Duration(resp.Clock); resp.Epoch != n.clock.epoch || got < before || got > time.Since(n.clock.started) {
			t.Fatalf("clock of %s: %v in epoch %q; want between %v and now in %q", n.ID(), got, resp.Epoch, before, n.clock.epoch)
		}
	}
	if _, err := leader.HandleRPC(ctx, "stranger", []byte(`{"kind":"clock"}`)); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("clock request of a non-member: %v, want denied", err)
	}
}
