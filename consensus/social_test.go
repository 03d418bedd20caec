package consensus

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

func socialCommands() []Command {
	return []Command{
		&Star{User: "alice", Repo: "acme/api", At: t0},
		&Unstar{User: "alice", Repo: "acme/api"},
		&AddPulls{Pulls: map[string]PullStat{"acme/api": {Count: 3, Last: map[string]time.Time{"latest": t0, "sha256:" + strings.Repeat("a", 64): t0}}}},
		&SetOfficial{Namespace: "library", Official: true},
	}
}

func TestSocialCommandsRoundTrip(t *testing.T) {
	checkCommandsRoundTrip(t, socialCommands(), TypeStar, TypeSetOfficial)
}

var undecodableSocial = map[Type]string{
	TypeStar:        `{"user":"alice","repo":"a/b","at":"noon"}`,
	TypeUnstar:      `{"user":["alice"]}`,
	TypeAddPulls:    `{"pulls":{"a/b":{"count":"many"}}}`,
	TypeSetOfficial: `{"namespace":"library","official":"yes"}`,
}

func TestSocialDecodeFailure(t *testing.T) {
	for typ, payload := range undecodableSocial {
		t.Run(typ.String(), func(t *testing.T) {
			if _, err := Decode(envelope(typ, payload)); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("Decode error %v, want ErrInvalid", err)
			}
			h := newFSM(t)
			h.mustApply(&CreateUser{User: testUser("alice")})
			h.mustHalt(envelope(typ, payload))
		})
	}
}

func TestSocialValidate(t *testing.T) {
	tooMany := map[string]time.Time{}
	for i := range MaxPullRefs + 1 {
		tooMany[strings.Repeat("t", i+1)] = t0
	}
	for _, c := range []Command{
		&Star{User: "A", Repo: "a/b"},
		&Star{User: "alice", Repo: "A/b"},
		&Unstar{User: "alice", Repo: ""},
		&AddPulls{Pulls: map[string]PullStat{"a/b": {Count: -1}}},
		&AddPulls{Pulls: map[string]PullStat{"a/b": {Last: map[string]time.Time{"bad tag": t0}}}},
		&AddPulls{Pulls: map[string]PullStat{"a/b": {Last: map[string]time.Time{"sha256:nothex": t0}}}},
		&AddPulls{Pulls: map[string]PullStat{"a/b": {Last: tooMany}}},
		&SetOfficial{},
		&SetOfficial{Repo: "a/b", Namespace: "a"},
		&SetOfficial{Namespace: "a/b"},
	} {
		if err := c.validate(); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%#v: validate = %v, want ErrInvalid", c, err)
		}
	}
}

func (h *fsmHarness) repo(name string) hubmesh.Repository {
	h.t.Helper()
	r, err := h.f.repository(name)
	if err != nil {
		h.t.Fatalf("repository %s: %v", name, err)
	}
	return r
}

func TestFSMStars(t *testing.T) {
	h := newFSM(t)
	for _, u := range []string{"alice", "bob"} {
		h.mustApply(&CreateUser{User: testUser(u)})
	}
	h.mustApply(newRepo("bob/app"))
	h.mustApply(newRepo("bob/db"))
	n := &Node{fsm: h.f}

	h.mustApply(&Star{User: "alice", Repo: "bob/app", At: t0})
	h.mustApply(&Star{User: "alice", Repo: "bob/app", At: t0.Add(time.Hour)}) // again: no change
	h.mustApply(&Star{User: "bob", Repo: "bob/app", At: t0})
	h.mustApply(&Star{User: "alice", Repo: "bob/db", At: t0})
	if c := h.repo("bob/app").StarCount; c != 2 {
		t.Fatalf("star count %d, want 2", c)
	}
	mustErr(t, "unknown user", h.applyErr(&Star{User: "carol", Repo: "bob/app"}), hubmesh.ErrNotFound)
	mustErr(t, "unknown repo", h.applyErr(&Star{User: "alice", Repo: "bob/nope"}), hubmesh.ErrRepoUnknown)

	got, err := n.Starred(t.Context(), "alice", hubmesh.Page{})
	if err != nil || !slices.Equal(got, []string{"bob/app", "bob/db"}) {
		t.Fatalf("starred %v, %v", got, err)
	}
	if got, _ := n.Starred(t.Context(), "alice", hubmesh.Page{Last: "bob/app", N: 5}); !slices.Equal(got, []string{"bob/db"}) {
		t.Fatalf("starred page 2 %v", got)
	}
	if got, _ := n.Starrers(t.Context(), "bob/app", hubmesh.Page{}); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("starrers %v", got)
	}

	h.mustApply(&Unstar{User: "bob", Repo: "bob/app"})
	h.mustApply(&Unstar{User: "bob", Repo: "bob/app"}) // idempotent
	if c := h.repo("bob/app").StarCount; c != 1 {
		t.Fatalf("star count after unstar %d, want 1", c)
	}

	// Deleting a repository takes its stars out of the users' lists;
	// deleting a user takes their stars off the counts.
	h.mustApply(&DeleteRepository{Name: "bob/db"})
	if got, _ := n.Starred(t.Context(), "alice", hubmesh.Page{}); !slices.Equal(got, []string{"bob/app"}) {
		t.Fatalf("starred after repo delete %v", got)
	}
	h.mustApply(&Star{User: "bob", Repo: "bob/app", At: t0})
	h.mustApply(&DeleteUser{Name: "alice"})
	if c := h.repo("bob/app").StarCount; c != 1 {
		t.Fatalf("star count after deleting a starrer %d, want 1", c)
	}
	h.mustApply(&DeleteUser{Name: "bob"}) // and his namespace
	st := h.dump()
	for _, p := range []string{"star/", "starred/", "repo/"} {
		if k := keysUnder(st, p); k != 0 {
			t.Fatalf("%d keys left under %s", k, p)
		}
	}
}

