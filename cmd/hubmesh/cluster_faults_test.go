package main_test

// Fault tests on a cluster of real processes: SIGKILL of the leader during
// a stream of pushes, of a node holding replicas, and of a majority.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// writesResumeWithin is the bound on how long a cluster refuses
// writes after its leader is killed. It holds for a frozen leader too,
// whose connections stay open: forwarded writes and replication requests
// stuck on it are moved to the other nodes.
const writesResumeWithin = 5 * time.Second

// clusterPush is one push of a concurrent stream.
type clusterPush struct {
	via       *nodetest.Process
	repo, tag string
	im        image
	acked     bool // the manifest PUT answered 201
}

// pushStream runs pushers, each pushing fresh images through its node
// until stop is closed or its node is killed. Images are made up front,
// since t.Fatal cannot run in a worker.
type pushStream struct {
	mu     sync.Mutex
	pushes []*clusterPush
	acked  int
	cond   chan struct{} // closed and replaced whenever a push is acked
	wg     sync.WaitGroup
	stop   context.CancelFunc
}

// startPushStream starts one pusher per entry of via.
func startPushStream(t *testing.T, name string, via []*nodetest.Process, perWorker int) *pushStream {
	ctx, stop := context.WithCancel(t.Context())
	s := &pushStream{stop: stop, cond: make(chan struct{})}
	for w, p := range via {
		images := make([]image, perWorker)
		for i := range images {
			images[i] = randomImage(t, 16<<10+w*4096+i*512)
		}
		reg := adminRegistry(p)
		s.wg.Go(func() {
			for i := 0; i < perWorker && ctx.Err() == nil; i++ {
				push := &clusterPush{via: p, repo: fmt.Sprintf("%s/w%d", name, w), tag: fmt.Sprintf("t%d", i), im: images[i]}
				s.mu.Lock()
				s.pushes = append(s.pushes, push)
				s.mu.Unlock()
				err := reg.push(ctx, push.repo, push.tag, push.im)
				if err != nil {
					if !p.Running() {
						return // its node is gone
					}
					continue // refused while the cluster elects a leader: push the next one
				}
				s.mu.Lock()
				push.acked = true
				s.acked++
				close(s.cond)
				s.cond = make(chan struct{})
				s.mu.Unlock()
			}
		})
	}
	return s
}

// waitAcked waits until n pushes in all were acknowledged.
func (s *pushStream) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		acked, cond := s.acked, s.cond
		s.mu.Unlock()
		if acked >= n {
			return
		}
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("only %d of %d pushes acknowledged within %s", acked, n, timeout)
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}

// finish stops the pushers and waits for them.
func (s *pushStream) finish() []*clusterPush {
	s.stop()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pushes)
}

// requireAckedEverywhere pulls every acknowledged push through every node
// in procs, byte for byte, and checks that an unacknowledged push is served
// whole or not at all.
func requireAckedEverywhere(t *testing.T, pushes []*clusterPush, procs []*nodetest.Process) {
	t.Helper()
	ctx := t.Context()
	acked := 0
	for _, p := range procs {
		reg := adminRegistry(p)
		for _, push := range pushes {
			if push.acked {
				acked++
				if err := reg.checkPulled(ctx, push.repo, push.tag, push.im); err != nil {
					t.Errorf("acknowledged push %s:%s (through %s), pulled through %s: %v", push.repo, push.tag, push.via.URL(), p.URL(), err)
				}
				continue
			}
			r, err := reg.do(ctx, http.MethodGet, "/v2/"+push.repo+"/manifests/"+push.tag, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch r.Status {
			case http.StatusNotFound:
			case http.StatusOK:
				if err := reg.checkPulled(ctx, push.repo, push.tag, push.im); err != nil {
					t.Errorf("unacknowledged push %s:%s is served through %s but not whole: %v", push.repo, push.tag, p.URL(), err)
				}
			default:
				t.Errorf("GET %s:%s through %s: %s, want 200 or 404", push.repo, push.tag, p.URL(), r)
			}
		}
	}
	t.Logf("%d acknowledged pushes checked on %d nodes", acked/max(1, len(procs)), len(procs))
}

// probeWrite pushes a fresh image through the nodes in turn until one
// manifest PUT answers 201, for at most limit. Each attempt is bounded, so
// a hanging request counts against the limit. It returns when the write
// succeeded, or the zero time if none did.
func probeWrite(t *testing.T, via []*nodetest.Process, repo string, limit time.Duration) (time.Time, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	images := make([]image, 64)
	for i := range images {
		images[i] = randomImage(t, 8<<10)
	}
	var failures []string
	for i := 0; ctx.Err() == nil && i < len(images); i++ {
		p := via[i%len(via)]
		reg := adminRegistry(p)
		reg.client = &http.Client{} // each attempt is bounded by ctx
		err := reg.push(ctx, repo, fmt.Sprintf("probe%d", i), images[i])
		if err == nil {
			return time.Now(), failures
		}
		failures = append(failures, fmt.Sprintf("%s: %v", p.URL(), err))
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // pace the retries; the deadline is ctx's
		}
	}
	return time.Time{}, failures
}

