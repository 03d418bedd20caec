package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/build"
)

// startTestNode runs a node like startNode and returns it, for tests that
// drive its parts directly.
func startTestNode(t *testing.T, opts ...func(*Config)) *Node {
	t.Helper()
	n, _, _ := runTestNode(t, t.TempDir(), opts...)
	return n
}

// testBuilder runs a builder named id over n's metadata plane with steps
// as its step runner, until the returned stop (or the end of the test).
func testBuilder(t *testing.T, n *Node, id string, logs *buildLogs, lease time.Duration,
	steps func(context.Context, *buildJob) (string, error), opts ...func(*Config)) (b *builder, stop func()) {
	t.Helper()
	cfg := n.cfg
	cfg.BuildLease, cfg.BuilderConcurrency = lease, 1
	for _, o := range opts {
		o(&cfg)
	}
	b = newBuilder(id, n.meta, logs, cfg, testLogger(t).With("builder", id))
	b.steps = steps
	b.keep = logStore{store: n.store, links: replicatingLinks{Node: n.meta, blobs: n.blobs, bg: n.bg}}.keep
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("builder %s: %v", id, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("builder %s did not stop within 30s", id)
			}
		})
	}
	t.Cleanup(stop)
	return b, stop
}

const testRepo = "acme/api"

// queueTestBuild creates testRepo if needed and queues one build of
// branch main.
func queueTestBuild(t *testing.T, n *Node) hubmesh.Build {
	t.Helper()
	ctx := t.Context()
	err := n.meta.CreateRepository(ctx, hubmesh.Repository{Namespace: "acme", Name: testRepo, Created: time.Now().UTC()})
	if err != nil && !errors.Is(err, hubmesh.ErrExists) {
		t.Fatal(err)
	}
	got, err := n.meta.QueueBuilds(ctx, []hubmesh.Build{{
		Repo: testRepo, Trigger: hubmesh.TriggerManual, Actor: "admin", SourceType: "branch", SourceName: "main",
		Tags: []string{"latest"}, Dockerfile: "Dockerfile", Context: ".", Created: time.Now().UTC(),
	}})
	if err != nil || len(got) != 1 {
		t.Fatalf("QueueBuilds: %v, %v", got, err)
	}
	return got[0]
}

func waitBuild(t *testing.T, n *Node, id, what string, cond func(hubmesh.Build) bool) hubmesh.Build {
	t.Helper()
	var b hubmesh.Build
	waitFor(t, what, 30*time.Second, func() bool {
		var err error
		b, err = n.meta.Build(t.Context(), id)
		if err != nil {
			t.Fatalf("Build %s: %v", id, err)
		}
		return cond(b)
	})
	return b
}

func finished(b hubmesh.Build) bool { return hubmesh.BuildFinished(b.State) }

var (
	testCommit = strings.Repeat("c", 40)
	testDigest = "sha256:" + strings.Repeat("d", 64)
)

