package node

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/search"
)

// fakeFeed is a repository state with a change log that can lose its
// history (as consensus' does on overflow or restore).
type fakeFeed struct {
	mu      sync.Mutex
	repos   map[string]hubmesh.Repository
	applied uint64
	log     []struct {
		i    uint64
		repo string
	}
	floor uint64
	sig   chan struct{}
	scans int
}

func newFakeFeed() *fakeFeed {
	return &fakeFeed{repos: map[string]hubmesh.Repository{}, sig: make(chan struct{}, 1)}
}

func (f *fakeFeed) set(r hubmesh.Repository, del bool) {
	f.mu.Lock()
	f.applied++
	if del {
		delete(f.repos, r.Name)
	} else {
		f.repos[r.Name] = r
	}
	f.log = append(f.log, struct {
		i    uint64
		repo string
	}{f.applied, r.Name})
	f.mu.Unlock()
	select {
	case f.sig <- struct{}{}:
	default:
	}
}

func (f *fakeFeed) forget() {
	f.mu.Lock()
	f.floor, f.log = f.applied, nil
	f.mu.Unlock()
}

func (f *fakeFeed) ScanRepositories(fn func(hubmesh.Repository) error) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans++
	for _, name := range slices.Sorted(maps.Keys(f.repos)) {
		if err := fn(f.repos[name]); err != nil {
			return 0, err
		}
	}
	return f.applied, nil
}

func (f *fakeFeed) ChangedRepositories(since uint64) ([]string, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if since < f.floor {
		return nil, f.applied, false
	}
	var out []string
	for _, c := range f.log {
		if c.i > since && !slices.Contains(out, c.repo) {
			out = append(out, c.repo)
		}
	}
	return out, f.applied, true
}

func (f *fakeFeed) RepositoryChanges() <-chan struct{} { return f.sig }

func (f *fakeFeed) LookupRepositories(names []string) (map[string]hubmesh.Repository, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]hubmesh.Repository{}
	for _, n := range names {
		if r, ok := f.repos[n]; ok {
			out[n] = r
		}
	}
	return out, nil
}

func found(s *searchIndex, q string) []string {
	var out []string
	for _, h := range s.Search(search.Query{Text: q}).Hits {
		out = append(out, h.Name)
	}
	return out
}

func TestSearchIndexFollowsChanges(t *testing.T) {
	feed := newFakeFeed()
	feed.set(hubmesh.Repository{Name: "acme/api", Description: "rest api"}, false)
	s := newSearchIndex(feed, slog.New(slog.DiscardHandler))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.sync())
	if got := found(s, "api"); !slices.Equal(got, []string{"acme/api"}) {
		t.Fatalf("after build %q", got)
	}
	feed.set(hubmesh.Repository{Name: "acme/web", Description: "web api"}, false)
	feed.set(hubmesh.Repository{Name: "acme/api"}, true)
	must(s.sync())
	if got := found(s, "api"); !slices.Equal(got, []string{"acme/web"}) {
		t.Fatalf("after changes %q", got)
	}
	// the log lost its history: the next sync rebuilds
	feed.set(hubmesh.Repository{Name: "acme/db", Description: "api store"}, false)
	feed.forget()
	scans := feed.scans
	must(s.sync())
	if feed.scans != scans+1 {
		t.Fatal("no rebuild after the log was reset")
	}
	if got := found(s, "api"); !slices.Equal(got, []string{"acme/db", "acme/web"}) {
		t.Fatalf("after rebuild %q", got)
	}

	// Run picks up signalled changes
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	feed.set(hubmesh.Repository{Name: "zed/api", Description: "", StarCount: 3}, false)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(found(s, "zed"), "zed/api") {
		if time.Now().After(deadline) {
			t.Fatal("Run did not apply a signalled change")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type fakePullSink struct {
	mu    sync.Mutex
	fail  bool
	total map[string]consensus.PullStat
	calls int
}

func (f *fakePullSink) AddPulls(_ context.Context, pulls map[string]consensus.PullStat) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail {
		return errors.New("no quorum")
	}
	for repo, st := range pulls {
		cur := f.total[repo]
		cur.Count += st.Count
		if cur.Last == nil {
			cur.Last = map[string]time.Time{}
		}
		maps.Copy(cur.Last, st.Last)
		f.total[repo] = cur
	}
	return nil
}

func TestPullCounter(t *testing.T) {
	sink := &fakePullSink{total: map[string]consensus.PullStat{}, fail: true}
	p := newPullCounter(sink, slog.New(slog.DiscardHandler))
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		p.Pulled("a/b", "latest", t0.Add(time.Duration(i)*time.Second))
	}
	p.Pulled("a/c", "sha256:"+string(make([]byte, 0)), t0)
	p.flush(t.Context()) // fails: the counts stay
	sink.fail = false
	p.Pulled("a/b", "v1", t0)
	p.flush(t.Context())
	if sink.calls != 2 {
		t.Fatalf("%d AddPulls calls, want one per flush", sink.calls)
	}
	st := sink.total["a/b"]
	if st.Count != 11 || !st.Last["latest"].Equal(t0.Add(9*time.Second)) || !st.Last["v1"].Equal(t0) {
		t.Fatalf("a/b %+v", st)
	}
	p.flush(t.Context()) // nothing pending: no command
	if sink.calls != 2 {
		t.Fatal("an empty flush proposed a command")
	}
	for i := range consensus.MaxPullRefs + 5 {
		p.Pulled("a/d", "t"+string(rune('a'+i%26))+string(rune('a'+i/26)), t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(p.pending["a/d"].Last); n != consensus.MaxPullRefs {
		t.Fatalf("%d refs kept, want %d", n, consensus.MaxPullRefs)
	}
}