// requireWritesResume probes writes through via (see probeWrite) and
// fails the test unless one succeeds within writesResumeWithin of since,
// the moment the event happened.
func requireWritesResume(t *testing.T, via []*nodetest.Process, repo string, since time.Time, event string) {
	t.Helper()
	resumed, failures := probeWrite(t, via, repo, time.Minute)
	if resumed.IsZero() {
		t.Fatalf("no write succeeded within a minute after %s; attempts:\n%v", event, failures)
	}
	took := resumed.Sub(since)
	t.Logf("writes resumed %s after %s (%d refused attempts)", took.Round(time.Millisecond), event, len(failures))
	if took > writesResumeWithin {
		t.Errorf("writes resumed %s after %s, want within %s; refused attempts:\n%v", took.Round(time.Millisecond), event, writesResumeWithin, failures)
	}
}

// TestClusterKillLeader kills the leader with SIGKILL while pushers stream
// images through every node: every acknowledged push pulls byte-identical
// through the survivors, a write through a survivor succeeds within 5 s of
// the kill, and the killed node, restarted, catches up.
func TestClusterKillLeader(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	leader := nodetest.Leader(t, procs, time.Minute)
	survivors := followers(procs, leader)
	// Two pushers through each survivor, one through the leader.
	via := []*nodetest.Process{leader, survivors[0], survivors[1], survivors[0], survivors[1]}
	stream := startPushStream(t, "kill-leader", via, 40)
	stream.waitAcked(t, 8, 2*time.Minute)

	killed := time.Now()
	leader.Kill()
	requireWritesResume(t, survivors, "kill-leader/probe", killed, "the leader was killed")
	// Let the stream go on through the new leader for a while.
	stream.mu.Lock()
	before := stream.acked
	stream.mu.Unlock()
	stream.waitAcked(t, before+6, time.Minute)
	pushes := stream.finish()

	newLeader := nodetest.Leader(t, survivors, time.Minute)
	t.Logf("new leader %s", newLeader.URL())
	requireAckedEverywhere(t, pushes, survivors)

	t.Run("restarted node catches up", func(t *testing.T) {
		leader.Restart()
		nodetest.WaitStatus(t, newLeader, time.Minute, "three alive voters", func(s nodetest.Status) bool {
			return s.Count("voter", "alive") == 3
		})
		requireAckedEverywhere(t, pushes, []*nodetest.Process{leader})
		// And it takes part in writes again.
		im := randomImage(t, 32<<10)
		if err := adminRegistry(leader).push(t.Context(), "kill-leader/after", "1", im); err != nil {
			t.Fatalf("push through the restarted node: %v", err)
		}
		requirePulledEverywhere(t, procs, "kill-leader/after", "1", im)
	})
}

