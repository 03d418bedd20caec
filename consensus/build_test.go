package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

var buildT0 = time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC)

const (
	logDigest   = "sha256:" + "0000000000000000000000000000000000000000000000000000000000000001"
	imageDigest = "sha256:" + "00000000000000000000000000000000000000000000000000000000000000aa"
)

func testBuildSettings(repo string) hubmesh.BuildSettings {
	return hubmesh.BuildSettings{
		Repo:   repo,
		Source: hubmesh.BuildSource{URL: "https://git.example/acme/api.git", Username: "ci", Password: "pw"},
		Rules: []hubmesh.BuildRule{
			{SourceType: "branch", SourceName: "main", Tag: "latest", Autobuild: true},
			{SourceType: "tag", SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`, Dockerfile: "build/Dockerfile", Context: "."},
		},
		BuildArgs:    map[string]string{"GOFLAGS": "-mod=mod"},
		TriggerToken: strings.Repeat("t", 32), WebhookSecret: strings.Repeat("w", 32),
		Created: buildT0, Updated: buildT0,
	}
}

func testBuild(repo, branch string, created time.Time) hubmesh.Build {
	return hubmesh.Build{
		Repo: repo, Trigger: hubmesh.TriggerManual, Actor: "alice", SourceType: "branch", SourceName: branch,
		Tags: []string{"latest"}, Dockerfile: "Dockerfile", Context: ".", BuildCache: true, Created: created,
	}
}

func buildCommands() []Command {
	b := testBuild("acme/api", "main", buildT0)
	b.RetryOf = "00000000000000010001"
	return []Command{
		&SetBuildSettings{Settings: testBuildSettings("acme/api")},
		&DeleteBuildSettings{Repo: "acme/api"},
		&QueueBuilds{Builds: []hubmesh.Build{b}},
		&ClaimBuild{ID: "00000000000000020001", Builder: "node-1", LeaseUntil: buildT0.Add(30 * time.Second), At: buildT0},
		&UpdateBuild{ID: "00000000000000020001", Builder: "node-1", Attempt: 1, State: hubmesh.BuildSuccess, Commit: "abc123",
			Message: "ok", Digest: imageDigest, LogDigest: logDigest, LogSize: 42, At: buildT0},
		&CancelBuild{ID: "00000000000000020001", Actor: "bob", At: buildT0},
	}
}

func TestBuildCommandsRoundTrip(t *testing.T) {
	checkCommandsRoundTrip(t, buildCommands(), TypeSetBuildSettings, TypeCancelBuild)
}

var undecodableBuild = map[Type]string{
	TypeSetBuildSettings:    `{"settings":{"rules":{"source_type":"branch"}}}`,
	TypeDeleteBuildSettings: `{"repo":42}`,
	TypeQueueBuilds:         `{"builds":[{"created":"yesterday"}]}`,
	TypeClaimBuild:          `{"id":"00000000000000020001","lease_until":30}`,
	TypeUpdateBuild:         `{"id":"00000000000000020001","attempt":"one"}`,
	TypeCancelBuild:         `{"id":"00000000000000020001","at":true}`,
}

func TestBuildDecodeFailure(t *testing.T) {
	for typ := TypeSetBuildSettings; typ <= TypeCancelBuild; typ++ {
		payload, ok := undecodableBuild[typ]
		if !ok {
			t.Errorf("no undecodable payload for %v", typ)
			continue
		}
		t.Run(typ.String(), func(t *testing.T) {
			if _, err := Decode(envelope(typ, payload)); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("Decode error %v, want ErrInvalid", err)
			}
			h := newFSM(t)
			pushTag(h, "acme/api", "v1", "alice")
			h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0)}})
			h.mustHalt(envelope(typ, payload))
		})
	}
}

func TestBuildValidate(t *testing.T) {
	settings := func(mut func(s *hubmesh.BuildSettings)) Command {
		s := testBuildSettings("acme/api")
		mut(&s)
		return &SetBuildSettings{Settings: s}
	}
	queue := func(mut func(b *hubmesh.Build)) Command {
		b := testBuild("acme/api", "main", buildT0)
		mut(&b)
		return &QueueBuilds{Builds: []hubmesh.Build{b}}
	}
	tooManyArgs := map[string]string{}
	for i := range MaxBuildArgs + 1 {
		tooManyArgs[fmt.Sprint("A", i)] = "x"
	}
	id := "00000000000000020001"
	at, lease := buildT0, buildT0.Add(time.Minute)
	for name, c := range map[string]Command{
		"bad repo":         settings(func(s *hubmesh.BuildSettings) { s.Repo = "Acme" }),
		"no url":           settings(func(s *hubmesh.BuildSettings) { s.Source.URL = "" }),
		"long url":         settings(func(s *hubmesh.BuildSettings) { s.Source.URL = "https://x/" + strings.Repeat("a", 2048) }),
		"26 rules":         settings(func(s *hubmesh.BuildSettings) { s.Rules = make([]hubmesh.BuildRule, MaxBuildRules+1) }),
		"rule type":        settings(func(s *hubmesh.BuildSettings) { s.Rules[0].SourceType = "commit" }),
		"rule no name":     settings(func(s *hubmesh.BuildSettings) { s.Rules[0].SourceName = "" }),
		"rule long tag":    settings(func(s *hubmesh.BuildSettings) { s.Rules[0].Tag = strings.Repeat("t", 2000) }),
		"65 args":          settings(func(s *hubmesh.BuildSettings) { s.BuildArgs = tooManyArgs }),
		"long arg":         settings(func(s *hubmesh.BuildSettings) { s.BuildArgs = map[string]string{"A": strings.Repeat("v", 4097)} }),
		"empty arg name":   settings(func(s *hubmesh.BuildSettings) { s.BuildArgs = map[string]string{"": "v"} }),
		"nul in password":  settings(func(s *hubmesh.BuildSettings) { s.Source.Password = "a\x00b" }),
		"negative poll":    settings(func(s *hubmesh.BuildSettings) { s.PollSeconds = -1 }),
		"no builds":        &QueueBuilds{},
		"too many builds":  &QueueBuilds{Builds: make([]hubmesh.Build, MaxQueueBuilds+1)},
		"build trigger":    queue(func(b *hubmesh.Build) { b.Trigger = "cron" }),
		"build no tags":    queue(func(b *hubmesh.Build) { b.Tags = nil }),
		"build bad tag":    queue(func(b *hubmesh.Build) { b.Tags = []string{"a b"} }),
		"build retry id":   queue(func(b *hubmesh.Build) { b.RetryOf = "nope" }),
		"build no time":    queue(func(b *hubmesh.Build) { b.Created = time.Time{} }),
		"build no source":  queue(func(b *hubmesh.Build) { b.SourceName = "" }),
		"claim bad id":     &ClaimBuild{ID: "x", Builder: "n", LeaseUntil: lease, At: at},
		"claim no builder": &ClaimBuild{ID: id, LeaseUntil: lease, At: at},
		"claim no lease":   &ClaimBuild{ID: id, Builder: "n", At: at},
		"update attempt 0": &UpdateBuild{ID: id, Builder: "n", State: hubmesh.BuildCloning, At: at},
		"update state":     &UpdateBuild{ID: id, Builder: "n", Attempt: 1, State: hubmesh.BuildQueued, At: at},
		"heartbeat lease":  &UpdateBuild{ID: id, Builder: "n", Attempt: 1, At: at},
		"update digest":    &UpdateBuild{ID: id, Builder: "n", Attempt: 1, State: hubmesh.BuildSuccess, Digest: "sha256:xyz", At: at},
		"update log size":  &UpdateBuild{ID: id, Builder: "n", Attempt: 1, State: hubmesh.BuildFailure, LogSize: -1, At: at},
		"update huge msg":  &UpdateBuild{ID: id, Builder: "n", Attempt: 1, State: hubmesh.BuildFailure, Message: strings.Repeat("m", 65<<10), At: at},
		"cancel no time":   &CancelBuild{ID: id},
	} {
		if err := c.validate(); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: validate = %v, want ErrInvalid", name, err)
		}
	}
}

func TestFSMBuildSettings(t *testing.T) {
	h := newFSM(t)
	s := testBuildSettings("acme/api")
	if err := h.applyErr(&SetBuildSettings{Settings: s}); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("settings of an unknown repository: %v", err)
	}
	pushTag(h, "acme/api", "v1", "alice")
	if _, err := h.f.buildSettings("acme/api"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("settings before any: %v", err)
	}
	h.mustApply(&SetBuildSettings{Settings: s})
	got, err := h.f.buildSettings("acme/api")
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("settings = %+v, %v; want %+v", got, err, s)
	}
	if r := mustRepo(t, h, "acme/api"); !r.IsAutomated {
		t.Fatal("a repository with build settings is not automated")
	}
	// Replacing keeps Created.
	s2 := testBuildSettings("acme/api")
	s2.Rules, s2.Created, s2.Updated = s2.Rules[:1], buildT0.Add(time.Hour), buildT0.Add(time.Hour)
	h.mustApply(&SetBuildSettings{Settings: s2})
	got, _ = h.f.buildSettings("acme/api")
	if !got.Created.Equal(buildT0) || !got.Updated.Equal(s2.Updated) || len(got.Rules) != 1 {
		t.Fatalf("replaced settings %+v", got)
	}
	pushTag(h, "acme/web", "v1", "alice")
	h.mustApply(&SetBuildSettings{Settings: testBuildSettings("acme/web")})
	all, err := h.f.allBuildSettings()
	if err != nil || len(all) != 2 || all[0].Repo != "acme/api" || all[1].Repo != "acme/web" {
		t.Fatalf("all settings %+v, %v", all, err)
	}
	h.mustApply(&DeleteBuildSettings{Repo: "acme/api"})
	if _, err := h.f.buildSettings("acme/api"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("settings after delete: %v", err)
	}
	if r := mustRepo(t, h, "acme/api"); r.IsAutomated {
		t.Fatal("still automated after its settings were deleted")
	}
	if err := h.applyErr(&DeleteBuildSettings{Repo: "acme/api"}); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func mustRepo(t *testing.T, h *fsmHarness, repo string) repoRecord {
	t.Helper()
	var rec repoRecord
	if v, ok := h.dump()["repo/"+repo]; !ok || json.Unmarshal([]byte(v), &rec) != nil {
		t.Fatalf("no record of %s", repo)
	}
	return rec
}

func mustBuild(t *testing.T, f *stateMachine, id string) hubmesh.Build {
	t.Helper()
	b, err := f.build(id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func claimable(t *testing.T, f *stateMachine, now time.Time) []string {
	t.Helper()
	bs, err := f.claimableBuilds(now, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	return ids
}

func TestFSMBuildLifecycle(t *testing.T) {
	h := newFSM(t)
	pushTag(h, "acme/api", "v1", "alice")
	if err := h.applyErr(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/nope", "main", buildT0)}}); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("queue into an unknown repository: %v", err)
	}
	in := testBuild("acme/api", "main", buildT0)
	in.ID, in.State, in.Builder, in.Attempt, in.Message = "ffffffffffffffffffff", hubmesh.BuildSuccess, "evil", 9, "forged"
	res := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{in, testBuild("acme/api", "dev", buildT0)}}).([]hubmesh.Build)
	if len(res) != 2 {
		t.Fatalf("queued %+v", res)
	}
	a, b := res[0], res[1]
	prefix := fmt.Sprintf("%016x", h.index)
	if !strings.HasPrefix(a.ID, prefix) || !strings.HasPrefix(b.ID, prefix) || a.ID >= b.ID {
		t.Fatalf("ids %s %s not derived from index %d in order", a.ID, b.ID, h.index)
	}
	if a.State != hubmesh.BuildQueued || a.Builder != "" || a.Attempt != 0 || a.Message != "" || !a.Updated.Equal(buildT0) || a.SourceName != "main" {
		t.Fatalf("queued build %+v", a)
	}
	if got := mustBuild(t, h.f, a.ID); !reflect.DeepEqual(got, a) {
		t.Fatalf("stored %+v, result %+v", got, a)
	}
	if ids := claimable(t, h.f, buildT0); len(ids) != 2 || ids[0] != a.ID || ids[1] != b.ID {
		t.Fatalf("claimable %v", ids)
	}
	if bs, _ := h.f.claimableBuilds(buildT0, 1); len(bs) != 1 || bs[0].ID != a.ID {
		t.Fatalf("claimable with limit 1: %+v", bs)
	}

	// Claim: the first one takes it, another builder is refused, the same
	// claim proposed again gets the same answer.
	t1, lease := buildT0.Add(time.Second), buildT0.Add(31*time.Second)
	claim := &ClaimBuild{ID: a.ID, Builder: "node-1", LeaseUntil: lease, At: t1}
	c1 := h.mustApply(claim).(hubmesh.Build)
	if c1.State != hubmesh.BuildClaimed || c1.Builder != "node-1" || c1.Attempt != 1 || !c1.Claimed.Equal(t1) || !c1.LeaseUntil.Equal(lease) {
		t.Fatalf("claimed %+v", c1)
	}
	if again := h.mustApply(claim).(hubmesh.Build); !reflect.DeepEqual(again, c1) {
		t.Fatalf("repeated claim %+v", again)
	}
	if err := h.applyErr(&ClaimBuild{ID: a.ID, Builder: "node-2", LeaseUntil: lease.Add(time.Second), At: t1.Add(time.Second)}); !errors.Is(err, hubmesh.ErrExists) || !strings.Contains(err.Error(), "node-1") {
		t.Fatalf("claim of a held build: %v", err)
	}
	if ids := claimable(t, h.f, t1); len(ids) != 1 || ids[0] != b.ID {
		t.Fatalf("claimable after a claim %v", ids)
	}

	// Progress by the holder.
	upd := func(u UpdateBuild) hubmesh.Build {
		t.Helper()
		return h.mustApply(&u).(hubmesh.Build)
	}
	t2 := t1.Add(5 * time.Second)
	if got := upd(UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildCloning, LeaseUntil: t2.Add(30 * time.Second), At: t2}); got.State != hubmesh.BuildCloning || !got.Started.Equal(t2) || !got.LeaseUntil.Equal(t2.Add(30*time.Second)) {
		t.Fatalf("cloning %+v", got)
	}
	t3 := t2.Add(10 * time.Second)
	if got := upd(UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, LeaseUntil: t3.Add(30 * time.Second), At: t3}); got.State != hubmesh.BuildCloning || !got.LeaseUntil.Equal(t3.Add(30*time.Second)) || !got.Updated.Equal(t3) {
		t.Fatalf("heartbeat %+v", got)
	}
	upd(UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildBuilding, Commit: "0123abcd", At: t3})
	if err := h.applyErr(&UpdateBuild{ID: a.ID, Builder: "node-2", Attempt: 1, State: hubmesh.BuildFailure, At: t3}); !errors.Is(err, hubmesh.ErrDenied) || !strings.Contains(err.Error(), "lease lost") {
		t.Fatalf("update by another builder: %v", err)
	}
	t4 := t3.Add(time.Minute)
	final := UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildSuccess, Digest: imageDigest, LogDigest: logDigest, LogSize: 1234, At: t4}
	done := upd(final)
	if done.State != hubmesh.BuildSuccess || !done.Finished.Equal(t4) || !done.LeaseUntil.IsZero() || done.Commit != "0123abcd" ||
		done.Digest != imageDigest || done.LogDigest != logDigest || done.LogSize != 1234 || !done.Started.Equal(t2) {
		t.Fatalf("finished %+v", done)
	}
	if again := upd(final); !reflect.DeepEqual(again, done) {
		t.Fatalf("repeated final update %+v", again)
	}
	if err := h.applyErr(&UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, LeaseUntil: t4.Add(time.Hour), At: t4}); !errors.Is(err, hubmesh.ErrDenied) || !strings.Contains(err.Error(), "already success") {
		t.Fatalf("heartbeat after the end: %v", err)
	}
	if err := h.applyErr(&ClaimBuild{ID: a.ID, Builder: "node-2", LeaseUntil: t4.Add(time.Hour), At: t4}); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("claim of a finished build: %v", err)
	}
	if err := h.applyErr(&CancelBuild{ID: a.ID, Actor: "bob", At: t4}); !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), "already success") {
		t.Fatalf("cancel of a finished build: %v", err)
	}
	if _, ok := h.dump()["buildopen/"+a.ID]; ok {
		t.Fatal("a finished build is still in the queue")
	}

	// Cancel: a claimed build's holder is refused from then on.
	h.mustApply(&ClaimBuild{ID: b.ID, Builder: "node-2", LeaseUntil: t4.Add(time.Minute), At: t4})
	cb := h.mustApply(&CancelBuild{ID: b.ID, Actor: "bob", At: t4.Add(time.Second)}).(hubmesh.Build)
	if cb.State != hubmesh.BuildCancelled || cb.Message != "cancelled by bob" || !cb.Finished.Equal(t4.Add(time.Second)) || !cb.LeaseUntil.IsZero() {
		t.Fatalf("cancelled %+v", cb)
	}
	if err := h.applyErr(&UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 1, State: hubmesh.BuildBuilding, At: t4.Add(2 * time.Second)}); !errors.Is(err, hubmesh.ErrDenied) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("update of a cancelled build: %v", err)
	}
	// Its log, stored by the builder that ran it, is recorded; nothing
	// else changes, and nobody else may record one.
	logAt := t4.Add(3 * time.Second)
	if err := h.applyErr(&UpdateBuild{ID: b.ID, Builder: "node-1", Attempt: 1, LogDigest: logDigest, LogSize: 99, LeaseUntil: logAt.Add(time.Minute), At: logAt}); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("log of a cancelled build from another builder: %v", err)
	}
	logged := upd(UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 1, LogDigest: logDigest, LogSize: 99, LeaseUntil: logAt.Add(time.Minute), At: logAt})
	if logged.State != hubmesh.BuildCancelled || logged.LogDigest != logDigest || logged.LogSize != 99 || !logged.LeaseUntil.IsZero() ||
		!logged.Finished.Equal(cb.Finished) || logged.Message != cb.Message {
		t.Fatalf("cancelled build with its log %+v", logged)
	}
	if again := upd(UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 1, LogDigest: logDigest, LogSize: 99, LeaseUntil: logAt.Add(time.Minute), At: logAt}); !reflect.DeepEqual(again, logged) {
		t.Fatalf("repeated log update %+v", again)
	}
	if ids := claimable(t, h.f, t4.Add(time.Hour)); len(ids) != 0 {
		t.Fatalf("claimable after all ended %v", ids)
	}
	if err := h.applyErr(&CancelBuild{ID: "00000000000000990001", At: t4}); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("cancel of an unknown build: %v", err)
	}

	// A long message is cut, a NUL removed.
	c := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", t4)}}).([]hubmesh.Build)[0]
	h.mustApply(&ClaimBuild{ID: c.ID, Builder: "node-1", LeaseUntil: t4.Add(time.Minute), At: t4})
	f := upd(UpdateBuild{ID: c.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildFailure, Message: "step\x00 failed" + strings.Repeat("é", 5000), At: t4})
	if len(f.Message) > MaxBuildMessage || !strings.HasPrefix(f.Message, "step failed") || !strings.HasSuffix(f.Message, "é") {
		t.Fatalf("message of %d bytes: %.40q", len(f.Message), f.Message)
	}
}

// TestFSMBuildLeaseTakeover: a builder whose lease ran out loses the build
// to the next claim, and is refused from then on.
func TestFSMBuildLeaseTakeover(t *testing.T) {
	h := newFSM(t)
	pushTag(h, "acme/api", "v1", "alice")
	b := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0)}}).([]hubmesh.Build)[0]
	lease := buildT0.Add(30 * time.Second)
	h.mustApply(&ClaimBuild{ID: b.ID, Builder: "node-1", LeaseUntil: lease, At: buildT0})
	h.mustApply(&UpdateBuild{ID: b.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildBuilding, Message: "half way", At: buildT0.Add(time.Second)})
	if ids := claimable(t, h.f, lease.Add(-time.Second)); len(ids) != 0 {
		t.Fatalf("claimable under a live lease: %v", ids)
	}
	if ids := claimable(t, h.f, lease.Add(time.Second)); len(ids) != 1 || ids[0] != b.ID {
		t.Fatalf("claimable after the lease: %v", ids)
	}
	if err := h.applyErr(&ClaimBuild{ID: b.ID, Builder: "node-2", LeaseUntil: lease.Add(time.Minute), At: lease.Add(-time.Second)}); !errors.Is(err, hubmesh.ErrExists) {
		t.Fatalf("takeover before the lease ran out: %v", err)
	}
	at := lease.Add(time.Second)
	c := h.mustApply(&ClaimBuild{ID: b.ID, Builder: "node-2", LeaseUntil: at.Add(30 * time.Second), At: at}).(hubmesh.Build)
	if c.Builder != "node-2" || c.Attempt != 2 || c.State != hubmesh.BuildClaimed || c.Message != "" || !c.Claimed.Equal(at) {
		t.Fatalf("taken over %+v", c)
	}
	if err := h.applyErr(&UpdateBuild{ID: b.ID, Builder: "node-1", Attempt: 1, LeaseUntil: at.Add(time.Minute), At: at}); !errors.Is(err, hubmesh.ErrDenied) || !strings.Contains(err.Error(), "lease lost") {
		t.Fatalf("heartbeat of the old holder: %v", err)
	}
	// Same node, older attempt: refused too.
	h.mustApply(&UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 2, State: hubmesh.BuildCloning, LeaseUntil: at.Add(time.Minute), At: at})
	if err := h.applyErr(&UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 1, State: hubmesh.BuildFailure, At: at}); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("update of an older attempt: %v", err)
	}
	done := h.mustApply(&UpdateBuild{ID: b.ID, Builder: "node-2", Attempt: 2, State: hubmesh.BuildSuccess, At: at.Add(time.Minute)}).(hubmesh.Build)
	if done.State != hubmesh.BuildSuccess || done.Attempt != 2 {
		t.Fatalf("finished %+v", done)
	}
}

// TestFSMBuildHistoryBounded: a repository keeps MaxBuildsPerRepo builds;
// the oldest finished one makes room, and with all of them unfinished
// QueueBuilds fails without writing.
func TestFSMBuildHistoryBounded(t *testing.T) {
	h := newFSM(t)
	pushTag(h, "acme/api", "v1", "alice")
	pushTag(h, "acme/web", "v1", "alice")
	var ids []string
	for len(ids) < MaxBuildsPerRepo {
		n := min(MaxQueueBuilds, MaxBuildsPerRepo-len(ids))
		bs := make([]hubmesh.Build, n)
		for i := range bs {
			bs[i] = testBuild("acme/api", fmt.Sprint("b", len(ids)+i), buildT0.Add(time.Duration(len(ids)+i)*time.Second))
		}
		for _, b := range h.mustApply(&QueueBuilds{Builds: bs}).([]hubmesh.Build) {
			ids = append(ids, b.ID)
		}
	}
	before := h.dump()
	err := h.applyErr(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/web", "main", buildT0), testBuild("acme/api", "main", buildT0)}})
	if !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), "too many unfinished builds") {
		t.Fatalf("101st build: %v", err)
	}
	after := h.dump()
	delete(before, string(keyApplied))
	delete(after, string(keyApplied))
	if !maps.Equal(before, after) {
		t.Fatal("a refused QueueBuilds changed the state")
	}
	// Finish two (not the oldest): they make room, oldest finished first.
	for _, id := range []string{ids[5], ids[7]} {
		h.mustApply(&CancelBuild{ID: id, At: buildT0.Add(time.Hour)})
	}
	nb := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0.Add(time.Hour))}}).([]hubmesh.Build)[0]
	if _, err := h.f.build(ids[5]); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("oldest finished build kept: %v", err)
	}
	if _, err := h.f.build(ids[7]); err != nil {
		t.Fatalf("a younger finished build went: %v", err)
	}
	st := h.dump()
	if n := keysUnder(st, "buildrepo/acme/api\x00"); n != MaxBuildsPerRepo {
		t.Fatalf("%d builds kept", n)
	}
	if n := keysUnder(st, "buildopen/"); n != MaxBuildsPerRepo-1 {
		t.Fatalf("%d unfinished builds", n)
	}

	// Listing: newest first, paged.
	page, err := h.f.builds("acme/api", hubmesh.Page{N: 3})
	if err != nil || len(page) != 3 || page[0].ID != nb.ID || page[1].ID != ids[99] || page[2].ID != ids[98] {
		t.Fatalf("first page %+v, %v", page, err)
	}
	next, _ := h.f.builds("acme/api", hubmesh.Page{N: 2, Last: page[2].ID})
	if len(next) != 2 || next[0].ID != ids[97] || next[1].ID != ids[96] {
		t.Fatalf("second page %+v", next)
	}
	all, _ := h.f.builds("acme/api", hubmesh.Page{})
	if len(all) != MaxBuildsPerRepo || all[len(all)-1].ID != ids[0] {
		t.Fatalf("all builds: %d, last %s", len(all), all[len(all)-1].ID)
	}
	if end, _ := h.f.builds("acme/api", hubmesh.Page{Last: ids[0]}); len(end) != 0 {
		t.Fatalf("after the oldest: %+v", end)
	}
	if none, err := h.f.builds("acme/web", hubmesh.Page{}); err != nil || len(none) != 0 {
		t.Fatalf("builds of another repository %+v, %v", none, err)
	}
	if _, err := h.f.builds("acme/api", hubmesh.Page{Last: "zz"}); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("bad page marker: %v", err)
	}
}

// TestFSMBuildEvents: build events reach webhooks that ask for them, with
// the build attached.
func TestFSMBuildEvents(t *testing.T) {
	h := newFSM(t)
	pushTag(h, "acme/api", "v1", "alice")
	h.mustApply(&CreateWebhook{Webhook: testHook(hookRepo, "acme/api", "", "builds",
		hubmesh.EventBuildQueued, hubmesh.EventBuildStarted, hubmesh.EventBuildSuccess, hubmesh.EventBuildFailure, hubmesh.EventBuildCancelled)})
	h.mustApply(&CreateWebhook{Webhook: testHook(hookOrg, "", "acme", "done", hubmesh.EventBuildSuccess)})
	h.mustApply(&CreateWebhook{Webhook: testHook(hookElse, "acme/api", "", "pushes", hubmesh.EventPush)})

	bs := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0), testBuild("acme/api", "dev", buildT0)}}).([]hubmesh.Build)
	a, b := bs[0], bs[1]
	h.mustApply(&ClaimBuild{ID: a.ID, Builder: "node-1", LeaseUntil: buildT0.Add(time.Minute), At: buildT0})
	h.mustApply(&UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildCloning, At: buildT0})
	h.mustApply(&UpdateBuild{ID: a.ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildSuccess, Digest: imageDigest, At: buildT0.Add(time.Minute)})
	h.mustApply(&CancelBuild{ID: b.ID, Actor: "bob", At: buildT0.Add(time.Minute)})

	type ev struct{ typ, hook, build, state string }
	var got []ev
	for _, d := range dueAll(t, h.f) {
		if d.Event.Build == nil {
			t.Fatalf("build event without the build: %+v", d.Event)
		}
		got = append(got, ev{d.Event.Type, d.Hook, d.Event.Build.ID, d.Event.Build.State})
	}
	want := []ev{
		{hubmesh.EventBuildQueued, hookRepo, a.ID, hubmesh.BuildQueued},
		{hubmesh.EventBuildQueued, hookRepo, b.ID, hubmesh.BuildQueued},
		{hubmesh.EventBuildStarted, hookRepo, a.ID, hubmesh.BuildClaimed},
		{hubmesh.EventBuildSuccess, hookRepo, a.ID, hubmesh.BuildSuccess},
		{hubmesh.EventBuildSuccess, hookOrg, a.ID, hubmesh.BuildSuccess},
		{hubmesh.EventBuildCancelled, hookRepo, b.ID, hubmesh.BuildCancelled},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
	ds, _ := h.f.deliveries(hookOrg, hubmesh.Page{})
	if e := ds[0].Event; e.Digest != digest.Digest(imageDigest) || e.Repo != "acme/api" || e.Actor != "alice" || !e.At.Equal(buildT0.Add(time.Minute)) {
		t.Fatalf("success event %+v", e)
	}
	ds, _ = h.f.deliveries(hookRepo, hubmesh.Page{N: 1})
	if e := ds[0].Event; e.Type != hubmesh.EventBuildCancelled || e.Actor != "bob" {
		t.Fatalf("cancel event %+v", e)
	}
	if ds, _ := h.f.deliveries(hookElse, hubmesh.Page{}); len(ds) != 0 {
		t.Fatalf("a push webhook got build events: %+v", ds)
	}
}

// TestFSMBuildChangesSignal: the builders' signal comes when a build is
// queued, cancelled or finished, not on heartbeats.
func TestFSMBuildChangesSignal(t *testing.T) {
	h := newFSM(t)
	pushTag(h, "acme/api", "v1", "alice")
	ch := h.f.buildWake.c()
	signalled := func(what string, want bool) {
		t.Helper()
		select {
		case <-ch:
			if !want {
				t.Fatalf("%s: signalled", what)
			}
		default:
			if want {
				t.Fatalf("%s: no signal", what)
			}
		}
	}
	signalled("before any build", false)
	b := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0)}}).([]hubmesh.Build)[0]
	signalled("queue", true)
	h.mustApply(&ClaimBuild{ID: b.ID, Builder: "n1", LeaseUntil: buildT0.Add(time.Minute), At: buildT0})
	h.mustApply(&UpdateBuild{ID: b.ID, Builder: "n1", Attempt: 1, LeaseUntil: buildT0.Add(2 * time.Minute), At: buildT0})
	signalled("claim and heartbeat", false)
	h.mustApply(&UpdateBuild{ID: b.ID, Builder: "n1", Attempt: 1, State: hubmesh.BuildFailure, At: buildT0})
	signalled("finish", true)
	c := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0)}}).([]hubmesh.Build)[0]
	signalled("queue again", true)
	h.mustApply(&CancelBuild{ID: c.ID, At: buildT0})
	signalled("cancel", true)
}

// TestFSMDeleteRepositoryDeletesBuilds: deleting a repository, or the
// namespace holding it, deletes its build settings and builds.
func TestFSMDeleteRepositoryDeletesBuilds(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateUser{User: testUser("alice")})
	for _, repo := range []string{"acme/api", "acme/apiv2", "alice/app", "bob/app"} {
		pushTag(h, repo, "v1", "alice")
		h.mustApply(&SetBuildSettings{Settings: testBuildSettings(repo)})
		bs := h.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild(repo, "main", buildT0), testBuild(repo, "dev", buildT0)}}).([]hubmesh.Build)
		h.mustApply(&CancelBuild{ID: bs[0].ID, At: buildT0})
	}
	h.mustApply(&DeleteRepository{Name: "acme/api", At: buildT0, Actor: "root"})
	st := h.dump()
	if _, ok := st["buildset/acme/api"]; ok || keysUnder(st, "buildrepo/acme/api\x00") != 0 {
		t.Fatal("build state of a deleted repository survived")
	}
	if keysUnder(st, "build/") != 6 || keysUnder(st, "buildopen/") != 3 || keysUnder(st, "buildset/") != 3 {
		t.Fatalf("builds %d, open %d, settings %d: want 6, 3, 3",
			keysUnder(st, "build/"), keysUnder(st, "buildopen/"), keysUnder(st, "buildset/"))
	}
	if _, err := h.f.buildSettings("acme/apiv2"); err != nil {
		t.Fatalf("a repository whose name extends the deleted one lost its settings: %v", err)
	}
	h.mustApply(&DeleteUser{Name: "alice"})
	st = h.dump()
	if _, ok := st["buildset/alice/app"]; ok || keysUnder(st, "buildrepo/alice/") != 0 {
		t.Fatal("build state of a deleted namespace survived")
	}
	if keysUnder(st, "build/") != 4 || keysUnder(st, "buildopen/") != 2 {
		t.Fatalf("builds %d, open %d after the namespace: want 4, 2", keysUnder(st, "build/"), keysUnder(st, "buildopen/"))
	}
}

func TestSnapshotRoundTripBuilds(t *testing.T) {
	src := newFSM(t)
	pushTag(src, "acme/api", "v1", "alice")
	src.mustApply(&SetBuildSettings{Settings: testBuildSettings("acme/api")})
	bs := src.mustApply(&QueueBuilds{Builds: []hubmesh.Build{testBuild("acme/api", "main", buildT0), testBuild("acme/api", "dev", buildT0)}}).([]hubmesh.Build)
	src.mustApply(&ClaimBuild{ID: bs[0].ID, Builder: "node-1", LeaseUntil: buildT0.Add(time.Minute), At: buildT0})
	dst := newFSM(t)
	restoreInto(t, src, dst, "buildset/", "build/", "buildrepo/", "buildopen/")
	dst.index = src.index
	done := dst.mustApply(&UpdateBuild{ID: bs[0].ID, Builder: "node-1", Attempt: 1, State: hubmesh.BuildSuccess, At: buildT0.Add(time.Second)}).(hubmesh.Build)
	if done.State != hubmesh.BuildSuccess {
		t.Fatalf("build after restore %+v", done)
	}
	if ids := claimable(t, dst.f, buildT0); len(ids) != 1 || ids[0] != bs[1].ID {
		t.Fatalf("queue after restore %v", ids)
	}
}

// TestClusterBuilds drives the build methods through a follower, so that
// the results come back over the forwarding RPC.
func TestClusterBuilds(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := t.Context()
	l, fs := c.leader()
	f := fs[0] // writes through the follower; reads that must see them from the leader
	layer := blobDesc("layer")
	if err := f.LinkBlob(ctx, "acme/api", layer); err != nil {
		t.Fatal(err)
	}
	if err := f.PutManifest(ctx, imageManifest("acme/api", "v1", layer), []string{"v1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.SetBuildSettings(ctx, testBuildSettings("acme/api")); err != nil {
		t.Fatal(err)
	}
	if s, err := f.BuildSettings(ctx, "acme/api"); err != nil || s.Source.URL == "" {
		t.Fatalf("settings %+v, %v", s, err)
	}
	if all, err := l.AllBuildSettings(); err != nil || len(all) != 1 {
		t.Fatalf("all settings %+v, %v", all, err)
	}
	select { // the signal is coalesced: drop what came before
	case <-f.BuildChanges():
	default:
	}
	bs, err := f.QueueBuilds(ctx, []hubmesh.Build{testBuild("acme/api", "main", buildT0), testBuild("acme/api", "dev", buildT0)})
	if err != nil || len(bs) != 2 || bs[0].ID == "" || bs[0].State != hubmesh.BuildQueued {
		t.Fatalf("queued %+v, %v", bs, err)
	}
	select {
	case <-f.BuildChanges():
	case <-time.After(10 * time.Second):
		t.Fatal("no BuildChanges signal after QueueBuilds")
	}
	if cl, err := f.ClaimableBuilds(buildT0, 0); err != nil || len(cl) != 2 {
		t.Fatalf("claimable %+v, %v", cl, err)
	}
	cb, err := f.ClaimBuild(ctx, bs[0].ID, f.ID(), buildT0.Add(time.Minute), buildT0)
	if err != nil || cb.Attempt != 1 || cb.Builder != f.ID() {
		t.Fatalf("claimed %+v, %v", cb, err)
	}
	if _, err := f.ClaimBuild(ctx, bs[0].ID, "other", buildT0.Add(time.Minute), buildT0.Add(time.Second)); !errors.Is(err, hubmesh.ErrExists) {
		t.Fatalf("second claim: %v", err)
	}
	ub, err := f.UpdateBuild(ctx, UpdateBuild{ID: bs[0].ID, Builder: f.ID(), Attempt: 1, State: hubmesh.BuildSuccess, Digest: imageDigest, At: buildT0.Add(time.Minute)})
	if err != nil || ub.State != hubmesh.BuildSuccess || ub.Digest != imageDigest {
		t.Fatalf("updated %+v, %v", ub, err)
	}
	if _, err := f.UpdateBuild(ctx, UpdateBuild{ID: bs[0].ID, Builder: "other", Attempt: 1, State: hubmesh.BuildFailure, At: buildT0}); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("update by another: %v", err)
	}
	cc, err := f.CancelBuild(ctx, bs[1].ID, "bob", buildT0.Add(time.Minute))
	if err != nil || cc.State != hubmesh.BuildCancelled {
		t.Fatalf("cancelled %+v, %v", cc, err)
	}
	if got, err := l.Build(ctx, bs[0].ID); err != nil || got.State != hubmesh.BuildSuccess {
		t.Fatalf("build %+v, %v", got, err)
	}
	if _, err := f.Build(ctx, "00000000000000ff0001"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("unknown build: %v", err)
	}
	if list, err := l.Builds(ctx, "acme/api", hubmesh.Page{}); err != nil || len(list) != 2 || list[0].ID != bs[1].ID {
		t.Fatalf("builds %+v, %v", list, err)
	}
	if err := f.DeleteBuildSettings(ctx, "acme/api"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.BuildSettings(ctx, "acme/api"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("settings after delete: %v", err)
	}
}
