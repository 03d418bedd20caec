package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// searchTimeout bounds how long a change takes to reach a node's search
// index: the index catches up on a change signal, and at the latest at
// its 5 s re-sync.
const searchTimeout = 15 * time.Second

// v1SearchResult is one result of /v1/search, as the docker daemon
// decodes it.
type v1SearchResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	StarCount   int64  `json:"star_count"`
	IsOfficial  bool   `json:"is_official"`
	IsAutomated bool   `json:"is_automated"`
}

// v1SearchPage is the body of /v1/search.
type v1SearchPage struct {
	Query      string           `json:"query"`
	NumResults int              `json:"num_results"`
	NumPages   int              `json:"num_pages"`
	Page       int              `json:"page"`
	PageSize   int              `json:"page_size"`
	Results    []v1SearchResult `json:"results"`
}

// apiSearchPage is the body of /api/v1/search.
type apiSearchPage struct {
	Count   int `json:"count"`
	Results []struct {
		RepoName         string `json:"repo_name"`
		ShortDescription string `json:"short_description"`
		StarCount        int64  `json:"star_count"`
		IsOfficial       bool   `json:"is_official"`
		IsPrivate        bool   `json:"is_private"`
	} `json:"results"`
}

func (p apiSearchPage) names() []string {
	var out []string
	for _, r := range p.Results {
		out = append(out, r.RepoName)
	}
	return out
}

// v1Search asks /v1/search as a (possibly anonymous) client.
func (a *apiClient) v1Search(ctx context.Context, query string) (v1SearchPage, error) {
	var page v1SearchPage
	r, err := a.call(ctx, http.MethodGet, "/v1/search?q="+url.QueryEscape(query)+"&n=100", nil)
	if err != nil {
		return page, err
	}
	if r.Status != http.StatusOK {
		return page, fmt.Errorf("GET /v1/search?q=%s as %q: %s", query, a.user, r)
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		return page, fmt.Errorf("GET /v1/search?q=%s: decode %s: %w", query, r, err)
	}
	return page, nil
}

// find returns the result named name, if any.
func (p v1SearchPage) find(name string) (v1SearchResult, bool) {
	for _, r := range p.Results {
		if r.Name == name {
			return r, true
		}
	}
	return v1SearchResult{}, false
}