// TestBuildLiveLogFollow follows a log file while it is written.
func TestBuildLiveLogFollow(t *testing.T) {
	logs := newBuildLogs(t.TempDir())
	l, err := logs.create("00000000000000010001", 1)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	type result struct {
		off   int64
		ended bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		off, ended, err := l.copyTo(t.Context(), 0, true, &out)
		done <- result{off, ended, err}
	}()
	want := ""
	for i := range 5 {
		line := fmt.Sprintf("line %d\n", i)
		l.Printf("line %d", i)
		want += line
		waitFor(t, "the follower to get "+strings.TrimSpace(line), 10*time.Second, func() bool { return out.String() == want })
	}
	d, size, err := l.finish()
	if err != nil || size != int64(len(want)) || d != digest.FromString(want) {
		t.Fatalf("finish = %s, %d, %v; want %s, %d", d, size, err, digest.FromString(want), len(want))
	}
	select {
	case r := <-done:
		if r.err != nil || !r.ended || r.off != int64(len(want)) || out.String() != want {
			t.Fatalf("follow ended at %d (ended %v, %v) with %q", r.off, r.ended, r.err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower did not end with the log")
	}
	l.Printf("after the end") // dropped: the log is finished

	var b bytes.Buffer
	if off, ended, err := l.copyTo(t.Context(), 7, false, &b); err != nil || !ended || off != int64(len(want)) || b.String() != want[7:] {
		t.Fatalf("read from 7 = %d, %v, %v, %q", off, ended, err, b.String())
	}

	// The RPC: unknown build or attempt, bad requests, a long poll that
	// ends with new data.
	ask := func(req buildLogRequest) (buildLogResponse, error) {
		raw, _ := json.Marshal(req)
		out, err := logs.serveRPC(t.Context(), "peer", raw)
		var resp buildLogResponse
		if err == nil {
			err = json.Unmarshal(out, &resp)
		}
		return resp, err
	}
	if r, err := ask(buildLogRequest{ID: "00000000000000990001"}); err != nil || !r.Gone {
		t.Fatalf("unknown build: %+v, %v", r, err)
	}
	if r, err := ask(buildLogRequest{ID: l.id, Attempt: 2}); err != nil || !r.Gone {
		t.Fatalf("other attempt: %+v, %v", r, err)
	}
	for _, req := range []buildLogRequest{{ID: "../x"}, {ID: l.id, Offset: -1}} {
		if _, err := ask(req); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Fatalf("request %+v: %v, want ErrInvalid", req, err)
		}
	}
	if r, err := ask(buildLogRequest{ID: l.id, Attempt: 1, Offset: 7}); err != nil || !r.Done || string(r.Data) != want[7:] {
		t.Fatalf("ended log from 7: %+v, %v", r, err)
	}
	l2, err := logs.create("00000000000000020001", 3)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan buildLogResponse, 1)
	go func() {
		r, err := ask(buildLogRequest{ID: l2.id, Attempt: 3, WaitMs: 10000})
		if err != nil {
			t.Errorf("long poll: %v", err)
		}
		got <- r
	}()
	l2.Printf("late line")
	select {
	case r := <-got:
		if string(r.Data) != "late line\n" || r.Done {
			t.Fatalf("long poll answer %+v", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not answer")
	}

	// A builder restarting removes what it left behind.
	if _, _, err := l2.finish(); err != nil {
		t.Fatal(err)
	}
	stale := newBuildLogs(logs.dir)
	if err := stale.reset(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(logs.dir); len(ents) != 0 {
		t.Fatalf("reset left %v", ents)
	}
}

// TestBuildLogAcrossNodes runs a build on one node's builder and follows
// its log through the other node: over the mesh while it runs, from the
// stored blob once it finished.
func TestBuildLogAcrossNodes(t *testing.T) {
	a := startTestNode(t)
	base := "http://" + a.Addrs().HTTP
	tok := joinToken(t, base, "voter", "1h")
	bn := startTestNode(t, func(c *Config) { c.Join = base; c.JoinToken = tok })
	waitFor(t, "two voters", 30*time.Second, func() bool {
		servers, err := bn.meta.Servers()
		return err == nil && len(servers) == 2 && bn.meta.Stats().LeaderID != ""
	})

	release := make(chan struct{})
	testBuilder(t, a, a.host.ID(), a.buildLogs, 3*time.Second, func(ctx context.Context, j *buildJob) (string, error) {
		if err := j.Step(ctx, hubmesh.BuildCloning, ""); err != nil {
			return "", err
		}
		j.Log.Printf("first line of %s", j.Build.ID)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-release:
		}
		if err := j.Step(ctx, hubmesh.BuildBuilding, testCommit); err != nil {
			return "", err
		}
		j.Log.Printf("second line")
		return testDigest, nil
	})
	bd := queueTestBuild(t, bn)
	api := &buildsAPI{Node: bn.meta, self: bn.host.ID(), logs: bn.buildLogs, blobs: bn.blobs, host: bn.host, recheck: 50 * time.Millisecond}

	if err := api.BuildLog(t.Context(), bd, 0, false, io.Discard); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Logf("log of a build not claimed yet: %v (it may have been claimed already)", err)
	}
	bd = waitBuild(t, bn, bd.ID, "the build to start cloning", func(b hubmesh.Build) bool { return b.State == hubmesh.BuildCloning })
	if bd.Builder != a.host.ID() || bd.Attempt != 1 {
		t.Fatalf("claimed by %s, attempt %d", bd.Builder, bd.Attempt)
	}

	var out lockedBuffer
	followed := make(chan error, 1)
	go func() { followed <- api.BuildLog(t.Context(), bd, 0, true, &out) }()
	waitFor(t, "the first line through the other node", 30*time.Second, func() bool {
		return strings.Contains(out.String(), "first line of "+bd.ID)
	})
	var now bytes.Buffer
	if err := api.BuildLog(t.Context(), bd, 0, false, &now); err != nil || !strings.Contains(now.String(), "first line") {
		t.Fatalf("log so far: %v, %q", err, now.String())
	}
	close(release)
	select {
	case err := <-followed:
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("following did not end with the build")
	}
	bd = waitBuild(t, bn, bd.ID, "success", finished)
	if bd.State != hubmesh.BuildSuccess || bd.Digest != testDigest || bd.Commit != testCommit || bd.LogDigest == "" || bd.Finished.IsZero() {
		t.Fatalf("build %+v", bd)
	}
	full := out.String()
	if digest.FromString(full).String() != bd.LogDigest || int64(len(full)) != bd.LogSize {
		t.Fatalf("followed log (%d bytes) is not the stored log %s (%d bytes):\n%s", len(full), bd.LogDigest, bd.LogSize, full)
	}
	for _, want := range []string{"==> build " + bd.ID, "first line", "second line", "==> done " + testDigest} {
		if !strings.Contains(full, want) {
			t.Errorf("log lacks %q:\n%s", want, full)
		}
	}
	if a.buildLogs.get(bd.ID) != nil {
		t.Error("the live log is still there after the log was stored")
	}
	// The stored log, through the node that did not build, from an offset.
	var stored bytes.Buffer
	if err := api.BuildLog(t.Context(), bd, 10, true, &stored); err != nil || stored.String() != full[10:] {
		t.Fatalf("stored log from 10: %v, %q", err, stored.String())
	}
}

// TestBuilderLeases: a builder that dies loses its build to another after
// the lease; heartbeats keep a long build with its builder.
func TestBuilderLeases(t *testing.T) {
	n := startTestNode(t)
	const lease = 900 * time.Millisecond
	started := make(chan *buildJob, 4)
	blockFirst := func(ctx context.Context, j *buildJob) (string, error) {
		if err := j.Step(ctx, hubmesh.BuildCloning, ""); err != nil {
			return "", err
		}
		started <- j
		<-ctx.Done()
		return "", ctx.Err()
	}
	_, stopDying := testBuilder(t, n, "builder-dying", newBuildLogs(t.TempDir()), lease, blockFirst)
	c := queueTestBuild(t, n)
	var j *buildJob
	select {
	case j = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the build did not start")
	}
	if j.Build.ID != c.ID || j.Build.Attempt != 1 {
		t.Fatalf("started %+v", j.Build)
	}
	stopDying() // dies: records nothing more
	c = waitBuild(t, n, c.ID, "the build to stay with the dead builder", func(b hubmesh.Build) bool { return true })
	if c.State != hubmesh.BuildCloning || c.Builder != "builder-dying" {
		t.Fatalf("after the builder stopped: %+v", c)
	}
	deadUntil := c.LeaseUntil

	var mu sync.Mutex
	startedAt := map[string]time.Time{}
	steps := func(ctx context.Context, j *buildJob) (string, error) {
		mu.Lock()
		startedAt[j.Build.ID] = time.Now()
		mu.Unlock()
		if err := j.Step(ctx, hubmesh.BuildCloning, ""); err != nil {
			return "", err
		}
		if j.Build.ID != c.ID {
			// A long build: it runs until its lease was renewed twice over.
			claimed := j.Build.Claimed
			for {
				cur, err := n.meta.Build(ctx, j.Build.ID)
				if err != nil {
					return "", err
				}
				if cur.LeaseUntil.After(claimed.Add(3 * lease)) {
					break
				}
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		return testDigest, nil
	}
	testBuilder(t, n, "builder-one", newBuildLogs(t.TempDir()), lease, steps)
	testBuilder(t, n, "builder-two", newBuildLogs(t.TempDir()), lease, steps)
	c = waitBuild(t, n, c.ID, "the takeover", finished)
	if c.State != hubmesh.BuildSuccess || c.Attempt != 2 || (c.Builder != "builder-one" && c.Builder != "builder-two") {
		t.Fatalf("taken over: %+v", c)
	}
	mu.Lock()
	if at := startedAt[c.ID]; at.Before(deadUntil) {
		t.Errorf("taken over at %s, before the dead builder's lease ended at %s", at, deadUntil)
	}
	mu.Unlock()

	long := queueTestBuild(t, n)
	long = waitBuild(t, n, long.ID, "the long build", finished)
	if long.State != hubmesh.BuildSuccess || long.Attempt != 1 || long.LogDigest == "" {
		t.Fatalf("long build: %+v (a second attempt means a heartbeat was missed)", long)
	}
}

// TestBuilderCancelAndFailure: cancelling a running build stops its steps
// and records nothing more; a failing step records a failure with a
// one-line message without secrets; a build that runs too long fails.
func TestBuilderCancelAndFailure(t *testing.T) {
	n := startTestNode(t)
	causes := make(chan error, 1)
	mode := map[string]string{}
	var mu sync.Mutex
	steps := func(ctx context.Context, j *buildJob) (string, error) {
		if err := j.Step(ctx, hubmesh.BuildCloning, ""); err != nil {
			return "", err
		}
		j.Log.Printf("working on %s", j.Build.ID)
		mu.Lock()
		m := mode[j.Build.ID]
		mu.Unlock()
		switch m {
		case "block":
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return "", ctx.Err()
		case "fail":
			j.Redact("hunter22")
			return "", fmt.Errorf("step 2/3: RUN false:\nexit code 1 (password hunter22): %w", &build.BuildError{Message: "boom"})
		}
		return testDigest, nil
	}
	b, stop := testBuilder(t, n, n.host.ID(), n.buildLogs, 3*time.Second, steps)
	api := &buildsAPI{Node: n.meta, self: n.host.ID(), logs: n.buildLogs, blobs: n.blobs, host: n.host, recheck: 50 * time.Millisecond}

	// Queue all three before the builder gets to them: queueing is one
	// command each, so plan the modes by the ids that come back.
	run := func(m string) hubmesh.Build {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		bd := queueTestBuild(t, n)
		mode[bd.ID] = m
		return bd
	}
	mu.Lock()
	blocked := queueTestBuild(t, n)
	mode[blocked.ID] = "block"
	mu.Unlock()
	waitBuild(t, n, blocked.ID, "the build to run", func(b hubmesh.Build) bool { return b.State == hubmesh.BuildCloning })
	var out lockedBuffer
	followed := make(chan error, 1)
	go func() { followed <- api.BuildLog(t.Context(), blocked, 0, true, &out) }()
	waitFor(t, "the log to be followed", 30*time.Second, func() bool { return strings.Contains(out.String(), "working on") })
	if _, err := n.meta.CancelBuild(t.Context(), blocked.ID, "admin", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-causes:
		if !errors.Is(cause, hubmesh.ErrDenied) || !strings.Contains(cause.Error(), "cancelled by admin") {
			t.Fatalf("steps stopped because %v", cause)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cancel did not stop the steps")
	}
	select {
	case err := <-followed:
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("following did not end with the cancel")
	}
	if !strings.Contains(out.String(), "==> stopped: ") {
		t.Errorf("log of the cancelled build:\n%s", out.String())
	}
	waitFor(t, "the slot to be free", 30*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.running) == 0
	})
	// The log of the cancelled build is kept as a blob too.
	got := waitBuild(t, n, blocked.ID, "the cancelled build's log to be stored", func(b hubmesh.Build) bool { return b.LogDigest != "" })
	if got.State != hubmesh.BuildCancelled || got.Message != "cancelled by admin" || got.LogSize == 0 {
		t.Fatalf("cancelled build %+v", got)
	}
	var stored lockedBuffer
	if err := api.BuildLog(t.Context(), got, 0, false, &stored); err != nil || !strings.Contains(stored.String(), "==> stopped: ") ||
		digest.FromString(stored.String()).String() != got.LogDigest {
		t.Fatalf("stored log of the cancelled build (%v):\n%s", err, stored.String())
	}

	failed := run("fail")
	got = waitBuild(t, n, failed.ID, "the failure", finished)
	if got.State != hubmesh.BuildFailure || strings.Contains(got.Message, "\n") || strings.Contains(got.Message, "hunter22") ||
		!strings.Contains(got.Message, "build failed: boom") || got.LogDigest == "" {
		t.Fatalf("failed build %+v", got)
	}
	var log bytes.Buffer
	if err := api.BuildLog(t.Context(), got, 0, false, &log); err != nil || !strings.Contains(log.String(), "==> failed: ") {
		t.Fatalf("log of the failed build: %v\n%s", err, log.String())
	}

	ok := run("")
	got = waitBuild(t, n, ok.ID, "success", finished)
	if got.State != hubmesh.BuildSuccess || got.Digest != testDigest {
		t.Fatalf("build after the others %+v", got)
	}
	stop()

	// No builder: a build cancelled while queued has no log.
	queued := queueTestBuild(t, n)
	var err error
	if got, err = n.meta.CancelBuild(t.Context(), queued.ID, "admin", time.Now().UTC()); err != nil || got.Builder != "" {
		t.Fatalf("cancel queued: %+v, %v", got, err)
	}
	if err := api.BuildLog(t.Context(), got, 0, true, io.Discard); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("log of a build cancelled while queued: %v, want ErrNotFound", err)
	}

	testBuilder(t, n, n.host.ID(), n.buildLogs, 3*time.Second, steps, func(c *Config) { c.BuildTimeout = 300 * time.Millisecond })
	slow := run("block")
	got = waitBuild(t, n, slow.ID, "the timeout", finished)
	<-causes
	if got.State != hubmesh.BuildFailure || got.Message != "build timed out after 300ms" || got.LogDigest == "" {
		t.Fatalf("slow build %+v", got)
	}
}

// TestBuildPoller queues builds for new commits of autobuild rules only.
func TestBuildPoller(t *testing.T) {
	n := startTestNode(t)
	queueTestBuild(t, n) // creates the repository; a manual build of main, commit unknown yet
	ctx := t.Context()
	settings := hubmesh.BuildSettings{
		Repo:   testRepo,
		Source: hubmesh.BuildSource{URL: "https://git.example.com/acme/api.git"},
		Rules: []hubmesh.BuildRule{
			{SourceType: "branch", SourceName: "main", Tag: "latest", Autobuild: true},
			{SourceType: "tag", SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`, Autobuild: true},
			{SourceType: "branch", SourceName: "dev", Tag: "dev"},
		},
		PollSeconds: 60, Created: time.Now().UTC(), Updated: time.Now().UTC(),
	}
	if err := n.meta.SetBuildSettings(ctx, settings); err != nil {
		t.Fatal(err)
	}
	refs := map[string]string{
		"refs/heads/main": strings.Repeat("1", 40),
		"refs/heads/dev":  strings.Repeat("2", 40),
		"refs/tags/v1.2":  strings.Repeat("3", 40),
		"refs/tags/other": strings.Repeat("4", 40),
	}
	var mu sync.Mutex
	p := newBuildPoller(n.meta, testLogger(t))
	p.list = func(_ context.Context, src build.Source) (map[string]string, error) {
		if src.URL != settings.Source.URL {
			return nil, fmt.Errorf("listed %s", src.URL)
		}
		mu.Lock()
		defer mu.Unlock()
		out := map[string]string{}
		for k, v := range refs {
			out[k] = v
		}
		return out, nil
	}
	poll := func(want int) []hubmesh.Build {
		t.Helper()
		got, err := p.poll(ctx, settings)
		if err != nil || got != want {
			t.Fatalf("poll queued %d, %v; want %d", got, err, want)
		}
		hist, err := n.meta.Builds(ctx, testRepo, hubmesh.Page{N: 100})
		if err != nil {
			t.Fatal(err)
		}
		return hist
	}
	// The manual build of main has not checked out yet: main is skipped;
	// v1.2 existed when the poller first looked: not built.
	poll(0)
	// A tag that appears later is built.
	mu.Lock()
	refs["refs/tags/v1.3"] = strings.Repeat("7", 40)
	mu.Unlock()
	hist := poll(1)
	if b := hist[0]; b.Trigger != hubmesh.TriggerPoll || b.SourceType != "tag" || b.SourceName != "v1.3" ||
		b.Commit != refs["refs/tags/v1.3"] || strings.Join(b.Tags, ",") != "1.3" {
		t.Fatalf("polled build %+v", b)
	}
	poll(0)

	mu.Lock()
	refs["refs/heads/main"] = strings.Repeat("5", 40)
	refs["refs/heads/dev"] = strings.Repeat("6", 40) // not autobuild
	mu.Unlock()
	for _, b := range hist {
		if b.Trigger == hubmesh.TriggerManual {
			if _, err := n.meta.CancelBuild(ctx, b.ID, "admin", time.Now().UTC()); err != nil {
				t.Fatal(err)
			}
		}
	}
	hist = poll(1)
	if b := hist[0]; b.SourceName != "main" || b.Commit != strings.Repeat("5", 40) || strings.Join(b.Tags, ",") != "latest" {
		t.Fatalf("polled build %+v", b)
	}
	// Another poller (another builder, or after a restart) finds them in
	// the history.
	p2 := newBuildPoller(n.meta, testLogger(t))
	p2.list = p.list
	if got, err := p2.poll(ctx, settings); err != nil || got != 0 {
		t.Fatalf("second poller queued %d, %v", got, err)
	}
}

// TestHookPayloadCarriesBuild: build events put the build in the payload.
func TestHookPayloadCarriesBuild(t *testing.T) {
	store := newFakeHookStore()
	w, _, _ := newTestWorker(t, store)
	hook := testWebhook("00000000000000a1", "http://example.com/hook")
	bd := &hubmesh.Build{ID: "00000000000000050001", Repo: "acme/api", State: hubmesh.BuildSuccess, Digest: testDigest, Tags: []string{"latest"}}
	ev := hubmesh.WebhookEvent{ID: "00000000000000050002", Type: hubmesh.EventBuildSuccess, Repo: "acme/api", At: hookT0, Build: bd}
	body, _, err := w.payload(t.Context(), hook, hubmesh.WebhookDelivery{ID: "d1", Hook: hook.ID, Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Event string         `json:"event"`
		Build *hubmesh.Build `json:"build"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Event != hubmesh.EventBuildSuccess || p.Build == nil ||
		p.Build.ID != bd.ID || p.Build.Digest != testDigest {
		t.Fatalf("payload %s (%v)", body, err)
	}
	push, _, err := w.payload(t.Context(), hook, hubmesh.WebhookDelivery{ID: "d2", Hook: hook.ID, Event: pushEvent(1, "v1")})
	if err != nil || bytes.Contains(push, []byte(`"build"`)) {
		t.Fatalf("push payload %s (%v)", push, err)
	}
}

func TestLoopbackAddr(t *testing.T) {
	for in, want := range map[string]string{
		":5000": "127.0.0.1:5000", "0.0.0.0:5000": "127.0.0.1:5000", "[::]:5000": "127.0.0.1:5000",
		"10.0.0.1:5000": "10.0.0.1:5000", "registry:5000": "registry:5000",
	} {
		if got := loopbackAddr(in); got != want {
			t.Errorf("loopbackAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBuildersShareTheQueue: two builders of concurrency 1 and two queued
// builds: each builder runs one, at the same time.
func TestBuildersShareTheQueue(t *testing.T) {
	n := startTestNode(t)
	started := make(chan hubmesh.Build, 4)
	release := make(chan struct{})
	steps := func(ctx context.Context, j *buildJob) (string, error) {
		if err := j.Step(ctx, hubmesh.BuildBuilding, testCommit); err != nil {
			return "", err
		}
		started <- j.Build
		select {
		case <-release:
			return testDigest, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	testBuilder(t, n, "builder-one", newBuildLogs(t.TempDir()), 2*time.Second, steps)
	testBuilder(t, n, "builder-two", newBuildLogs(t.TempDir()), 2*time.Second, steps)
	a, b := queueTestBuild(t, n), queueTestBuild(t, n)
	running := map[string]string{} // build id -> builder
	deadline := time.After(30 * time.Second)
	for len(running) < 2 {
		select {
		case bd := <-started:
			running[bd.ID] = bd.Builder
		case <-deadline:
			t.Fatalf("running after 30s: %v; want both builds running at once", running)
		}
	}
	if running[a.ID] == "" || running[b.ID] == "" || running[a.ID] == running[b.ID] {
		t.Fatalf("builds ran on %v; want one on each builder", running)
	}
	close(release)
	for _, id := range []string{a.ID, b.ID} {
		if got := waitBuild(t, n, id, "the build to finish", finished); got.State != hubmesh.BuildSuccess || got.Attempt != 1 {
			t.Fatalf("build %s: %+v", id, got)
		}
	}
}
