package search

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

func names(r Result) []string {
	out := make([]string, len(r.Hits))
	for i, h := range r.Hits {
		out[i] = h.Name
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// corpus is a small set of repositories with known answers.
var corpus = []Doc{
	{Name: "library/postgres", Description: "The PostgreSQL object-relational database", Official: true, Stars: 10, Pulls: 1000},
	{Name: "bitnami/postgresql", Description: "Bitnami PostgreSQL image", Stars: 50, Pulls: 5000},
	{Name: "alice/postgres", Description: "my postgres fork", Stars: 1},
	{Name: "acme/postgres-exporter", Description: "Prometheus exporter", Stars: 5},
	{Name: "acme/api", Description: "The acme API server, backed by postgres", Stars: 2},
	{Name: "acme/secret-db", Description: "postgres with secrets", Private: true, Stars: 100},
	{Name: "bob/web", Description: "nginx front end", Automated: true},
	{Name: "postgres", Description: "a repository without a namespace"},
}

func newCorpus(t testing.TB) *Index {
	t.Helper()
	ix := New()
	ix.Replace(corpus)
	if ix.Len() != len(corpus) {
		t.Fatalf("len %d", ix.Len())
	}
	return ix
}

func TestTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"acme/Postgres-exporter_v2.x", []string{"acme", "postgres", "exporter", "v2", "x"}},
		{"  The THE the ", []string{"the"}},
		{"Ünïcode café", []string{"ünïcode", "café"}},
		{"---", nil},
	} {
		if got := tokens(c.in, 0); !slices.Equal(got, c.want) {
			t.Errorf("tokens(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := tokens("a b c d", 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("bounded tokens %q", got)
	}
}

func TestRanking(t *testing.T) {
	ix := newCorpus(t)
	for _, c := range []struct {
		q    string
		want []string
	}{
		// exact names (full or after the namespace) first, official first
		// among them, then by stars and pulls; then prefixes (bitnami's
		// 50 stars outweigh the exact token of the exporter); then
		// description matches
		{"postgres", []string{"library/postgres", "alice/postgres", "postgres", "bitnami/postgresql", "acme/postgres-exporter", "acme/api"}},
		{"library/postgres", []string{"library/postgres"}},
		{"postgres-ex", []string{"acme/postgres-exporter"}},
		{"acme", []string{"acme/postgres-exporter", "acme/api"}},
		{"exporter prometheus", []string{"acme/postgres-exporter"}},
		{"nginx", []string{"bob/web"}},
		{"post", []string{"library/postgres", "bitnami/postgresql", "acme/postgres-exporter", "alice/postgres", "postgres"}},
		{"nothing-like-it", []string{}},
		{"!!!", []string{}},
	} {
		r := ix.Search(Query{Text: c.q})
		if got := names(r); !slices.Equal(got, c.want) {
			t.Errorf("%q: got %q, want %q", c.q, got, c.want)
		}
		if r.Total != len(c.want) {
			t.Errorf("%q: total %d, want %d", c.q, r.Total, len(c.want))
		}
	}
}

func TestFilters(t *testing.T) {
	ix := newCorpus(t)
	for _, c := range []struct {
		name string
		q    Query
		want []string
	}{
		{"official", Query{Text: "postgres", Official: ptr(true)}, []string{"library/postgres"}},
		{"not official", Query{Text: "postgres", Official: ptr(false), MinStars: 2}, []string{"bitnami/postgresql", "acme/postgres-exporter", "acme/api"}},
		{"automated", Query{Automated: ptr(true)}, []string{"bob/web"}},
		{"min stars", Query{Text: "postgres", MinStars: 10}, []string{"library/postgres", "bitnami/postgresql"}},
		{"namespace", Query{Text: "postgres", Namespace: "acme"}, []string{"acme/postgres-exporter", "acme/api"}},
		{"empty text ranks by popularity", Query{Namespace: "acme"}, []string{"acme/postgres-exporter", "acme/api"}},
	} {
		if got := names(ix.Search(c.q)); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestVisibility(t *testing.T) {
	ix := newCorpus(t)
	var asked []string
	var mu sync.Mutex
	q := Query{Text: "secret", CanSee: func(name string) bool {
		mu.Lock()
		asked = append(asked, name)
		mu.Unlock()
		return false
	}}
	if r := ix.Search(q); r.Total != 0 || len(r.Hits) != 0 {
		t.Fatalf("hidden private repo found: %+v", r)
	}
	if !slices.Equal(asked, []string{"acme/secret-db"}) {
		t.Fatalf("CanSee asked about %q, want only the private candidate", asked)
	}
	q.CanSee = func(string) bool { return true }
	if got := names(ix.Search(q)); !slices.Equal(got, []string{"acme/secret-db"}) {
		t.Fatalf("visible private repo: %q", got)
	}
	if got := names(ix.Search(Query{Text: "secret", SeeAll: true})); len(got) != 1 {
		t.Fatalf("admin: %q", got)
	}
	if got := names(ix.Search(Query{Text: "secret"})); len(got) != 0 {
		t.Fatalf("anonymous: %q", got)
	}
	// the private repo, with 100 stars, does not disturb the public count
	if r := ix.Search(Query{Text: "postgres"}); r.Total != 6 {
		t.Fatalf("total %d", r.Total)
	}
}

func TestPagination(t *testing.T) {
	ix := New()
	var docs []Doc
	for i := range 23 {
		docs = append(docs, Doc{Name: fmt.Sprintf("ns/app-%02d", i), Description: "an app", Stars: int64(i)})
	}
	ix.Replace(docs)
	var all []string
	for page := 1; page <= 3; page++ {
		r := ix.Search(Query{Text: "app", Page: page, PageSize: 10})
		if r.Total != 23 || r.Pages() != 3 || r.Page != page || r.PageSize != 10 {
			t.Fatalf("page %d: %+v", page, r)
		}
		all = append(all, names(r)...)
	}
	if len(all) != 23 || all[0] != "ns/app-22" || all[22] != "ns/app-00" {
		t.Fatalf("pages: %q", all)
	}
	if r := ix.Search(Query{Text: "app", Page: 4, PageSize: 10}); len(r.Hits) != 0 || r.Total != 23 {
		t.Fatalf("past the end: %+v", r)
	}
	if r := ix.Search(Query{Text: "app", PageSize: 1000}); r.PageSize != MaxPageSize || len(r.Hits) != 23 {
		t.Fatalf("capped page: %d %d", r.PageSize, len(r.Hits))
	}
	if r := ix.Search(Query{Text: "app"}); r.PageSize != DefaultPageSize || r.Page != 1 {
		t.Fatalf("defaults: %+v", r)
	}
}

func TestUpdate(t *testing.T) {
	ix := newCorpus(t)
	// counters only
	ix.Update([]Doc{{Name: "alice/postgres", Description: "my postgres fork", Stars: 1000}}, nil)
	if got := names(ix.Search(Query{Text: "fork", MinStars: 999})); !slices.Equal(got, []string{"alice/postgres"}) {
		t.Fatalf("after counter update %q", got)
	}
	// new description, removal, addition into a freed slot
	ix.Update([]Doc{{Name: "alice/postgres", Description: "a spoon"}}, []string{"bob/web", "nope/nope"})
	ix.Update([]Doc{{Name: "zed/web", Description: "nginx again"}, {Name: "aaa/web", Description: "nginx too"}}, nil)
	if got := names(ix.Search(Query{Text: "fork"})); len(got) != 0 {
		t.Fatalf("old description still matches: %q", got)
	}
	if got := names(ix.Search(Query{Text: "spoon"})); !slices.Equal(got, []string{"alice/postgres"}) {
		t.Fatalf("new description: %q", got)
	}
	if got := names(ix.Search(Query{Text: "nginx"})); !slices.Equal(got, []string{"aaa/web", "zed/web"}) {
		t.Fatalf("nginx: %q", got)
	}
	if got := names(ix.Search(Query{Text: "zed"})); !slices.Equal(got, []string{"zed/web"}) {
		t.Fatalf("new token: %q", got)
	}
	if ix.Len() != len(corpus)+1 {
		t.Fatalf("len %d", ix.Len())
	}
}

// TestUpdateMatchesRebuild: any sequence of updates answers as a fresh
// build of the same documents does.
func TestUpdateMatchesRebuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"alpha", "beta", "gamma", "delta", "alp", "be", "postgres", "redis", "web"}
	live := map[string]Doc{}
	ix := New()
	for round := range 200 {
		var ups []Doc
		var rms []string
		for range 1 + rng.IntN(5) {
			name := fmt.Sprintf("%s/%s-%d", words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(5))
			if rng.IntN(4) == 0 {
				rms = append(rms, name)
				delete(live, name)
				continue
			}
			d := Doc{Name: name, Description: words[rng.IntN(len(words))] + " " + words[rng.IntN(len(words))], Stars: int64(rng.IntN(10))}
			ups = append(ups, d)
		}
		// the index applies removals first, then upserts
		for _, d := range ups {
			live[d.Name] = d
		}
		for _, name := range rms {
			if !slices.ContainsFunc(ups, func(d Doc) bool { return d.Name == name }) {
				delete(live, name)
			}
		}
		ix.Update(ups, rms)
		if round%20 != 19 {
			continue
		}
		fresh := New()
		var all []Doc
		for _, d := range live {
			all = append(all, d)
		}
		fresh.Replace(all)
		for _, w := range append(words, "", "a", "p") {
			a, b := ix.Search(Query{Text: w, PageSize: 100}), fresh.Search(Query{Text: w, PageSize: 100})
			if !slices.Equal(names(a), names(b)) || a.Total != b.Total {
				t.Fatalf("round %d %q: updated %q, rebuilt %q", round, w, names(a), names(b))
			}
		}
	}
}

func TestConcurrentSearchAndUpdate(t *testing.T) {
	ix := newCorpus(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if g == 0 {
					ix.Update([]Doc{{Name: fmt.Sprintf("c/r%d", i%7), Description: strings.Repeat("x ", i%3), Stars: int64(i)}}, []string{fmt.Sprintf("c/r%d", (i+3)%7)})
					continue
				}
				if r := ix.Search(Query{Text: "postgres", CanSee: func(string) bool { return true }}); r.Total < 6 {
					t.Errorf("total %d", r.Total)
					return
				}
			}
		})
	}
	wg.Wait()
}
