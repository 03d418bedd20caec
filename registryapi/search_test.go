package registryapi

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/search"
)

// fakeSocial implements Social and PullStats over fakeAccounts: stars
// change the star counts of the repository records, pulls are counted at
// once (no batching here).
type fakeSocial struct {
	acc      *fakeAccounts
	mu       sync.Mutex
	stars    map[string]map[string]bool // user -> repo
	official map[string]bool            // namespaces
	pulls    map[string]map[string]time.Time
}

func newFakeSocial(acc *fakeAccounts) *fakeSocial {
	return &fakeSocial{acc: acc, stars: map[string]map[string]bool{}, official: map[string]bool{}, pulls: map[string]map[string]time.Time{}}
}

func (f *fakeSocial) bump(repo string, fn func(*hubmesh.Repository)) error {
	f.acc.mu.Lock()
	defer f.acc.mu.Unlock()
	r, ok := f.acc.repos[repo]
	if !ok {
		return fmt.Errorf("repo %s: %w", repo, hubmesh.ErrRepoUnknown)
	}
	fn(&r)
	f.acc.repos[repo] = r
	return nil
}

func (f *fakeSocial) Star(_ context.Context, user, repo string, _ time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stars[user][repo] {
		return nil
	}
	if err := f.bump(repo, func(r *hubmesh.Repository) { r.StarCount++ }); err != nil {
		return err
	}
	if f.stars[user] == nil {
		f.stars[user] = map[string]bool{}
	}
	f.stars[user][repo] = true
	return nil
}

func (f *fakeSocial) Unstar(_ context.Context, user, repo string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stars[user][repo] {
		return nil
	}
	delete(f.stars[user], repo)
	return f.bump(repo, func(r *hubmesh.Repository) { r.StarCount-- })
}

func (f *fakeSocial) Starred(_ context.Context, user string, p hubmesh.Page) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return pageOf(slices.Sorted(maps.Keys(f.stars[user])), p), nil
}

func (f *fakeSocial) SetOfficial(_ context.Context, repo, ns string, official bool) error {
	if repo != "" {
		return f.bump(repo, func(r *hubmesh.Repository) { r.IsOfficial = official })
	}
	f.mu.Lock()
	f.official[ns] = official
	f.mu.Unlock()
	f.acc.mu.Lock()
	defer f.acc.mu.Unlock()
	for name, r := range f.acc.repos {
		if hubmesh.RepoOf(name) == ns {
			r.IsOfficial = official
			f.acc.repos[name] = r
		}
	}
	return nil
}

func (f *fakeSocial) PullTimes(_ context.Context, repo string) (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.pulls[repo]), nil
}

func (f *fakeSocial) Pulled(repo, ref string, at time.Time) {
	f.mu.Lock()
	if f.pulls[repo] == nil {
		f.pulls[repo] = map[string]time.Time{}
	}
	f.pulls[repo][ref] = at
	f.mu.Unlock()
	_ = f.bump(repo, func(r *hubmesh.Repository) { r.PullCount++ })
}

// hubEnv is an authEnv whose server also has the search index, stars,
// pull counting and tag details.
type hubEnv struct {
	*authEnv
	social *fakeSocial
	ix     *search.Index
}

