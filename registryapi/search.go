package registryapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
	"github.com/hubmesh/hubmesh/search"
)

// Searcher answers repository searches; *search.Index implements it. The
// node keeps the index in step with the replicated state.
type Searcher interface {
	Search(q search.Query) search.Result
}

// v1RegistryVersion is what /v1/_ping announces in
// X-Docker-Registry-Version (the docker daemon only records it).
const v1RegistryVersion = "0.9.1"

// ping serves GET /v1/_ping, which the docker daemon asks before a v1
// search: 200, a JSON body and the registry headers it reads.
func (h *Hub) ping(w http.ResponseWriter, _ *http.Request, _ identity) error {
	w.Header().Set("X-Docker-Registry-Version", v1RegistryVersion)
	w.Header().Set("X-Docker-Registry-Standalone", "true")
	return writeJSON(w, http.StatusOK, "application/json", map[string]bool{"standalone": true})
}

// v1Result is one result of /v1/search, exactly as the docker daemon
// decodes it (moby's registry.SearchResult).
type v1Result struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	StarCount   int64  `json:"star_count"`
	IsOfficial  bool   `json:"is_official"`
	IsAutomated bool   `json:"is_automated"`
}

// v1Results is the body of /v1/search.
type v1Results struct {
	Query      string     `json:"query"`
	NumResults int        `json:"num_results"`
	NumPages   int        `json:"num_pages"`
	Page       int        `json:"page"`
	PageSize   int        `json:"page_size"`
	Results    []v1Result `json:"results"`
}

// searchV1 serves GET /v1/search?q=&n=&page=, what `docker search` asks
// (n is its --limit, 25 by default, at most 100).
func (h *Hub) searchV1(w http.ResponseWriter, r *http.Request, id identity) error {
	q := r.URL.Query()
	sq, err := h.searchQuery(r.Context(), q, id)
	if err != nil {
		return err
	}
	if n := q.Get("n"); n != "" {
		if sq.PageSize, err = positive("n", n); err != nil {
			return err
		}
	}
	res, err := h.runSearch(sq)
	if err != nil {
		return err
	}
	out := v1Results{
		Query: sq.Text, NumResults: res.Total, NumPages: res.Pages(), Page: res.Page, PageSize: res.PageSize,
		Results: make([]v1Result, 0, len(res.Hits)),
	}
	for _, hit := range res.Hits {
		out.Results = append(out.Results, v1Result{
			Name: hit.Name, Description: hit.Description, StarCount: hit.Stars,
			IsOfficial: hit.Official, IsAutomated: hit.Automated,
		})
	}
	return writeJSON(w, http.StatusOK, "application/json", out)
}

// apiSearchResult is one result of /api/v1/search, with Docker Hub's
// field names.
type apiSearchResult struct {
	RepoName         string `json:"repo_name"`
	Namespace        string `json:"namespace"`
	Name             string `json:"name"`
	ShortDescription string `json:"short_description"`
	StarCount        int64  `json:"star_count"`
	PullCount        int64  `json:"pull_count"`
	IsOfficial       bool   `json:"is_official"`
	IsAutomated      bool   `json:"is_automated"`
	IsPrivate        bool   `json:"is_private"`
}

type apiSearchPage struct {
	Count    int               `json:"count"`
	Page     int               `json:"page"`
	PageSize int               `json:"page_size"`
	NumPages int               `json:"num_pages"`
	Next     *string           `json:"next"`
	Previous *string           `json:"previous"`
	Results  []apiSearchResult `json:"results"`
}

// searchAPI serves GET /api/v1/search?q=&page=&page_size=&is_official=
// &is_automated=&min_stars=&namespace=.
func (h *Hub) searchAPI(w http.ResponseWriter, r *http.Request, id identity) error {
	q := r.URL.Query()
	sq, err := h.searchQuery(r.Context(), q, id)
	if err != nil {
		return err
	}
	if v := cmpOr(q.Get("page_size"), q.Get("n")); v != "" {
		if sq.PageSize, err = positive("page_size", v); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		dst  **bool
	}{{"is_official", &sq.Official}, {"is_automated", &sq.Automated}} {
		if v := q.Get(f.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return newError(codeBadRequest, "%s must be true or false, got %q", f.name, truncate(v, 20))
			}
			*f.dst = &b
		}
	}
	if v := cmpOr(q.Get("min_stars"), q.Get("stars")); v != "" {
		n, ok := parseDecimal(v)
		if !ok {
			return newError(codeBadRequest, "min_stars must be a number, got %q", truncate(v, 20))
		}
		sq.MinStars = int64(n)
	}
	sq.Namespace = q.Get("namespace")
	res, err := h.runSearch(sq)
	if err != nil {
		return err
	}
	out := apiSearchPage{
		Count: res.Total, Page: res.Page, PageSize: res.PageSize, NumPages: res.Pages(),
		Results: make([]apiSearchResult, 0, len(res.Hits)),
	}
	link := func(page int) *string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(page))
		v.Set("page_size", strconv.Itoa(res.PageSize))
		v.Del("n")
		s := baseURL(r) + r.URL.Path + "?" + v.Encode()
		return &s
	}
	if res.Page < res.Pages() {
		out.Next = link(res.Page + 1)
	}
	if res.Page > 1 {
		out.Previous = link(min(res.Page-1, max(res.Pages(), 1)))
	}
	for _, hit := range res.Hits {
		name := hit.Name
		if hit.Namespace != "" {
			name = hit.Name[len(hit.Namespace)+1:]
		}
		out.Results = append(out.Results, apiSearchResult{
			RepoName: hit.Name, Namespace: hit.Namespace, Name: name, ShortDescription: hit.Description,
			StarCount: hit.Stars, PullCount: hit.Pulls, IsOfficial: hit.Official,
			IsAutomated: hit.Automated, IsPrivate: hit.Private,
		})
	}
	return writeJSON(w, http.StatusOK, "application/json", out)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// maxSearchPage bounds page numbers, so that a query cannot ask the index
