package registryapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// The Hub REST API under /api/v1, modelled on Docker Hub's field names.
// Credentials: Bearer (API session token from POST /api/v1/users/login, a
// registry token from /token — read-only here — or a personal access
// token), or Basic (password or access token). An access token whose
// scope is below admin may only read (GET). Errors use the registry's
// {"errors":[{"code","message"}]} body and errcode table.

// Page sizes of the REST listings (page_size=, last=).
const (
	defaultAPIPage = 100
	maxAPIPage     = 1000
)

// HubConfig is what the REST API needs.
type HubConfig struct {
	// Auth authenticates requests; required.
	Auth *Auth
	// Accounts is the account state (*consensus.Node); required.
	Accounts Accounts
	// Listings lists repository names (*consensus.Node); required.
	Listings Listings
	// Logger is required.
	Logger *slog.Logger

	// The search and Hub parts (issue 5); each is optional, and the
	// endpoints that need a missing one answer 503.
	//
	// Search answers /v1/search and /api/v1/search (*search.Index).
	Search Searcher
	// Social stars repositories, flags them official and reads pull
	// times (*consensus.Node).
	Social Social
	// Manifests and Blobs let the tags listing describe each tag: its
	// manifest, and the config blob that names the platform.
	Manifests Manifests
	Blobs     Blobs

	// Webhooks is the webhook state (*consensus.Node); without it the
	// webhook endpoints answer 503.
	Webhooks Webhooks
	// WebhookURLCheck, when set, applies the node's egress policy to the
	// URL of a webhook being created or changed; an error wrapping
	// hubmesh.ErrDenied or ErrInvalid refuses it with a 400.
	WebhookURLCheck func(ctx context.Context, url string) error
	// Federation receives the push webhooks of the meshes this node
	// mirrors; without it /api/v1/federation/ answers 404.
	Federation Federation
	// Builds is the automated build state and the build logs; without it
	// the build endpoints answer 503. Give the same state to
	// AuthConfig.Builds, which refuses manual pushes.
	Builds Builds
}

// Hub serves /api/v1/ (everything but /api/v1/cluster/, which
// ClusterHandler serves).
type Hub struct {
	auth      *Auth
	accounts  Accounts
	listings  Listings
	search    Searcher
	social    Social
	manifests Manifests
	blobs     Blobs
	webhooks  Webhooks
	// hookURLCheck is HubConfig.WebhookURLCheck.
	hookURLCheck func(ctx context.Context, url string) error
	federation   Federation
	builds       Builds
	images       *imageCache
	log          *slog.Logger
	mux          *http.ServeMux
	paths        map[string]map[string]hubRoute // pattern -> method -> route
	order        []string
}

// access levels of a REST route.
type level int

const (
	levelAnyone level = iota // anonymous too
	levelUser                // a named user
	levelAdmin               // a site administrator
)

// hubFunc serves one REST route for an authenticated identity.
type hubFunc func(w http.ResponseWriter, r *http.Request, id identity) error

type hubRoute struct {
	level level
	fn    hubFunc
}

