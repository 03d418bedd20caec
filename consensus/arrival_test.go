package consensus

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// TestArrivalsLateBy: a request is late when it arrives more than its
// budget after the fastest recent one from the same caller, whatever the
// offset between the two clocks; a caller without recent requests is
// judged with the clocks taken as equal.
func TestArrivalsLateBy(t *testing.T) {
	const budget = 3 * time.Second
	t0 := time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC)
	transit := 2 * time.Millisecond
	type req struct {
		at     time.Duration // leader clock, after t0
		offset time.Duration // caller clock minus leader clock
		delay  time.Duration // transit on top of the usual
		late   bool
	}
	for _, tc := range []struct {
		name string
		reqs []req
	}{
		{"same clocks", []req{{at: 0}, {at: time.Second}, {at: 2 * time.Second, delay: 10 * time.Second, late: true}, {at: 3 * time.Second}}},
		{"unknown caller delayed", []req{{at: 0, delay: 10 * time.Second, late: true}}},
		{"caller ahead", []req{{at: 0, offset: 10 * time.Second}, {at: time.Second, offset: 10 * time.Second, delay: 5 * time.Second, late: true}}},
		// Behind by more than the budget: the first request looks late;
		// from then on the offset is known.
		{"caller behind", []req{
			{at: 0, offset: -10 * time.Second, late: true},
			{at: time.Second, offset: -10 * time.Second},
			{at: 2 * time.Second, offset: -10 * time.Second, delay: 4 * time.Second, late: true},
			{at: 3 * time.Second, offset: -10 * time.Second, delay: 2 * time.Second},
		}},
		// The caller's clock steps back 5 s: its requests look late until
		// the old minimum has left the window.
		{"clock step back", []req{
			{at: 0},
			{at: 90 * time.Second, offset: -5 * time.Second, late: true},
			{at: 150 * time.Second, offset: -5 * time.Second},
		}},
		// Silent for two windows: judged as unknown again.
		{"forgotten", []req{{at: 0, offset: -10 * time.Second, late: true}, {at: 3 * arrivalWindow, offset: -10 * time.Second, late: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a arrivals
			for i, r := range tc.reqs {
				now := t0.Add(r.at)
				sent := now.Add(r.offset).Add(-transit - r.delay)
				late := a.lateBy("node-2", now, sent, sent.Add(budget))
				if (late >= 0) != r.late {
					t.Fatalf("request %d: late by %v, want late %v", i, late, r.late)
				}
			}
		})
	}
}

// TestHandleRPCLateRequest: the leader refuses a forwarded write that
// arrives after its caller's deadline, judged against the caller's clock
// offset learnt from its earlier requests, and applies those in time.
func TestHandleRPCLateRequest(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	from := fs[0].ID()
	apply := func(blob string, sent time.Time) error {
		cmd, err := Encode(&LinkBlobs{Repo: "alice/app", Blobs: []hubmesh.Descriptor{blobDesc(blob)}, Node: from})
		if err != nil {
			t.Fatal(err)
		}
		req, err := json.Marshal(&rpcRequest{Kind: rpcApply, Command: cmd, Sent: sent.UnixNano(), Deadline: sent.Add(3 * time.Second).UnixNano()})
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
	behind := -20 * time.Second // the follower's clock
	if err := apply("first", time.Now().Add(behind)); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Fatalf("first request of a caller whose clock is 20 s behind: %v, want unavailable (clocks taken as equal)", err)
	}
	if err := apply("second", time.Now().Add(behind)); err != nil || !linked("second") {
		t.Fatalf("second request, offset known: %v, linked %v", err, linked("second"))
	}
	if err := apply("delayed", time.Now().Add(behind).Add(-5*time.Second)); !errors.Is(err, hubmesh.ErrUnavailable) || linked("delayed") {
		t.Fatalf("request delayed 5 s past its 3 s budget: %v, linked %v; want unavailable, not linked", err, linked("delayed"))
	}
	if linked("first") {
		t.Fatal("the refused first request was applied")
	}
}