// TestClusterKillReplicaHolder pushes images through one follower, which
// therefore holds a replica of every blob (R=2, the default), kills it
// with SIGKILL, and pulls every image through the two survivors.
func TestClusterKillReplicaHolder(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	leader := nodetest.Leader(t, procs, time.Minute)
	holder := followers(procs, leader)[0]
	reg := adminRegistry(holder)
	type pushed struct {
		repo string
		im   image
	}
	var images []pushed
	for i := range 5 {
		p := pushed{fmt.Sprintf("replicas/app%d", i), randomImage(t, 100<<10+i*1000)}
		if err := reg.push(t.Context(), p.repo, "v1", p.im); err != nil {
			t.Fatalf("push through %s: %v", holder.URL(), err)
		}
		images = append(images, p)
	}
	// Its own store holds every layer and config pushed through it.
	st, err := holder.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs.Count < int64(2*len(images)) {
		t.Fatalf("the node pushed through holds %d blobs, want at least %d", st.Blobs.Count, 2*len(images))
	}

	holder.Kill()
	survivors := followers(procs, holder)
	for _, p := range survivors {
		for _, im := range images {
			if err := adminRegistry(p).checkPulled(t.Context(), im.repo, "v1", im.im); err != nil {
				t.Errorf("after the replica holder was killed, pull through %s: %v", p.URL(), err)
			}
		}
	}
}

// TestClusterNoQuorum kills two of three nodes: the survivor still serves
// pulls of what it holds, and refuses writes quickly with 503 and
// Retry-After instead of hanging.
func TestClusterNoQuorum(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	survivor := procs[2]
	sreg := adminRegistry(survivor)
	ctx := t.Context()

	own := randomImage(t, 128<<10) // pushed through the survivor: its blobs are there
	if err := sreg.push(ctx, "quorum/own", "1", own); err != nil {
		t.Fatal(err)
	}
	fetched := randomImage(t, 128<<10) // pushed elsewhere, pulled (and kept) by the survivor
	if err := adminRegistry(procs[0]).push(ctx, "quorum/fetched", "1", fetched); err != nil {
		t.Fatal(err)
	}
	if err := sreg.checkPulled(ctx, "quorum/fetched", "1", fetched); err != nil {
		t.Fatal(err)
	}

	procs[0].Kill()
	procs[1].Kill()

	t.Run("pulls", func(t *testing.T) {
		for _, c := range []struct {
			repo string
			im   image
		}{{"quorum/own", own}, {"quorum/fetched", fetched}} {
			if err := sreg.checkPulled(ctx, c.repo, "1", c.im); err != nil {
				t.Errorf("pull through the survivor without quorum: %v", err)
			}
			// By digest too, and the blob HEAD a client checks first.
			r, err := sreg.do(ctx, http.MethodGet, "/v2/"+c.repo+"/manifests/"+c.im.Digest().String(), nil, nil)
			if err != nil || r.Status != http.StatusOK {
				t.Errorf("GET %s@%s without quorum: %v %s", c.repo, c.im.Digest(), err, r)
			}
			r, err = sreg.do(ctx, http.MethodHead, "/v2/"+c.repo+"/blobs/"+c.im.LayerDesc.Digest.String(), nil, nil)
			if err != nil || r.Status != http.StatusOK {
				t.Errorf("HEAD blob %s@%s without quorum: %v %s", c.repo, c.im.LayerDesc.Digest, err, r)
			}
		}
	})

	// Each write must answer, with 503 and Retry-After, well within the
	// client's patience: a hang shows as the client's timeout.
	const patience = 15 * time.Second
	client := adminRegistry(survivor)
	client.client = &http.Client{Timeout: patience}
	require503 := func(t *testing.T, what string, do func() (response, error)) {
		t.Helper()
		start := time.Now()
		r, err := do()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s without quorum: no answer after %s: %v", what, took.Round(time.Millisecond), err)
		}
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Fatalf("%s without quorum: %s, Retry-After %q; want 503 with Retry-After", what, r, r.Header.Get("Retry-After"))
		}
		if !slices.Contains(r.Codes(), "UNAVAILABLE") {
			t.Errorf("%s without quorum: error codes %v, want UNAVAILABLE", what, r.Codes())
		}
		t.Logf("%s refused in %s: %s (Retry-After %s)", what, took.Round(time.Millisecond), r, r.Header.Get("Retry-After"))
	}

	t.Run("blob push", func(t *testing.T) {
		blob := randomBytes(t, 64<<10)
		require503(t, "blob upload", func() (response, error) {
			r, err := client.do(ctx, http.MethodPost, "/v2/quorum/new/blobs/uploads/", nil, nil)
			if err != nil || r.Status == http.StatusServiceUnavailable {
				return r, err // refused at the start already
			}
			if r.Status != http.StatusAccepted {
				return r, fmt.Errorf("POST upload: %s, want 202 or 503", r)
			}
			loc, err := withQuery(r.Header.Get("Location"), "digest", digest.FromBytes(blob).String())
			if err != nil {
				return r, err
			}
			return client.do(ctx, http.MethodPut, loc, http.Header{"Content-Type": {"application/octet-stream"}}, bytes.NewReader(blob))
		})
	})
	t.Run("manifest push", func(t *testing.T) {
		// Every blob is on the survivor already: only the commit is refused.
		require503(t, "manifest PUT", func() (response, error) {
			return client.do(ctx, http.MethodPut, "/v2/quorum/own/manifests/2", http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}, bytes.NewReader(own.Manifest))
		})
	})
	t.Run("unknown tag", func(t *testing.T) {
		// A read that misses locally asks the leader; without one it must
		// still answer, from what the node has.
		start := time.Now()
		r, err := client.do(ctx, http.MethodGet, "/v2/quorum/own/manifests/nope", nil, nil)
		if err != nil {
			t.Fatalf("GET an unknown tag without quorum: %v after %s", err, time.Since(start))
		}
		if r.Status != http.StatusNotFound {
			t.Errorf("GET an unknown tag without quorum: %s, want 404", r)
		}
	})
}