// to rank an unbounded number of results.
const maxSearchPage = 1000

// searchQuery reads q (or query) and page, and sets who may see what.
func (h *Hub) searchQuery(ctx context.Context, q url.Values, id identity) (search.Query, error) {
	sq := search.Query{Text: cmpOr(q.Get("q"), q.Get("query")), Page: 1}
	if len(sq.Text) > 256 {
		return sq, newError(codeBadRequest, "query longer than 256 bytes")
	}
	if v := q.Get("page"); v != "" {
		p, err := positive("page", v)
		if err != nil {
			return sq, err
		}
		sq.Page = min(p, maxSearchPage)
	}
	switch {
	case id.admin:
		sq.SeeAll = true
	case id.user != "":
		sq.CanSee = newVisibility(ctx, h.accounts, id).visible
	}
	return sq, nil
}

func (h *Hub) runSearch(q search.Query) (search.Result, error) {
	if h.search == nil {
		return search.Result{}, newError(codeUnavailable, "search is not available on this node")
	}
	return h.search.Search(q), nil
}

// positive parses a positive decimal parameter.
func positive(name, v string) (int, error) {
	n, ok := parseDecimal(v)
	if !ok || n < 1 {
		return 0, newError(codePaginationInvalid, "%s must be a positive integer, got %q", name, truncate(v, 40))
	}
	return int(min(n, 1<<30)), nil
}

// visibility decides, for one query, which private repositories a user
// may see. The index calls it only on private candidates, from the
// query's goroutine. It remembers per namespace what it learnt: the
// user's own namespace and the orgs they own show everything; a namespace
// of an org they are not in (or of another user) shows nothing private;
// in orgs where they are a member, it asks about each repository (team
// grants are per repository).
type visibility struct {
	ctx  context.Context
	acc  Identities
	orgs OrgStore
	id   identity
	ns   map[string]nsVisibility
	mine map[string]bool // orgs the user is in; nil until needed
}

type nsVisibility uint8

const (
	nsUnknown nsVisibility = iota
	nsAll
	nsNone
	nsPerRepo
)

func newVisibility(ctx context.Context, acc Accounts, id identity) *visibility {
	return &visibility{ctx: ctx, acc: acc, orgs: acc, id: id, ns: map[string]nsVisibility{}}
}

func (v *visibility) visible(repo string) bool {
	ns := hubmesh.RepoOf(repo)
	switch v.ns[ns] {
	case nsAll:
		return true
	case nsNone:
		return false
	case nsUnknown:
		if ns != "" && ns == v.id.user {
			v.ns[ns] = nsAll
			return true
		}
	}
	f, err := v.acc.AccessFacts(v.ctx, v.id.user, repo)
	if err != nil || (f.User != "" && (!f.UserExists || f.UserDisabled)) {
		return false
	}
	if v.ns[ns] == nsUnknown {
		switch {
		case f.SiteAdmin, f.NamespaceUser, f.OrgOwner:
			v.ns[ns] = nsAll
		case f.Namespace.Kind == "org" && v.member(ns):
			v.ns[ns] = nsPerRepo
		default:
			v.ns[ns] = nsNone
		}
	}
	return auth.Visible(f)
}

// member reports whether the user is in any team of org.
func (v *visibility) member(org string) bool {
	if v.mine == nil {
		v.mine = map[string]bool{}
		orgs, err := v.orgs.OrgsOf(v.ctx, v.id.user)
		if err == nil {
			for _, o := range orgs {
				v.mine[o] = true
			}
		}
	}
	return v.mine[org]
}