func TestFSMPulls(t *testing.T) {
	h := newFSM(t)
	h.mustApply(newRepo("a/b"))
	n := &Node{fsm: h.f}
	dg := "sha256:" + strings.Repeat("b", 64)
	h.mustApply(&AddPulls{Pulls: map[string]PullStat{
		"a/b":    {Count: 3, Last: map[string]time.Time{"latest": t0.Add(time.Minute), dg: t0}},
		"a/gone": {Count: 9}, // unknown: skipped
	}})
	h.mustApply(&AddPulls{Pulls: map[string]PullStat{
		"a/b": {Count: 2, Last: map[string]time.Time{"latest": t0}}, // older: kept newer
	}})
	if c := h.repo("a/b").PullCount; c != 5 {
		t.Fatalf("pull count %d, want 5", c)
	}
	times, err := n.PullTimes(t.Context(), "a/b")
	want := map[string]time.Time{"latest": t0.Add(time.Minute), dg: t0}
	if err != nil || !maps.EqualFunc(times, want, time.Time.Equal) {
		t.Fatalf("pull times %v, %v", times, err)
	}
	if _, err := h.f.repository("a/gone"); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Fatalf("pulls created a repository: %v", err)
	}
	h.mustApply(&DeleteRepository{Name: "a/b"})
	if k := keysUnder(h.dump(), "pull/"); k != 0 {
		t.Fatalf("%d pull keys left", k)
	}
}

func TestAddPullsKeepsNewestRefs(t *testing.T) {
	last := map[string]time.Time{}
	for i := range 100 {
		last["t"+string(rune('a'+i%26))+strings.Repeat("x", i/26)] = t0.Add(time.Duration(i) * time.Second)
	}
	got := newestRefs(last, MaxPullRefs)
	if len(got) != MaxPullRefs {
		t.Fatalf("%d refs", len(got))
	}
	for ref, at := range got {
		if at.Before(t0.Add(time.Duration(100-MaxPullRefs) * time.Second)) {
			t.Fatalf("kept an old ref %s %v", ref, at)
		}
	}
}

func TestFSMOfficial(t *testing.T) {
	h := newFSM(t)
	for _, r := range []string{"library/postgres", "library/redis", "acme/api", "nginx"} {
		h.mustApply(newRepo(r))
	}
	n := &Node{fsm: h.f}
	start := h.f.applied.Load()
	h.mustApply(&SetOfficial{Namespace: "library", Official: true})
	h.mustApply(&SetOfficial{Repo: "nginx", Official: true})
	mustErr(t, "unknown repo", h.applyErr(&SetOfficial{Repo: "acme/nope", Official: true}), hubmesh.ErrRepoUnknown)

	changed, _, ok := n.ChangedRepositories(start)
	if !ok || !slices.Equal(changed, []string{"library/postgres", "library/redis", "nginx"}) {
		t.Fatalf("changed %v ok=%v", changed, ok)
	}
	official := map[string]bool{}
	applied, err := n.ScanRepositories(func(r hubmesh.Repository) error {
		official[r.Name] = r.IsOfficial
		return nil
	})
	if err != nil || applied != h.f.applied.Load() {
		t.Fatalf("scan: applied %d, %v", applied, err)
	}
	want := map[string]bool{"library/postgres": true, "library/redis": true, "acme/api": false, "nginx": true}
	if !maps.Equal(official, want) {
		t.Fatalf("official %v", official)
	}
	// a repository created later in an official namespace is official
	h.mustApply(newRepo("library/alpine"))
	if !h.repo("library/alpine").IsOfficial || h.repo("acme/api").IsOfficial {
		t.Fatal("official flag of the namespace not applied on read")
	}
	got, err := n.LookupRepositories([]string{"library/alpine", "acme/api", "acme/gone"})
	if err != nil || len(got) != 2 || !got["library/alpine"].IsOfficial {
		t.Fatalf("lookup %v, %v", got, err)
	}
	if ns, _ := n.OfficialNamespaces(t.Context()); !slices.Equal(ns, []string{"library"}) {
		t.Fatalf("official namespaces %v", ns)
	}
	h.mustApply(&SetOfficial{Namespace: "library", Official: false})
	if h.repo("library/alpine").IsOfficial {
		t.Fatal("namespace flag not cleared")
	}
	// the repository's own flag goes with an UpdateRepository result too
	res := h.mustApply(&UpdateRepository{Name: "nginx", Update: hubmesh.RepositoryUpdate{At: t0}})
	if r := res.(hubmesh.Repository); !r.IsOfficial {
		t.Fatalf("update result %+v", r)
	}
}