// pollSearch asks cond every 50 ms until it holds, and fails the test
// with cond's last word when timeout passes first.
func pollSearch(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	began := time.Now()
	for {
		ok, last := cond(ctx)
		if ok {
			t.Logf("%s after %s", what, time.Since(began).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		case <-tick.C:
		}
	}
}

// TestDockerSearch drives the real `docker search` against a node holding
// a handful of repositories with descriptions, stars and an official
// namespace, and checks the ranking (exact name first, official first
// among equals, then more stars), --limit, the stars and is-official
// filters, --no-trunc, and that a private repository is hidden; then the
// same private repository through /api/v1/search as its owner and as
// someone else.
func TestDockerSearch(t *testing.T) {
	docker := nodetest.RequireDocker(t)
	p := nodetest.Start(t, nodetest.Options{})
	adminUser, adminPassword := p.Admin()
	admin := newAPIClient(p.URL(), adminUser, adminPassword)

	users := map[string]*apiClient{}
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		pw := "pw-" + sha256Hex(randomBytes(t, 16))[:24]
		admin.createUser(t, name, pw)
		users[name] = newAPIClient(p.URL(), name, pw)
	}
	admin.must(t, http.MethodPost, "/api/v1/orgs", map[string]any{"orgname": "library"}, nil, http.StatusCreated, http.StatusOK)

	// Longer than the 45 characters the docker CLI shows without --no-trunc.
	pgtoolsDesc := "Command line tools for postgres: dump, restore and vacuum every database of a cluster"
	repos := []struct {
		owner   *apiClient
		name    string
		private bool
		desc    string
		starBy  []string
	}{
		{admin, "library/postgres", false, "The PostgreSQL object-relational database", []string{"carol"}},
		{users["dave"], "dave/postgres", false, "Dave's build of the database", []string{"alice", "bob", "carol"}},
		{users["alice"], "alice/postgres-backup", false, "Nightly backups to object storage", []string{"bob", "carol"}},
		{users["erin"], "erin/postgres-tools", false, "Assorted scripts", nil},
		{users["bob"], "bob/pgtools", false, pgtoolsDesc, []string{"alice", "carol", "dave", "erin"}},
		{users["alice"], "alice/secret-postgres", true, "Alice's private postgres", []string{"alice"}},
		{users["carol"], "carol/other", false, "Nothing to do with databases", []string{"alice"}},
	}
	wantStars := map[string]int64{}
	for _, r := range repos {
		ns, name, _ := strings.Cut(r.name, "/")
		r.owner.must(t, http.MethodPost, "/api/v1/repositories", map[string]any{
			"namespace": ns, "name": name, "is_private": r.private, "description": r.desc,
		}, nil, http.StatusCreated, http.StatusOK)
		for _, u := range r.starBy {
			users[u].must(t, http.MethodPut, "/api/v1/repositories/"+r.name+"/stars", nil, nil, http.StatusNoContent, http.StatusOK)
		}
		wantStars[r.name] = int64(len(r.starBy))
	}
	// Starring is idempotent: a second star by the same user counts once.
	users["carol"].must(t, http.MethodPut, "/api/v1/repositories/library/postgres/stars", nil, nil, http.StatusNoContent, http.StatusOK)
	// An unstar takes a star away.
	users["bob"].must(t, http.MethodPut, "/api/v1/repositories/carol/other/stars", nil, nil, http.StatusNoContent, http.StatusOK)
	users["bob"].must(t, http.MethodDelete, "/api/v1/repositories/carol/other/stars", nil, nil, http.StatusNoContent, http.StatusOK)
	// Only a site administrator flags a namespace official.
	users["alice"].must(t, http.MethodPut, "/api/v1/namespaces/library/official", nil, nil, http.StatusForbidden, http.StatusUnauthorized)
	admin.must(t, http.MethodPut, "/api/v1/namespaces/library/official", nil, nil, http.StatusNoContent, http.StatusOK)

	// The index follows the replicated state: wait until it has every
	// repository with its stars and flags before asking docker.
	pollSearch(t, searchTimeout, "index has every repository", func(ctx context.Context) (bool, string) {
		for _, q := range []string{"postgres", "other"} {
			page, err := admin.v1Search(ctx, q)
			if err != nil {
				return false, err.Error()
			}
			for _, r := range repos {
				if q == "other" && r.name != "carol/other" || q == "postgres" && r.name == "carol/other" {
					continue
				}
				got, ok := page.find(r.name)
				if !ok {
					return false, fmt.Sprintf("q=%s: %s missing from %+v", q, r.name, page.Results)
				}
				if got.StarCount != wantStars[r.name] || got.IsOfficial != (r.name == "library/postgres") || got.Description != r.desc {
					return false, fmt.Sprintf("q=%s: %+v, want %d stars, description %q", q, got, wantStars[r.name], r.desc)
				}
			}
		}
		return true, ""
	})

	// docker search over plain HTTP is anonymous (the v1 client sends
	// credentials only over HTTPS), so bob's configuration must not
	// matter: the private repository stays hidden either way.
	dockerEnv := []string{"DOCKER_CONFIG=" + nodetest.DockerConfig(t, []string{p.Addr()}, "bob", users["bob"].password)}
	host := p.Addr()
	search := func(t *testing.T, args ...string) string {
		t.Helper()
		args = append([]string{"search"}, args...)
		return string(command(t, dockerTimeout, dockerEnv, docker, args...))
	}
	type row struct {
		name     string
		stars    int64
		official bool
	}
	const rowFormat = "{{.Name}}\t{{.StarCount}}\t{{.IsOfficial}}"
	rows := func(t *testing.T, args ...string) []row {
		t.Helper()
		out := search(t, append([]string{"--format", rowFormat}, args...)...)
		var got []row
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if line == "" {
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) != 3 {
				t.Fatalf("docker search %s: line %q, want name, stars, official", strings.Join(args, " "), line)
			}
			var stars int64
			if _, err := fmt.Sscan(f[1], &stars); err != nil {
				t.Fatalf("docker search %s: line %q: stars: %v", strings.Join(args, " "), line, err)
			}
			// The CLI prints [OK] or nothing (a bool in some versions).
			official := f[2] == "[OK]" || f[2] == "true"
			if !official && f[2] != "" && f[2] != "false" {
				t.Fatalf("docker search %s: line %q: IsOfficial %q", strings.Join(args, " "), line, f[2])
			}
			got = append(got, row{f[0], stars, official})
		}
		return got
	}
	all := []row{
		{"library/postgres", 1, true},       // exact name, official
		{"dave/postgres", 3, false},         // exact name, more stars but not official
		{"alice/postgres-backup", 2, false}, // prefix, more stars
		{"erin/postgres-tools", 0, false},   // prefix
		{"bob/pgtools", 4, false},           // description only, most stars
	}
	pick := func(keep func(row) bool) []row {
		var out []row
		for _, r := range all {
			if keep(r) {
				out = append(out, r)
			}
		}
		return out
	}
	term := host + "/postgres"
	for _, tc := range []struct {
		name string
		args []string
		want []row
	}{
		{"ranking", []string{term}, all},
		{"limit", []string{"--limit", "2", term}, all[:2]},
		{"stars", []string{"--filter", "stars=2", term}, pick(func(r row) bool { return r.stars >= 2 })},
		{"official", []string{"--filter", "is-official=true", term}, pick(func(r row) bool { return r.official })},
		{"not official with stars", []string{"--filter", "is-official=false", "--filter", "stars=3", term},
			pick(func(r row) bool { return !r.official && r.stars >= 3 })},
		{"other term", []string{host + "/other"}, []row{{"carol/other", 1, false}}},
		{"no match", []string{host + "/no-such-thing"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rows(t, tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("docker search %s:\n got %v\nwant %v", strings.Join(tc.args, " "), got, tc.want)
			}
		})
	}

	// The table: descriptions are cut without --no-trunc, whole with it;
	// the private repository is in neither.
	t.Run("no-trunc", func(t *testing.T) {
		short := search(t, term)
		long := search(t, "--no-trunc", term)
		t.Logf("docker search %s:\n%s", term, short)
		if strings.Contains(short, pgtoolsDesc) {
			t.Errorf("docker search without --no-trunc shows the whole description %q:\n%s", pgtoolsDesc, short)
		}
		if !strings.Contains(short, pgtoolsDesc[:20]) {
			t.Errorf("docker search shows no start of the description %q:\n%s", pgtoolsDesc, short)
		}
		if !strings.Contains(long, pgtoolsDesc) {
			t.Errorf("docker search --no-trunc does not show the whole description %q:\n%s", pgtoolsDesc, long)
		}
		for _, out := range []string{short, long} {
			if strings.Contains(out, "secret-postgres") {
				t.Errorf("docker search shows the private alice/secret-postgres:\n%s", out)
			}
		}
	})

	// /api/v1/search: the owner (and the site administrator) see the
	// private repository, flagged private; others and anonymous do not.
	t.Run("api private", func(t *testing.T) {
		for _, tc := range []struct {
			who  string
			c    *apiClient
			sees bool
		}{
			{"alice", users["alice"], true},
			{"admin", admin, true},
			{"bob", users["bob"], false},
			{"anonymous", newAPIClient(p.URL(), "", ""), false},
		} {
			var page apiSearchPage
			tc.c.must(t, http.MethodGet, "/api/v1/search?q=postgres", nil, &page, http.StatusOK)
			i := slices.Index(page.names(), "alice/secret-postgres")
			if (i >= 0) != tc.sees {
				t.Errorf("/api/v1/search?q=postgres as %s: %v; want alice/secret-postgres shown: %t", tc.who, page.names(), tc.sees)
				continue
			}
			if i >= 0 && !page.Results[i].IsPrivate {
				t.Errorf("/api/v1/search as %s: alice/secret-postgres not flagged private: %+v", tc.who, page.Results[i])
			}
			if want := len(all) + map[bool]int{true: 1}[tc.sees]; page.Count != want || len(page.Results) != want {
				t.Errorf("/api/v1/search?q=postgres as %s: count %d, %d results %v; want %d", tc.who, page.Count, len(page.Results), page.names(), want)
			}
		}
		// The API's own filters agree with docker's.
		var page apiSearchPage
		users["alice"].must(t, http.MethodGet, "/api/v1/search?q=postgres&is_official=true", nil, &page, http.StatusOK)
		if got := page.names(); !slices.Equal(got, []string{"library/postgres"}) {
			t.Errorf("/api/v1/search?q=postgres&is_official=true: %v, want [library/postgres]", got)
		}
		users["alice"].must(t, http.MethodGet, "/api/v1/search?q=postgres&namespace=alice", nil, &page, http.StatusOK)
		if got := page.names(); !slices.Equal(got, []string{"alice/postgres-backup", "alice/secret-postgres"}) {
			t.Errorf("/api/v1/search?q=postgres&namespace=alice as alice: %v, want [alice/postgres-backup alice/secret-postgres]", got)
		}
	})
}