// NewHub checks cfg and builds the REST API.
func NewHub(cfg HubConfig) (*Hub, error) {
	var errs []error
	if cfg.Auth == nil {
		errs = append(errs, errors.New("registryapi: HubConfig.Auth is required"))
	}
	if cfg.Accounts == nil {
		errs = append(errs, errors.New("registryapi: HubConfig.Accounts is required"))
	}
	if cfg.Listings == nil {
		errs = append(errs, errors.New("registryapi: HubConfig.Listings is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("registryapi: HubConfig.Logger is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	h := &Hub{
		auth: cfg.Auth, accounts: cfg.Accounts, listings: cfg.Listings, log: cfg.Logger,
		search: cfg.Search, social: cfg.Social, manifests: cfg.Manifests, blobs: cfg.Blobs,
		webhooks: cfg.Webhooks, hookURLCheck: cfg.WebhookURLCheck, federation: cfg.Federation,
		builds: cfg.Builds, images: newImageCache(),
		mux: http.NewServeMux(), paths: map[string]map[string]hubRoute{},
	}
	h.routes()
	for _, p := range h.order {
		h.mux.HandleFunc(p, h.dispatch(p, h.paths[p]))
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(h.log, w, r, "/api/v1/", newError(codeNotFound, "no such API endpoint: %s %s", truncate(r.Method, 20), truncate(r.URL.Path, 200)))
	})
	return h, nil
}

// routes lists the endpoints.
func (h *Hub) routes() {
	const p = "/api/v1"
	h.handle("POST", p+"/users/login", levelAnyone, h.login)
	h.handle("GET", p+"/users", levelAdmin, h.listUsers)
	h.handle("POST", p+"/users", levelAnyone, h.createUser)
	h.handle("GET", p+"/users/{name}", levelUser, h.getUser)
	h.handle("PATCH", p+"/users/{name}", levelUser, h.patchUser)
	h.handle("DELETE", p+"/users/{name}", levelUser, h.deleteUser)
	h.handle("GET", p+"/user", levelUser, h.whoami)

	h.handle("GET", p+"/orgs", levelUser, h.listOrgs)
	h.handle("POST", p+"/orgs", levelUser, h.createOrg)
	h.handle("GET", p+"/orgs/{org}", levelUser, h.getOrg)
	h.handle("DELETE", p+"/orgs/{org}", levelUser, h.deleteOrg)
	h.handle("GET", p+"/orgs/{org}/teams", levelUser, h.listTeams)
	h.handle("POST", p+"/orgs/{org}/teams", levelUser, h.createTeam)
	h.handle("GET", p+"/orgs/{org}/teams/{team}", levelUser, h.getTeam)
	h.handle("DELETE", p+"/orgs/{org}/teams/{team}", levelUser, h.deleteTeam)
	h.handle("GET", p+"/orgs/{org}/teams/{team}/members", levelUser, h.listMembers)
	h.handle("GET", p+"/orgs/{org}/teams/{team}/members/{user}", levelUser, h.getMember)
	h.handle("PUT", p+"/orgs/{org}/teams/{team}/members/{user}", levelUser, h.addMember)
	h.handle("DELETE", p+"/orgs/{org}/teams/{team}/members/{user}", levelUser, h.removeMember)
	h.handle("GET", p+"/orgs/{org}/teams/{team}/permissions", levelUser, h.listGrants)
	h.handle("PUT", p+"/orgs/{org}/teams/{team}/permissions/{repo...}", levelUser, h.setGrant)
	h.handle("DELETE", p+"/orgs/{org}/teams/{team}/permissions/{repo...}", levelUser, h.removeGrant)

	h.handle("GET", p+"/repositories", levelAnyone, h.listRepos)
	h.handle("POST", p+"/repositories", levelUser, h.createRepo)
	h.handle("GET", p+"/repositories/{ns}", levelAnyone, h.listRepos)
	h.handle("GET", p+"/repositories/{ns}/{name...}", levelAnyone, h.getRepo)
	h.handle("PATCH", p+"/repositories/{ns}/{name...}", levelUser, h.patchRepo)
	h.handle("DELETE", p+"/repositories/{ns}/{name...}", levelUser, h.deleteRepo)
	h.handle("GET", p+"/namespaces/{ns}", levelUser, h.getNamespace)
	h.handle("PATCH", p+"/namespaces/{ns}", levelUser, h.patchNamespace)

	h.handle("GET", p+"/access-tokens", levelUser, h.listTokens)
	h.handle("POST", p+"/access-tokens", levelUser, h.createToken)
	h.handle("GET", p+"/access-tokens/{uuid}", levelUser, h.getToken)
	h.handle("DELETE", p+"/access-tokens/{uuid}", levelUser, h.deleteToken)

	h.handle("GET", p+"/audit", levelAdmin, h.listAudit)
	h.handle("GET", p+"/settings", levelAdmin, h.getSettings)
	h.handle("PATCH", p+"/settings", levelAdmin, h.patchSettings)
	h.handle("POST", p+"/keys/rotate", levelAdmin, h.rotateKeys)

	h.handle("GET", p+"/search", levelAnyone, h.searchAPI)
	h.handle("GET", p+"/repositories/{ns}/{name}/tags", levelAnyone, h.listTagInfo)
	h.handle("PUT", p+"/repositories/{ns}/{name}/stars", levelUser, h.star)
	h.handle("DELETE", p+"/repositories/{ns}/{name}/stars", levelUser, h.unstar)
	h.handle("PUT", p+"/repositories/{ns}/{name}/official", levelAdmin, h.setRepoOfficial)
	h.handle("DELETE", p+"/repositories/{ns}/{name}/official", levelAdmin, h.setRepoOfficial)
	h.handle("PUT", p+"/namespaces/{ns}/official", levelAdmin, h.setNamespaceOfficial)
	h.handle("DELETE", p+"/namespaces/{ns}/official", levelAdmin, h.setNamespaceOfficial)
	h.handle("GET", p+"/users/{name}/starred", levelAnyone, h.listStarred)
	h.handle("GET", p+"/openapi.json", levelAnyone, h.openAPI)
	h.webhookRoutes(p)
	h.buildRoutes(p)
	h.handle("POST", p+"/federation/{name}/hook", levelAnyone, h.federationHook)

	// The docker daemon's search protocol (registry API v1): the node
	// mounts the Hub at /v1/ too.
	h.handle("GET", "/v1/_ping", levelAnyone, h.ping)
	h.handle("GET", "/v1/search", levelAnyone, h.searchV1)
}

func (h *Hub) handle(method, pattern string, lv level, fn hubFunc) {
	m := h.paths[pattern]
	if m == nil {
		m = map[string]hubRoute{}
		h.paths[pattern] = m
		h.order = append(h.order, pattern)
	}
	m[method] = hubRoute{level: lv, fn: fn}
}

// ServeHTTP implements http.Handler. A trailing slash is ignored, as
// Docker Hub's API writes its paths with one.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; len(p) > len("/v1/") && strings.HasSuffix(p, "/") {
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = strings.TrimSuffix(p, "/"), ""
		r2.URL = &u
		r = r2
	}
	h.mux.ServeHTTP(w, r)
}