func newHubEnv(t *testing.T) *hubEnv {
	e := &hubEnv{authEnv: newAuthEnv(t), ix: search.New()}
	e.social = newFakeSocial(e.acc)
	logger := e.a.log
	v2, err := New(Config{Manifests: e.reg, Listings: e.reg, Links: e.reg, Blobs: e.reg, Uploads: e.reg, Logger: logger, Auth: e.a, Stats: e.social})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := NewHub(HubConfig{
		Auth: e.a, Accounts: e.acc, Listings: e.reg, Logger: logger,
		Search: e.ix, Social: e.social, Manifests: e.reg, Blobs: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", v2)
	mux.Handle("/api/v1/", hub)
	mux.Handle("/v1/", hub)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	e.host, e.h = strings.TrimPrefix(e.srv.URL, "http://"), mux
	return e
}

// reindex rebuilds the search index from the repository records, as the
// node does from the replicated state.
func (e *hubEnv) reindex() {
	e.acc.mu.Lock()
	defer e.acc.mu.Unlock()
	var docs []search.Doc
	for _, r := range e.acc.repos {
		docs = append(docs, search.FromRepository(r))
	}
	e.ix.Replace(docs)
}

func (e *hubEnv) describe(name, desc string) {
	e.t.Helper()
	if err := e.social.bump(name, func(r *hubmesh.Repository) { r.Description = desc }); err != nil {
		e.t.Fatal(err)
	}
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func TestV1SearchForDocker(t *testing.T) {
	e := newHubEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	for _, r := range []struct {
		name, desc string
		private    bool
	}{
		{"library/postgres", "The PostgreSQL object-relational database", false},
		{"alice/postgres", "alice's postgres", false},
		{"alice/secret", "postgres with secrets", true},
		{"bob/pg-tools", "tools for postgres", false},
	} {
		e.addRepo(r.name, r.private)
		e.describe(r.name, r.desc)
	}
	admin := basic("admin", testPassword)
	e.expect(e.do("PUT", "/api/v1/namespaces/library/official", basic("alice", testPassword), nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("PUT", "/api/v1/namespaces/library/official", admin, nil), http.StatusNoContent, "")
	e.reindex()

	r := e.do("GET", "/v1/_ping", "", nil)
	e.expect(r, http.StatusOK, "")
	if r.hdr.Get("X-Docker-Registry-Version") == "" || r.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("ping headers %v", r.hdr)
	}

	r = e.do("GET", "/v1/search?q=postgres&n=25", "", nil)
	e.expect(r, http.StatusOK, "")
	body := decode[map[string]any](t, r)
	if got := sortedKeys(body); !slices.Equal(got, []string{"num_pages", "num_results", "page", "page_size", "query", "results"}) {
		t.Fatalf("v1 search keys %q", got)
	}
	results := body["results"].([]any)
	if got := sortedKeys(results[0].(map[string]any)); !slices.Equal(got, []string{"description", "is_automated", "is_official", "name", "star_count"}) {
		t.Fatalf("v1 result keys %q", got)
	}
	res := decode[v1Results](t, r)
	var names []string
	for _, x := range res.Results {
		names = append(names, x.Name)
	}
	if !slices.Equal(names, []string{"library/postgres", "alice/postgres", "bob/pg-tools"}) || res.NumResults != 3 || res.PageSize != 25 || res.Query != "postgres" || !res.Results[0].IsOfficial {
		t.Fatalf("anonymous search %s", r.body)
	}
	for _, c := range []struct {
		who    string
		secret bool
	}{{basic("alice", testPassword), true}, {basic("bob", testPassword), false}, {admin, true}} {
		res := decode[v1Results](t, e.do("GET", "/v1/search?q=secret", c.who, nil))
		if (res.NumResults == 1) != c.secret {
			t.Errorf("%s sees secret: %+v", c.who, res)
		}
	}
	if res := decode[v1Results](t, e.do("GET", "/v1/search?q=postgres&n=1&page=2", "", nil)); res.NumPages != 3 || len(res.Results) != 1 || res.Results[0].Name != "alice/postgres" {
		t.Fatalf("page 2 of 1: %+v", res)
	}
	e.expect(e.do("GET", "/v1/search?q=x&n=0", "", nil), http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")
	e.expect(e.do("GET", "/v1/search?q=x", "Basic bm9ib2R5Ong=", nil), http.StatusUnauthorized, "UNAUTHORIZED")
}

func TestAPISearch(t *testing.T) {
	e := newHubEnv(t)
	e.addUser("alice", false)
	for i := range 5 {
		name := fmt.Sprintf("alice/app%d", i)
		e.addRepo(name, false)
		e.describe(name, "an app")
		for range i {
			_ = e.social.bump(name, func(r *hubmesh.Repository) { r.StarCount++ })
		}
	}
	e.addRepo("library/app", false)
	_ = e.social.SetOfficial(t.Context(), "library/app", "", true)
	e.reindex()

	type page struct {
		Count    int               `json:"count"`
		NumPages int               `json:"num_pages"`
		Next     *string           `json:"next"`
		Previous *string           `json:"previous"`
		Results  []apiSearchResult `json:"results"`
	}
	names := func(p page) []string {
		var out []string
		for _, r := range p.Results {
			out = append(out, r.RepoName)
		}
		return out
	}
	for _, c := range []struct {
		q    string
		want []string
	}{
		{"q=app&is_official=true", []string{"library/app"}},
		{"q=app&is_official=false&min_stars=3", []string{"alice/app4", "alice/app3"}},
		{"q=app&namespace=library", []string{"library/app"}},
		{"namespace=alice&min_stars=4", []string{"alice/app4"}},
		{"q=app&is_automated=true", nil},
	} {
		r := e.do("GET", "/api/v1/search?"+c.q, "", nil)
		e.expect(r, http.StatusOK, "")
		if got := names(decode[page](t, r)); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.q, got, c.want)
		}
	}
	r := e.do("GET", "/api/v1/search?q=app&page_size=2&page=2", "", nil)
	p := decode[page](t, r)
	if p.Count != 6 || p.NumPages != 3 || len(p.Results) != 2 || p.Next == nil || p.Previous == nil ||
		!strings.Contains(*p.Next, "page=3") || !strings.Contains(*p.Previous, "page=1") {
		t.Fatalf("page 2: %s", r.body)
	}
	r = e.do("GET", strings.TrimPrefix(*p.Next, e.srv.URL), "", nil)
	if p := decode[page](t, r); len(p.Results) != 2 || p.Next != nil {
		t.Fatalf("page 3: %s", r.body)
	}
	for _, bad := range []string{"page=0", "page_size=x", "is_official=maybe", "min_stars=-1", "q=" + strings.Repeat("a", 300)} {
		e.expect(e.do("GET", "/api/v1/search?"+bad, "", nil), http.StatusBadRequest, "")
	}
}

func TestStarsDescriptionsAndTags(t *testing.T) {
	e := newHubEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	e.addRepo("alice/app", false)
	e.addRepo("alice/secret", true)
	alice, bob := basic("alice", testPassword), basic("bob", testPassword)

	e.expect(e.do("PUT", "/api/v1/repositories/alice/app/stars", "", nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("PUT", "/api/v1/repositories/alice/secret/stars", bob, nil), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.do("PUT", "/api/v1/repositories/alice/app/stars", bob, nil), http.StatusNoContent, "")
	e.expect(e.do("PUT", "/api/v1/repositories/alice/app/stars", bob, nil), http.StatusNoContent, "")
	e.expect(e.do("PUT", "/api/v1/repositories/alice/secret/stars", alice, nil), http.StatusNoContent, "")
	r := e.do("GET", "/api/v1/repositories/alice/app", "", nil)
	if v := decode[repoView](t, r); v.StarCount != 1 || v.IsOfficial || v.PullCount != 0 {
		t.Fatalf("repo %s", r.body)
	}
	for _, k := range []string{"is_official", "is_automated", "star_count", "pull_count"} {
		if !strings.Contains(string(r.body), `"`+k+`"`) {
			t.Fatalf("repo view lacks %s: %s", k, r.body)
		}
	}
	r = e.do("GET", "/api/v1/users/bob/starred", "", nil)
	if p := decode[apiPage[repoView]](t, r); len(p.Results) != 1 || p.Results[0].Name != "app" {
		t.Fatalf("bob's stars %s", r.body)
	}
	// alice's private star: shown to her, not to others
	if p := decode[apiPage[repoView]](t, e.do("GET", "/api/v1/users/alice/starred", bob, nil)); len(p.Results) != 0 {
		t.Fatalf("private star shown to bob: %+v", p)
	}
	if p := decode[apiPage[repoView]](t, e.do("GET", "/api/v1/users/alice/starred", alice, nil)); len(p.Results) != 1 {
		t.Fatalf("alice's own stars: %+v", p)
	}
	e.expect(e.do("GET", "/api/v1/users/nobody/starred", "", nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("DELETE", "/api/v1/repositories/alice/app/stars", bob, nil), http.StatusNoContent, "")
	if v := decode[repoView](t, e.do("GET", "/api/v1/repositories/alice/app", "", nil)); v.StarCount != 0 {
		t.Fatalf("after unstar %+v", v)
	}

	// official: admins only
	e.expect(e.do("PUT", "/api/v1/repositories/alice/app/official", alice, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("PUT", "/api/v1/repositories/alice/app/official", basic("admin", testPassword), nil), http.StatusNoContent, "")
	if v := decode[repoView](t, e.do("GET", "/api/v1/repositories/alice/app", "", nil)); !v.IsOfficial {
		t.Fatalf("not official %+v", v)
	}

	// descriptions: 100 characters (not bytes), full description 25000
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]string{"description": strings.Repeat("é", 100)}), http.StatusOK, "")
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]string{"description": strings.Repeat("a", 101)}), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]string{"full_description": "# App\n" + strings.Repeat("x", 24990)}), http.StatusOK, "")
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]string{"full_description": strings.Repeat("x", 25001)}), http.StatusBadRequest, "UNSUPPORTED")

	// tags: size, platform from the config blob, pushed and pulled times
	e.pushImage("alice/app", "v1", alice)
	e.expect(e.do("HEAD", "/v2/alice/app/manifests/v1", alice, nil), http.StatusOK, "")
	if _, pulled := e.social.pulls["alice/app"]; pulled {
		t.Fatal("a HEAD counted as a pull")
	}
	e.expect(e.do("GET", "/v2/alice/app/manifests/v1", alice, nil), http.StatusOK, "")
	r = e.do("GET", "/api/v1/repositories/alice/app/tags", "", nil)
	e.expect(r, http.StatusOK, "")
	tags := decode[apiPage[tagView]](t, r).Results
	if len(tags) != 1 || tags[0].Name != "v1" || tags[0].MediaType != mediaTypeOCIManifest || tags[0].FullSize <= 0 ||
		len(tags[0].Images) != 1 || tags[0].Images[0].OS != "linux" || tags[0].Images[0].Architecture != "amd64" ||
		tags[0].LastPulled == nil || tags[0].Digest == "" {
		t.Fatalf("tags %s", r.body)
	}
	if v := decode[repoView](t, e.do("GET", "/api/v1/repositories/alice/app", "", nil)); v.PullCount != 1 {
		t.Fatalf("pull count %d", v.PullCount)
	}
	e.expect(e.do("GET", "/api/v1/repositories/alice/secret/tags", bob, nil), http.StatusNotFound, "NAME_UNKNOWN")
}