func TestRepoChangeLog(t *testing.T) {
	h := newFSM(t)
	n := &Node{fsm: h.f}
	sig := n.RepositoryChanges()
	h.mustApply(&CreateUser{User: testUser("alice")})
	base := h.f.applied.Load()
	if got, upTo, ok := n.ChangedRepositories(base); !ok || len(got) != 0 || upTo != base {
		t.Fatalf("no change yet: %v %d %v", got, upTo, ok)
	}
	h.mustApply(newRepo("alice/a"))
	h.mustApply(newRepo("alice/b"))
	mid := h.f.applied.Load()
	h.mustApply(&Star{User: "alice", Repo: "alice/a", At: t0})
	h.applyErr(&Star{User: "alice", Repo: "alice/none"}) // rejected: no change
	select {
	case <-sig:
	default:
		t.Fatal("no signal after changes")
	}
	got, upTo, ok := n.ChangedRepositories(base)
	if !ok || !slices.Equal(got, []string{"alice/a", "alice/b"}) || upTo != h.f.applied.Load() {
		t.Fatalf("changes since base: %v %d %v", got, upTo, ok)
	}
	if got, _, _ := n.ChangedRepositories(mid); !slices.Equal(got, []string{"alice/a"}) {
		t.Fatalf("changes since mid: %v", got)
	}
	h.mustApply(&DeleteUser{Name: "alice"})
	if got, _, _ := n.ChangedRepositories(upTo); !slices.Equal(got, []string{"alice/a", "alice/b"}) {
		t.Fatalf("changes of a namespace delete: %v", got)
	}

	// overflow: a reader behind the dropped entries must rebuild
	l := &repoLog{}
	l.reset(10)
	for i := uint64(11); i < 11+maxRepoLog+1; i++ {
		l.add(i, map[string]struct{}{"r": {}})
	}
	if _, _, ok := l.since(10); ok {
		t.Fatal("a reader behind an overflow may go on")
	}
	if got, _, ok := l.since(11 + maxRepoLog - 1); !ok || !slices.Equal(got, []string{"r"}) {
		t.Fatalf("recent reader: %v %v", got, ok)
	}

	// a snapshot restore invalidates every reader
	src := newFSM(t)
	src.mustApply(newRepo("x/y"))
	for range 20 { // past the reader's state, so that Restore applies it
		src.mustApply(&SetSettings{})
	}
	stream := persist(t, src.f)
	before := h.f.applied.Load()
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := n.ChangedRepositories(before); ok {
		t.Fatal("a reader from before a restore may go on")
	}
}

func TestSnapshotRoundTripSocial(t *testing.T) {
	src := newFSM(t)
	populateAccounts(src)
	src.mustApply(&Star{User: "bob", Repo: "acme/api", At: t0})
	src.mustApply(&AddPulls{Pulls: map[string]PullStat{"acme/api": {Count: 4, Last: map[string]time.Time{"latest": t0}}}})
	src.mustApply(&SetOfficial{Namespace: "acme", Official: true})
	dst := newFSM(t)
	restoreInto(t, src, dst, "star/", "starred/", "pull/", "official/")
	r := dst.repo("acme/api")
	if r.StarCount != 1 || r.PullCount != 4 || !r.IsOfficial {
		t.Fatalf("restored repository %+v", r)
	}
}

func newRepo(name string) *CreateRepository {
	return &CreateRepository{Repository: hubmesh.Repository{Namespace: hubmesh.RepoOf(name), Name: name, Created: t0, Updated: t0}}
}