// dispatch serves one path: method lookup (405 with Allow otherwise),
// authentication, the route's access level, the read-only rule of capped
// tokens, then the route.
func (h *Hub) dispatch(pattern string, methods map[string]hubRoute) http.HandlerFunc {
	var allow []string
	for _, m := range methodOrder {
		if _, ok := methods[m]; ok {
			allow = append(allow, m)
		} else if m == http.MethodHead {
			if _, ok := methods[http.MethodGet]; ok {
				allow = append(allow, m)
			}
		}
	}
	allowHdr := strings.Join(allow, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		rw := &responseWriter{ResponseWriter: w}
		err := h.serve(rw, r, methods, allowHdr)
		switch {
		case err == nil:
		case rw.wroteHeader:
			h.log.Debug("response aborted", "method", r.Method, "route", pattern, "err", err)
		default:
			ae := toAPIError(err)
			if ae.code == codeUnauthorized && ae.header("WWW-Authenticate") == "" {
				c := *ae
				c.headers = slices.Clone(c.headers)
				c.withHeader("WWW-Authenticate", `Bearer realm="`+baseURL(r)+`/token",service="`+h.auth.service+`"`)
				err = &c
			}
			writeError(h.log, rw, r, pattern, err)
		}
	}
}

func (h *Hub) serve(w http.ResponseWriter, r *http.Request, methods map[string]hubRoute, allow string) error {
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	rt, ok := methods[method]
	if !ok {
		w.Header().Set("Allow", allow)
		return newError(codeMethodNotAllowed, "method %s not allowed on %s", truncate(r.Method, 20), truncate(r.URL.Path, 200))
	}
	id, err := h.auth.authenticate(r, bearerKinds{access: true, session: true})
	if err != nil {
		return err
	}
	if id.method == methodAccess {
		// a registry token is a capability for repositories: here it
		// only reads, as its subject
		id.access, id.scopes = nil, []string{hubmesh.ScopeRead}
		id.buildRepo, id.buildID = "", ""
	}
	switch {
	case rt.level >= levelUser && id.user == "":
		return newError(codeUnauthorized, "authentication required")
	case rt.level == levelAdmin && !id.admin:
		return newError(codeDenied, "only site administrators may do this")
	case id.capped() && method != http.MethodGet:
		return newError(codeDenied, "this credential's scope (%s) allows only GET requests on /api/v1", strings.Join(id.scopes, ","))
	}
	// ActorFrom (webhook events name who did what) reads it from here.
	r = r.WithContext(context.WithValue(r.Context(), identityKey, id))
	return rt.fn(w, r, id)
}

// audit records a security event of request r.
func (h *Hub) audit(r *http.Request, id identity, action, target, detail string) {
	h.auth.events.Audit(hubmesh.AuditEvent{
		Time: h.auth.now().UTC(), Action: action, Actor: id.user, Target: target,
		Client: clientAddr(r), Detail: detail,
	})
}

// listPage is the body of a listing, as Docker Hub writes it. Count is
// the number of results in this page (the total is not known without a
// full scan); next is the URL of the next page or null.
type listPage[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}

// pageRequest reads page_size (or n) and last.
func pageRequest(r *http.Request) (hubmesh.Page, error) {
	q := r.URL.Query()
	p := hubmesh.Page{Last: q.Get("last"), N: defaultAPIPage}
	v := q.Get("page_size")
	if v == "" {
		v = q.Get("n")
	}
	if v != "" {
		n, ok := parseDecimal(v)
		if !ok || n < 1 {
			return p, newError(codePaginationInvalid, "page_size must be a positive integer, got %q", truncate(v, 40))
		}
		p.N = int(min(n, maxAPIPage))
	}
	return p, nil
}

// fetchPage lists one more item than asked, to know if there is a next
// page.
func fetchPage[T any](p hubmesh.Page, list func(hubmesh.Page) ([]T, error)) (items []T, more bool, err error) {
	items, err = list(hubmesh.Page{Last: p.Last, N: p.N + 1})
	if err != nil {
		return nil, false, err
	}
	if len(items) > p.N {
		return items[:p.N], true, nil
	}
	return items, false, nil
}

// writePage answers a listing; lastKey is the paging key of the last item.
func writePage[T any](w http.ResponseWriter, r *http.Request, p hubmesh.Page, items []T, more bool, lastKey string) error {
	out := listPage[T]{Count: len(items), Results: items}
	if out.Results == nil {
		out.Results = []T{}
	}
	if more {
		q := url.Values{}
		for k, v := range r.URL.Query() {
			q[k] = v
		}
		q.Set("last", lastKey)
		q.Set("page_size", strconv.Itoa(p.N))
		q.Del("n")
		next := baseURL(r) + r.URL.Path + "?" + q.Encode()
		out.Next = &next
	}
	return writeJSON(w, http.StatusOK, "application/json", out)
}

// notFound is the 404 of a named object of the REST API.
func notFound(format string, args ...any) error {
	return newError(codeNotFound, format, args...)
}
