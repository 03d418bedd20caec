package consensus

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// TestHandleRPCDeadline: the leader refuses a forwarded write whose
// deadline (on its clock) has passed and applies one in time; any member
// answers a clock request with its clock.
func TestHandleRPCDeadline(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	from := fs[0].ID()
	apply := func(blob string, deadline time.Time) error {
		cmd, err := Encode(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{blobDesc(blob)}, Node: from})
		if err != nil {
			t.Fatal(err)
		}
		req, err := json.Marshal(&rpcRequest{Kind: rpcApply, Command: cmd, Deadline: deadline.UnixNano()})
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
	if err := apply("late", time.Now().Add(-time.Second)); !errors.Is(err, hubmesh.ErrUnavailable) || linked("late") {
		t.Fatalf("write past its deadline: %v, linked %v; want unavailable, not linked", err, linked("late"))
	}
	if err := apply("in time", time.Now().Add(3*time.Second)); err != nil || !linked("in time") {
		t.Fatalf("write in time: %v, linked %v", err, linked("in time"))
	}
	for _, n := range []*Node{leader, fs[0]} {
		before := time.Now()
		out, err := n.HandleRPC(ctx, c.nodes["node-1"].ID(), []byte(`{"kind":"clock"}`))
		if n == c.nodes["node-1"] {
			out, err = n.HandleRPC(ctx, c.nodes["node-2"].ID(), []byte(`{"kind":"clock"}`))
		}
		var resp rpcResponse
		if err != nil || json.Unmarshal(out, &resp) != nil {
			t.Fatalf("clock from %s: %v", n.ID(), err)
		}
		if got := time.Unix(0, resp.Clock); got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
			t.Fatalf("clock from %s: %v, now %v", n.ID(), got, time.Now())
		}
	}
}