// TestClusterPauseLeader freezes the leader with SIGSTOP, as a partition
// or a paused container would: the other two elect a leader and take
// writes within 5 s; a manifest PUT sent to the frozen leader is either
// refused with 503 or, if acknowledged, durable everywhere; once resumed,
// the old leader follows the new one, has caught up and takes writes.
func TestClusterPauseLeader(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	ctx := t.Context()
	old := nodetest.Leader(t, procs, time.Minute)
	others := followers(procs, old)
	oldReg := adminRegistry(old)

	// The blobs of a push are on the old leader before it freezes; its
	// manifest PUT will be sent while it is frozen.
	stale := randomImage(t, 64<<10)
	for _, b := range []struct {
		mt      string
		content []byte
	}{{stale.LayerDesc.MediaType, stale.Layer}, {stale.ConfigDesc.MediaType, stale.Config}} {
		if _, err := oldReg.pushBlob(ctx, "pause/stale", b.mt, b.content); err != nil {
			t.Fatal(err)
		}
	}

	paused := time.Now()
	old.Pause()
	type result struct {
		r   response
		err error
	}
	staleDone := make(chan result, 1)
	go func() {
		c := adminRegistry(old)
		c.client = &http.Client{Timeout: 2 * time.Minute}
		r, err := c.do(ctx, http.MethodPut, "/v2/pause/stale/manifests/1", http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}, bytes.NewReader(stale.Manifest))
		staleDone <- result{r, err}
	}()

	requireWritesResume(t, others, "pause/probe", paused, "the leader froze")
	during := randomImage(t, 96<<10)
	if err := adminRegistry(others[1]).push(ctx, "pause/during", "1", during); err != nil {
		t.Fatalf("push while the old leader is frozen: %v", err)
	}

	old.Resume()
	var res result
	select {
	case res = <-staleDone:
	case <-time.After(time.Minute):
		t.Fatal("the manifest PUT sent to the frozen leader got no answer within a minute of resuming it")
	}
	if res.err != nil {
		t.Fatalf("manifest PUT sent to the frozen leader: %v", res.err)
	}
	t.Logf("manifest PUT sent to the frozen leader answered %s", res.r)
	newLeader := nodetest.Leader(t, procs, time.Minute)
	if newLeader == old {
		t.Logf("the old leader won a later election (allowed)")
	}
	switch res.r.Status {
	case http.StatusCreated:
		requirePulledEverywhere(t, procs, "pause/stale", "1", stale)
	case http.StatusServiceUnavailable:
		if res.r.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	default:
		t.Errorf("manifest PUT sent to the frozen leader: %s, want 201 or 503", res.r)
	}

	// The old leader caught up with what was pushed while it was frozen,
	// and writes through it work again.
	requirePulledEverywhere(t, []*nodetest.Process{old}, "pause/during", "1", during)
	after := randomImage(t, 32<<10)
	if err := oldReg.push(ctx, "pause/after", "1", after); err != nil {
		t.Fatalf("push through the resumed node: %v", err)
	}
	requirePulledEverywhere(t, procs, "pause/after", "1", after)
}