// TestSearchAcrossNodes checks that the search index of every node
// follows the replicated state: a repository created through node 1 is
// found through node 3, a star given through node 2 counts on node 3, and
// a repository made private through node 1 leaves anonymous searches on
// node 2.
func TestSearchAcrossNodes(t *testing.T) {
	procs := nodetest.StartCluster(t, 3, nodetest.Options{})
	adminUser, adminPassword := procs[0].Admin()
	admin := newAPIClient(procs[0].URL(), adminUser, adminPassword)
	pw := map[string]string{}
	for _, name := range []string{"alice", "bob"} {
		pw[name] = "pw-" + sha256Hex(randomBytes(t, 16))[:24]
		admin.createUser(t, name, pw[name])
	}
	on := func(i int, user string) *apiClient {
		if user == "" {
			return newAPIClient(procs[i].URL(), "", "")
		}
		return newAPIClient(procs[i].URL(), user, pw[user])
	}

	const repo, desc = "alice/meshdb", "A database replicated across the mesh"
	on(0, "alice").must(t, http.MethodPost, "/api/v1/repositories", map[string]any{
		"namespace": "alice", "name": "meshdb", "is_private": false, "description": desc,
	}, nil, http.StatusCreated, http.StatusOK)

	// lookup returns what an anonymous /v1/search on node i says of repo.
	lookup := func(i int) func(ctx context.Context) (v1SearchResult, bool, string) {
		c := on(i, "")
		return func(ctx context.Context) (v1SearchResult, bool, string) {
			page, err := c.v1Search(ctx, "meshdb")
			if err != nil {
				return v1SearchResult{}, false, err.Error()
			}
			r, ok := page.find(repo)
			return r, ok, fmt.Sprintf("%+v", page)
		}
	}
	pollSearch(t, searchTimeout, "node 3 finds "+repo, func(ctx context.Context) (bool, string) {
		r, ok, last := lookup(2)(ctx)
		return ok && r.Description == desc && r.StarCount == 0, last
	})

	// A follower may lag behind the leader: star through node 2 once it
	// knows the repository (and so bob, created before it).
	pollSearch(t, searchTimeout, "node 2 finds "+repo, func(ctx context.Context) (bool, string) {
		_, ok, last := lookup(1)(ctx)
		return ok, last
	})
	on(1, "bob").must(t, http.MethodPut, "/api/v1/repositories/"+repo+"/stars", nil, nil, http.StatusNoContent, http.StatusOK)
	pollSearch(t, searchTimeout, "node 3 counts the star given through node 2", func(ctx context.Context) (bool, string) {
		r, ok, last := lookup(2)(ctx)
		return ok && r.StarCount == 1, last
	})

	// Every node answers alike once it has caught up.
	for i := range procs {
		pollSearch(t, searchTimeout, fmt.Sprintf("node %d agrees", i+1), func(ctx context.Context) (bool, string) {
			r, ok, last := lookup(i)(ctx)
			return ok && r.StarCount == 1 && r.Description == desc, last
		})
	}

	on(0, "alice").must(t, http.MethodPatch, "/api/v1/repositories/"+repo, map[string]any{"is_private": true}, nil, http.StatusOK)
	pollSearch(t, searchTimeout, "anonymous search on node 2 no longer finds the private "+repo, func(ctx context.Context) (bool, string) {
		_, ok, last := lookup(1)(ctx)
		return !ok, last
	})
	// Its owner still finds it there.
	var page apiSearchPage
	on(1, "alice").must(t, http.MethodGet, "/api/v1/search?q=meshdb", nil, &page, http.StatusOK)
	if !slices.Contains(page.names(), repo) {
		t.Errorf("/api/v1/search?q=meshdb as alice on node 2: %v, want %s", page.names(), repo)
	}
	on(1, "bob").must(t, http.MethodGet, "/api/v1/search?q=meshdb", nil, &page, http.StatusOK)
	if slices.Contains(page.names(), repo) {
		t.Errorf("/api/v1/search?q=meshdb as bob on node 2: %v, want no %s", page.names(), repo)
	}
}
