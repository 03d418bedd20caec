package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// The permission matrix: every subject (anonymous, users in every
// relation to every namespace, a site admin, capped access tokens) tries
// every registry operation on every repository (public, private, and
// names that do not exist) of a real node, through its HTTP API, and each
// outcome is compared with what Docker Hub's rules say. The expectations
// come from hubRules below, a statement of those rules written for this
// test; the product's policy code is never consulted.

// level is a permission level, in increasing order.
type level int

const (
	lvNone level = iota
	lvRead
	lvWrite
	lvAdmin
)

// matrixSubject is who makes a request.
type matrixSubject struct {
	Label    string // "anonymous", "alice", "alice+read-token"
	User     string // "" for anonymous
	Password string // the password, or the secret of an access token
	Cap      level  // an access token's scope caps permissions; lvAdmin = no cap
	// Scratch names the private repositories of the subject's own that
	// its mounts target, one per auth mode (Scratch-token, Scratch-basic),
	// so that no other subject's mounts land there.
	Scratch string
}

// scratch is the mount target of s in mode.
func (s *matrixSubject) scratch(mode authMode) string { return s.Scratch + "-" + mode.String() }

// hubRules is Docker Hub's access model applied to the fixture:
//   - a site admin may do everything; a user administers their own
//     namespace; the owners team of an organization administers all of it;
//     other teams hold the permission granted on each repository, and a
//     user's permission is the highest of their teams';
//   - anonymous users have no permission; an access token never grants
//     more than its scope (read: pull; write: pull and push);
//   - pull needs read, except on public repositories, which anyone may
//     pull; push needs write; delete needs admin; pushing to a name that
//     does not exist needs write on its namespace;
//   - a private repository the subject cannot read behaves exactly as if
//     it did not exist: reads find nothing, writes are refused as they
//     would be on an absent name, mounts from it mount nothing, listings
//     omit it;
//   - reading what is absent (or hidden) is 404 for a known user and 401
//     with a challenge for anonymous requests: they could log in, clients
//     such as containerd present credentials only after a 401, and Docker
//     Hub answers anonymous pulls of missing names the same way, so that
//     nobody anonymous can tell a private repository from a missing one.
type hubRules struct {
	siteAdmins map[string]bool
	orgOwners  map[string][]string         // org -> members of its owners team
	grants     map[string]map[string]level // user -> repository -> highest team grant
	private    map[string]bool             // existing repository -> private
}

func namespaceOf(repo string) string {
	ns, _, _ := strings.Cut(repo, "/")
	return ns
}

// level is the subject's permission on repo (existing or not).
func (h hubRules) level(s *matrixSubject, repo string) level {
	if s.User == "" {
		return lvNone
	}
	ns := namespaceOf(repo)
	l := h.grants[s.User][repo]
	if h.siteAdmins[s.User] || ns == s.User || slices.Contains(h.orgOwners[ns], s.User) {
		l = lvAdmin
	}
	return min(l, s.Cap)
}

func (h hubRules) exists(repo string) bool { _, ok := h.private[repo]; return ok }

// visible: the subject may know that repo exists.
func (h hubRules) visible(s *matrixSubject, repo string) bool {
	return h.exists(repo) && (!h.private[repo] || h.level(s, repo) >= lvRead)
}

// Operations of the matrix.
type matrixOp string

const (
	opManifest      matrixOp = "pull-manifest"       // GET /v2/<r>/manifests/v1
	opBlob          matrixOp = "pull-blob"           // GET /v2/<r>/blobs/<layer>
	opTags          matrixOp = "tag-list"            // GET /v2/<r>/tags/list
	opReferrers     matrixOp = "referrers"           // GET /v2/<r>/referrers/<v1 digest>
	opPush          matrixOp = "push"                // blob uploads + manifest PUT of a new tag
	opDelete        matrixOp = "delete-manifest"     // DELETE /v2/<r>/manifests/<digest of a throwaway>
	opDeleteBlob    matrixOp = "delete-blob"         // DELETE /v2/<r>/blobs/<throwaway>
	opMountFrom     matrixOp = "mount-from"          // POST /v2/<scratch>/blobs/uploads/?mount=<layer>&from=<r>
	opMountAnon     matrixOp = "mount-anonymous"     // POST /v2/<scratch>/blobs/uploads/?mount=<config>
	opBlobElsewhere matrixOp = "blob-via-alice/pub"  // GET /v2/alice/pub/blobs/<layer of r>
	opCatalog       matrixOp = "catalog"             // is r in GET /v2/_catalog
	opSearch        matrixOp = "search"              // is r in GET /v1/search?q=
	opForeignToken  matrixOp = "token-for-other-use" // a token used beyond its scope
)

// Outcomes: HTTP statuses as strings, "empty" (a 200 referrers index with
// nothing in it), "listed" / "unlisted" for catalog and search.
const (
	outListed   = "listed"
	outUnlisted = "unlisted"
	outEmpty    = "empty"
)

// expect is the outcome (or the acceptable outcomes) of op on repo by s.
func (h hubRules) expect(s *matrixSubject, mode authMode, op matrixOp, repo string) []string {
	l, vis, anon := h.level(s, repo), h.visible(s, repo), s.User == ""
	switch op {
	case opManifest, opBlob, opTags:
		switch {
		case vis:
			return []string{"200"}
		case anon:
			return []string{"401"}
		}
		return []string{"404"}
	case opReferrers:
		switch {
		case vis:
			return []string{"200"}
		case anon:
			return []string{"401"}
		}
		// An absent repository has no referrers: 404 NAME_UNKNOWN or an
		// empty index both say nothing.
		return []string{"404", outEmpty}
	case opPush:
		if l >= lvWrite {
			return []string{"201"}
		}
		return refusal(s, mode)
	case opDelete, opDeleteBlob:
		switch {
		case l >= lvAdmin && h.exists(repo):
			return []string{"202"}
		case l >= lvAdmin:
			return []string{"404"}
		}
		return refusal(s, mode)
	case opMountFrom, opMountAnon:
		switch {
		case anon:
			return []string{"401"}
		case min(lvAdmin, s.Cap) < lvWrite: // cannot push to its own scratch
			return refusal(s, mode)
		case !vis:
			return []string{"202"} // nothing to mount: an upload session starts
		case op == opMountAnon:
			// The registry may look for the blob or not.
			return []string{"201", "202"}
		}
		return []string{"201"}
	case opBlobElsewhere:
		if repo == "alice/pub" {
			return []string{"200"}
		}
		return []string{"404"} // alice/pub is public, but the blob is not in it
	case opCatalog, opSearch:
		if vis {
			return []string{outListed}
		}
		return []string{outUnlisted}
	}
	return []string{"unknown op " + string(op)}
}

// refusal is the answer to a known subject lacking what an operation
// needs, or to anonymous requests: 401 for anonymous requests (log in),
// 403 DENIED for a known identity. In the token flow the registry may
// instead answer 401 with error="insufficient_scope", as distribution and
// Docker Hub do when a token lacks the action (docker then prints
// "denied: requested access to the resource is denied").
func refusal(s *matrixSubject, mode authMode) []string {
	switch {
	case s.User == "":
		return []string{"401"}
	case mode == modeToken:
		return []string{"403", "401"}
	}
	return []string{"403"}
}

// isGrant reports whether an expected outcome of op lets the subject do or
// see something.
func isGrant(op matrixOp, out string) bool {
	switch op {
	case opMountFrom, opMountAnon:
		return out == "201"
	case opCatalog, opSearch:
		return out == outListed
	}
	return strings.HasPrefix(out, "2") && out != outEmpty
}

// matrixCell is one (subject, mode, op, repository) of the matrix.
type matrixCell struct {
	N       int
	Subject *matrixSubject
	Mode    authMode
	Op      matrixOp
	Repo    string
	Want    []string
	// Run overrides the op's runner (foreign-token cells).
	Run func(ctx context.Context, c *matrixCell) cellResult

	Got cellResult
}

func (c *matrixCell) String() string {
	return fmt.Sprintf("%-22s %-5s %-19s %-11s", c.Subject.Label, c.Mode, c.Op, c.Repo)
}

// cellResult is what a cell saw.
type cellResult struct {
	Out     string // outcome, comparable with Want
	Granted bool   // the subject did or saw something (side effects included)
	Note    string // details for the report
	// ChallengeError is the error attribute of a 401's challenge.
	ChallengeError string
}

func (r cellResult) String() string {
	if r.Note == "" {
		return r.Out
	}
	return r.Out + " (" + r.Note + ")"
}

// fixtureRepo is one repository seeded before the cells run.
type fixtureRepo struct {
	Name     string
	Private  bool
	Owner    string // who creates and pushes it
	Image    image
	Referrer digest.Digest // an artifact whose subject is Image
}

// matrixRun holds the node, the clients and the fixture.
type matrixRun struct {
	base    string
	rules   hubRules
	repos   map[string]*fixtureRepo
	admin   *registry // site admin, Basic: sets up throwaways and checks side effects
	clients map[string]*registry

	mu      sync.Mutex
	lists   map[string]*listing // catalog and search answers, fetched once per key
	searchy bool                // GET /v1/search exists
}

type listing struct {
	once  sync.Once
	names []string
	res   cellResult // set when the listing could not be read
}

func (m *matrixRun) client(s *matrixSubject, mode authMode) *registry {
	return m.clients[s.Label+"/"+mode.String()]
}

// TestAccessMatrix seeds users, an organization with teams, public and
// private repositories and access tokens through /api/v1 of one node, then
// checks every (subject, auth mode, operation, repository) cell against
// Docker Hub's rules. It fails listing every unexpected cell, and says
// whether any of them granted what the rules refuse.
func TestAccessMatrix(t *testing.T) {
	start := time.Now()
	p := nodetest.Start(t, nodetest.Options{})
	adminUser, adminPassword := p.Admin()
	base := p.URL()
	adminAPI := newAPIClient(base, adminUser, adminPassword)

	// Users, each with a random password.
	users := []string{"alice", "bob", "carol", "dave", "eve"}
	pw := map[string]string{adminUser: adminPassword}
	api := map[string]*apiClient{adminUser: adminAPI}
	for _, u := range users {
		pw[u] = "pw-" + sha256Hex(randomBytes(t, 16))[:20]
		adminAPI.createUser(t, u, pw[u])
		api[u] = newAPIClient(base, u, pw[u])
	}

	// Repositories, created through the API by their owners.
	fixture := []*fixtureRepo{
		{Name: "alice/pub", Owner: "alice"},
		{Name: "alice/priv", Private: true, Owner: "alice"},
		{Name: "acme/pub", Owner: "alice"},
		{Name: "acme/priv", Private: true, Owner: "alice"},
		{Name: "bob/pub", Owner: "bob"},
		{Name: "bob/priv", Private: true, Owner: "bob"},
	}
	ghosts := []string{"alice/ghost", "acme/ghost", "bob/ghost"} // never created
	rules := hubRules{
		siteAdmins: map[string]bool{adminUser: true},
		orgOwners:  map[string][]string{"acme": {"alice"}},
		grants: map[string]map[string]level{
			"bob":   {"acme/pub": lvRead, "acme/priv": lvRead},
			"carol": {"acme/pub": lvWrite, "acme/priv": lvWrite},
			"dave":  {"acme/pub": lvAdmin, "acme/priv": lvAdmin},
		},
		private: map[string]bool{},
	}

	// acme, created by alice, who becomes its owner; one team per level.
	api["alice"].must(t, http.MethodPost, "/api/v1/orgs", map[string]any{"orgname": "acme"}, nil, http.StatusCreated, http.StatusOK)
	m := &matrixRun{base: base, rules: rules, repos: map[string]*fixtureRepo{}, lists: map[string]*listing{}}
	for _, fr := range fixture {
		ns, name, _ := strings.Cut(fr.Name, "/")
		api[fr.Owner].createRepo(t, ns, name, fr.Private)
		rules.private[fr.Name] = fr.Private
		m.repos[fr.Name] = fr
	}
	for _, team := range []struct {
		name, member string
		perm         string
	}{{"readers", "bob", "read"}, {"writers", "carol", "write"}, {"admins", "dave", "admin"}} {
		a := api["alice"]
		a.must(t, http.MethodPost, "/api/v1/orgs/acme/teams", map[string]any{"name": team.name}, nil, http.StatusCreated, http.StatusOK)
		a.must(t, http.MethodPut, "/api/v1/orgs/acme/teams/"+team.name+"/members/"+team.member, nil, nil, http.StatusOK, http.StatusCreated, http.StatusNoContent)
		for _, repo := range []string{"acme/pub", "acme/priv"} {
			a.must(t, http.MethodPut, "/api/v1/orgs/acme/teams/"+team.name+"/permissions/"+repo,
				map[string]any{"permission": team.perm}, nil, http.StatusOK, http.StatusCreated, http.StatusNoContent)
		}
	}

	// Subjects. Every account has a private scratch repository of its own,
	// the target of its mounts.
	subjects := []*matrixSubject{{Label: "anonymous", Cap: lvAdmin, Scratch: "alice/scratch-anonymous"}}
	for _, u := range append([]string{adminUser}, users...) {
		subjects = append(subjects, &matrixSubject{Label: u, User: u, Password: pw[u], Cap: lvAdmin, Scratch: u + "/scratch"})
	}
	subjects = append(subjects,
		&matrixSubject{Label: "alice+read-token", User: "alice", Password: api["alice"].createAccessToken(t, "matrix-read", "read"),
			Cap: lvRead, Scratch: "alice/scratch-read-token"},
		&matrixSubject{Label: "dave+write-token", User: "dave", Password: api["dave"].createAccessToken(t, "matrix-write", "write"),
			Cap: lvWrite, Scratch: "dave/scratch-write-token"},
	)
	for _, s := range subjects {
		ns, name, _ := strings.Cut(s.Scratch, "/")
		for _, mode := range []authMode{modeToken, modeBasic} {
			api[ns].createRepo(t, ns, name+"-"+mode.String(), true)
		}
	}

	m.clients = map[string]*registry{}
	for _, s := range subjects {
		for _, mode := range []authMode{modeToken, modeBasic} {
			m.clients[s.Label+"/"+mode.String()] = newClientAuth(base, s.User, s.Password, mode).registry()
		}
	}
	m.admin = newClientAuth(base, adminUser, adminPassword, modeBasic).registry()

	// Images, pushed by the owners through the token flow, each with a
	// referrer.
	ctx := t.Context()
	for _, fr := range fixture {
		owner := m.clients[fr.Owner+"/token"]
		fr.Image = randomImage(t, 512)
		if err := owner.push(ctx, fr.Name, "v1", fr.Image); err != nil {
			t.Fatalf("seed %s as %s: %v", fr.Name, fr.Owner, err)
		}
		d, err := pushReferrer(ctx, owner, fr.Name, fr.Image)
		if err != nil {
			t.Fatalf("seed a referrer in %s: %v", fr.Name, err)
		}
		fr.Referrer = d
	}
	setup := time.Since(start)

	// Search is issue 5: assert it when the endpoint exists.
	for _, who := range []*registry{m.client(subjects[0], modeBasic), m.admin} {
		r, err := who.do(ctx, http.MethodGet, "/v1/search?q=pub", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusNotFound {
			m.searchy = true
		}
	}

	// The cells.
	repoRows := append(slices.Sorted(maps.Keys(m.repos)), ghosts...)
	var cells []*matrixCell
	add := func(s *matrixSubject, mode authMode, op matrixOp, repo string) {
		cells = append(cells, &matrixCell{N: len(cells), Subject: s, Mode: mode, Op: op, Repo: repo, Want: rules.expect(s, mode, op, repo)})
	}
	basicOps := []matrixOp{opManifest, opBlob, opTags, opPush, opDelete, opMountFrom, opCatalog}
	tokenOps := []matrixOp{opManifest, opBlob, opTags, opReferrers, opPush, opDelete, opDeleteBlob,
		opMountFrom, opMountAnon, opBlobElsewhere, opCatalog}
	if m.searchy {
		tokenOps = append(tokenOps, opSearch)
	} else {
		t.Log("search cells SKIPPED: GET /v1/search answers 404 to everyone (issue 5 has not landed)")
	}
	for _, s := range subjects {
		for _, repo := range repoRows {
			for _, mode := range []authMode{modeToken, modeBasic} {
				ops := tokenOps
				if mode == modeBasic {
					ops = basicOps
				}
				for _, op := range ops {
					if !rules.exists(repo) && (op == opDeleteBlob || op == opMountAnon || op == opBlobElsewhere) {
						continue // these need content in the repository
					}
					add(s, mode, op, repo)
				}
			}
		}
	}
	cells = append(cells, foreignTokenCells(m, subjects, len(cells))...)

	runCells(ctx, t, m, cells)

	// The fixture is intact: no cell destroyed what it should not have.
	for _, fr := range fixture {
		if err := m.admin.checkPulled(ctx, fr.Name, "v1", fr.Image); err != nil {
			t.Errorf("fixture %s damaged by the matrix: %v", fr.Name, err)
		}
	}
	reportCells(t, cells, len(subjects), len(repoRows), setup, time.Since(start))
}

// runCells runs the cells on a few workers, under one deadline.
func runCells(ctx context.Context, t *testing.T, m *matrixRun, cells []*matrixCell) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	work := make(chan *matrixCell)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for c := range work {
				if c.Run != nil {
					c.Got = c.Run(ctx, c)
				} else {
					c.Got = m.run(ctx, c)
				}
				// A known user refused with 401 must be told that the
				// token lacks the action, not that the credentials are bad.
				if c.Got.Out == "401" && c.Subject.User != "" && c.Op != opForeignToken && c.Got.ChallengeError != "insufficient_scope" {
					c.Got = c.Got.wrong(fmt.Sprintf("a 401 for user %s without error=\"insufficient_scope\" (%q)", c.Subject.User, c.Got.ChallengeError))
				}
			}
		})
	}
	for _, c := range cells {
		work <- c
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the matrix did not finish: %v", ctx.Err())
	}
}

// reportCells fails the test listing every cell whose outcome is not the
// expected one, and says how many of them granted something.
func reportCells(t *testing.T, cells []*matrixCell, nSubjects, nRepos int, setup, total time.Duration) {
	var bad, grants []*matrixCell
	count := map[string]int{}
	for _, c := range cells {
		count[c.Got.Out]++
		if slices.Contains(c.Want, c.Got.Out) && !(c.Got.Granted && !wantsGrant(c)) {
			continue
		}
		bad = append(bad, c)
		if c.Got.Granted && !wantsGrant(c) {
			grants = append(grants, c)
		}
	}
	var outs []string
	for _, o := range slices.Sorted(maps.Keys(count)) {
		outs = append(outs, fmt.Sprintf("%s: %d", o, count[o]))
	}
	t.Logf("access matrix: %d subjects x %d repositories x operations and auth modes = %d cells in %s (setup %s); outcomes %s",
		nSubjects, nRepos, len(cells), total.Round(time.Millisecond), setup.Round(time.Millisecond), strings.Join(outs, ", "))
	if len(grants) == 0 {
		t.Logf("zero unexpected grants in %d cells", len(cells))
	} else {
		var b strings.Builder
		for _, c := range grants {
			fmt.Fprintf(&b, "\n  %s want %s, got %s", c, strings.Join(c.Want, "|"), c.Got)
		}
		t.Errorf("%d UNEXPECTED GRANTS (a subject did or saw what the rules refuse):%s", len(grants), b.String())
	}
	if len(bad) > 0 {
		var b strings.Builder
		for _, c := range bad {
			fmt.Fprintf(&b, "\n  %s want %s, got %s", c, strings.Join(c.Want, "|"), c.Got)
		}
		t.Errorf("%d of %d cells unexpected (subject, mode, operation, repository):%s", len(bad), len(cells), b.String())
	}
}

func wantsGrant(c *matrixCell) bool {
	return slices.ContainsFunc(c.Want, func(o string) bool { return isGrant(c.Op, o) })
}

// pushReferrer pushes an artifact whose subject is im and returns its digest.
func pushReferrer(ctx context.Context, g *registry, repo string, im image) (digest.Digest, error) {
	empty := []byte("{}")
	if _, err := g.pushBlob(ctx, repo, ocispec.MediaTypeEmptyJSON, empty); err != nil {
		return "", err
	}
	ed := ocispec.DescriptorEmptyJSON
	b, err := json.Marshal(ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.hubmesh.test.signature",
		Config:       ed,
		Layers:       []ocispec.Descriptor{ed},
		Subject:      &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: im.Digest(), Size: int64(len(im.Manifest))},
	})
	if err != nil {
		return "", err
	}
	d := digest.FromBytes(b)
	return d, g.putManifest(ctx, repo, d.String(), ocispec.MediaTypeImageManifest, b)
}

// classify turns a response into an outcome, checking that a denial has
// the error code and, for 401, the challenge clients need.
func classify(r response, repo string) cellResult {
	codes := r.Codes()
	out := cellResult{Out: strconv.Itoa(r.Status), Granted: r.Status/100 == 2}
	switch r.Status {
	case http.StatusUnauthorized:
		if ch, err := parseChallenge(r.Header.Get("WWW-Authenticate")); err == nil {
			out.ChallengeError = ch.Params["error"]
		}
		if err := checkChallenge(r, repo); err != nil {
			out.Note = err.Error()
		} else if !slices.Contains(codes, "UNAUTHORIZED") {
			out.Note = fmt.Sprintf("codes %v, want UNAUTHORIZED", codes)
		}
	case http.StatusForbidden:
		if !slices.Contains(codes, "DENIED") {
			out.Note = fmt.Sprintf("codes %v, want DENIED", codes)
		}
	case http.StatusNotFound:
		if !slices.ContainsFunc(codes, func(c string) bool {
			return c == "NAME_UNKNOWN" || c == "MANIFEST_UNKNOWN" || c == "BLOB_UNKNOWN"
		}) {
			out.Note = fmt.Sprintf("codes %v, want NAME_UNKNOWN, MANIFEST_UNKNOWN or BLOB_UNKNOWN", codes)
		}
	default:
		if r.Status/100 != 2 {
			out.Note = r.String()
		}
	}
	if out.Note != "" {
		out.Out += "!" // a right status with a wrong body is not the expected outcome
	}
	return out
}

// failed is the outcome of a request that got no HTTP answer. A token
// endpoint that refuses to issue a token denies the operation with its
// status, as the client sees it.
func failed(err error) cellResult {
	var te *tokenError
	if errors.As(err, &te) {
		return cellResult{Out: strconv.Itoa(te.Status), Note: "from the token endpoint: " + te.Body}
	}
	return cellResult{Out: "error", Note: err.Error()}
}

// run performs one cell.
func (m *matrixRun) run(ctx context.Context, c *matrixCell) cellResult {
	g := m.client(c.Subject, c.Mode)
	fr := m.repos[c.Repo]                        // nil for a ghost
	nsPub := m.repos[namespaceOf(c.Repo)+"/pub"] // a neighbour for ghosts
	switch c.Op {
	case opManifest:
		r, err := g.do(ctx, http.MethodGet, "/v2/"+c.Repo+"/manifests/v1",
			http.Header{"Accept": {ocispec.MediaTypeImageManifest}}, nil)
		if err != nil {
			return failed(err)
		}
		res := classify(r, c.Repo)
		if r.Status == http.StatusOK && (fr == nil || !bytes.Equal(r.Body, fr.Image.Manifest)) {
			res = res.wrong("not the pushed manifest")
		}
		return res
	case opBlob:
		d := nsPub.Image.LayerDesc.Digest
		if fr != nil {
			d = fr.Image.LayerDesc.Digest
		}
		r, err := g.do(ctx, http.MethodGet, "/v2/"+c.Repo+"/blobs/"+d.String(), nil, nil)
		if err != nil {
			return failed(err)
		}
		return classify(r, c.Repo)
	case opTags:
		r, err := g.do(ctx, http.MethodGet, "/v2/"+c.Repo+"/tags/list", nil, nil)
		if err != nil {
			return failed(err)
		}
		res := classify(r, c.Repo)
		if r.Status == http.StatusOK && !bytes.Contains(r.Body, []byte(`"v1"`)) {
			res = res.wrong("v1 not listed: " + r.String())
		}
		return res
	case opReferrers:
		d := nsPub.Image.Digest()
		if fr != nil {
			d = fr.Image.Digest()
		}
		r, err := g.do(ctx, http.MethodGet, "/v2/"+c.Repo+"/referrers/"+d.String(), nil, nil)
		if err != nil {
			return failed(err)
		}
		res := classify(r, c.Repo)
		if r.Status == http.StatusOK {
			var idx ocispec.Index
			if err := json.Unmarshal(r.Body, &idx); err != nil {
				return cellResult{Out: "200!", Note: "not an index: " + r.String()}
			}
			switch {
			case len(idx.Manifests) == 0:
				res = cellResult{Out: outEmpty}
			case fr == nil || idx.Manifests[0].Digest != fr.Referrer:
				res = res.wrong("unexpected referrers: " + r.String())
			}
		}
		return res
	case opPush:
		return m.push(ctx, g, c)
	case opDelete:
		return m.deleteManifest(ctx, g, c)
	case opDeleteBlob:
		return m.deleteBlob(ctx, g, c)
	case opMountFrom, opMountAnon:
		return m.mount(ctx, g, c)
	case opBlobElsewhere:
		d := fr.Image.LayerDesc.Digest
		r, err := g.do(ctx, http.MethodGet, "/v2/alice/pub/blobs/"+d.String(), nil, nil)
		if err != nil {
			return failed(err)
		}
		return classify(r, "alice/pub")
	case opCatalog:
		return m.listed(ctx, g, c, "catalog", "/v2/_catalog?n=10000", func(b []byte) ([]string, error) {
			var v struct {
				Repositories []string `json:"repositories"`
			}
			err := json.Unmarshal(b, &v)
			return v.Repositories, err
		})
	case opSearch:
		q := c.Repo[strings.IndexByte(c.Repo, '/')+1:]
		return m.listed(ctx, g, c, "search "+q, "/v1/search?n=100&q="+url.QueryEscape(q), func(b []byte) ([]string, error) {
			var v struct {
				Results []struct {
					Name string `json:"name"`
				} `json:"results"`
			}
			err := json.Unmarshal(b, &v)
			var names []string
			for _, r := range v.Results {
				names = append(names, r.Name)
			}
			return names, err
		})
	}
	return cellResult{Out: "error", Note: "unknown op"}
}

// listed fetches a listing once per (subject, mode, key) and says whether
// the cell's repository is in it.
func (m *matrixRun) listed(ctx context.Context, g *registry, c *matrixCell, key, path string, parse func([]byte) ([]string, error)) cellResult {
	k := c.Subject.Label + "/" + c.Mode.String() + "/" + key
	m.mu.Lock()
	l, ok := m.lists[k]
	if !ok {
		l = &listing{}
		m.lists[k] = l
	}
	m.mu.Unlock()
	l.once.Do(func() {
		r, err := g.do(ctx, http.MethodGet, path, nil, nil)
		switch {
		case err != nil:
			l.res = failed(err)
		case r.Status != http.StatusOK:
			l.res = classify(r, "")
			l.res.Granted = false
		default:
			l.names, err = parse(r.Body)
			if err != nil {
				l.res = cellResult{Out: "200!", Note: "cannot parse " + r.String()}
			}
		}
	})
	if l.res.Out != "" {
		return l.res
	}
	if slices.Contains(l.names, c.Repo) {
		return cellResult{Out: outListed, Granted: true}
	}
	return cellResult{Out: outUnlisted}
}

// uploadBlob uploads content to repo (POST, then PUT ?digest=) and returns
// the first answer that is not a step of a successful upload, or the 201.
func uploadBlob(ctx context.Context, g *registry, repo string, content []byte) (response, error) {
	r, err := g.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil || r.Status != http.StatusAccepted {
		return r, err
	}
	loc, err := withQuery(r.Header.Get("Location"), "digest", digest.FromBytes(content).String())
	if err != nil {
		return r, err
	}
	return g.do(ctx, http.MethodPut, loc, http.Header{"Content-Type": {"application/octet-stream"}}, bytes.NewReader(content))
}

// manifestOfBlobs is an image manifest over config and layer, with an
// annotation that makes it unique to one cell.
func manifestOfBlobs(config, layer ocispec.Descriptor, cell int) []byte {
	b, err := json.Marshal(ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      config,
		Layers:      []ocispec.Descriptor{layer},
		Annotations: map[string]string{"org.hubmesh.test.cell": strconv.Itoa(cell)},
	})
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	return b
}

// push: the subject uploads a new config and layer and PUTs a manifest
// under a new tag. For a name that does not exist it pushes to a fresh
// name in that namespace, which creates the repository. When the upload
// is refused, a manifest PUT of blobs already in the repository must be
// refused alike. The admin then checks whether the tag exists.
func (m *matrixRun) push(ctx context.Context, g *registry, c *matrixCell) cellResult {
	repo := c.Repo
	if m.repos[repo] == nil {
		repo = fmt.Sprintf("%s/new-%d", namespaceOf(c.Repo), c.N)
	}
	tag := fmt.Sprintf("push-%d", c.N)
	cfg := fmt.Appendf(nil, `{"cell":%d}`, c.N)
	layer := noise(256)
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	layerDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}

	var res cellResult
	up, err := uploadBlob(ctx, g, repo, layer)
	if err != nil {
		return failed(err)
	}
	if up.Status == http.StatusCreated {
		if up, err = uploadBlob(ctx, g, repo, cfg); err != nil {
			return failed(err)
		}
	}
	if up.Status == http.StatusCreated {
		body := manifestOfBlobs(cfgDesc, layerDesc, c.N)
		r, err := g.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+tag,
			http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}, bytes.NewReader(body))
		if err != nil {
			return failed(err)
		}
		res = classify(r, repo)
		if r.Status != http.StatusCreated {
			res.Note = strings.TrimPrefix(res.Note+"; the blob uploads were accepted", "; ")
			res.Granted = true
		}
	} else {
		res = classify(up, repo)
		// The same refusal for a manifest PUT that needs no upload.
		src := m.repos[repo]
		if src == nil {
			src = m.repos[namespaceOf(c.Repo)+"/pub"]
		}
		body := manifestOfBlobs(src.Image.ConfigDesc, src.Image.LayerDesc, c.N)
		r, err := g.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+tag,
			http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}, bytes.NewReader(body))
		if err != nil {
			return failed(err)
		}
		if mr := classify(r, repo); mr.Out != res.Out {
			res.Out += "/" + mr.Out
			res.Note = strings.TrimPrefix(res.Note+"; blob upload refused but manifest PUT: "+mr.String(), "; ")
			res.Granted = res.Granted || mr.Granted
		}
	}
	// Side effect, as the admin sees it.
	r, err := m.admin.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+tag,
		http.Header{"Accept": {ocispec.MediaTypeImageManifest}}, nil)
	if err != nil {
		return failed(err)
	}
	switch created := r.Status == http.StatusOK; {
	case created && res.Out != "201":
		res.Granted = true
		res.Note = strings.TrimPrefix(res.Note+"; but the tag was created", "; ")
	case !created && res.Out == "201":
		res.Note = fmt.Sprintf("but the admin sees HEAD %s:%s %d", repo, tag, r.Status)
		res.Out = "201!"
	}
	return res
}

// deleteManifest: the admin pushes a throwaway manifest, the subject
// deletes it by digest, the admin checks whether it is gone. On a name
// that does not exist, the subject deletes a digest nobody pushed.
func (m *matrixRun) deleteManifest(ctx context.Context, g *registry, c *matrixCell) cellResult {
	fr := m.repos[c.Repo]
	if fr == nil {
		d := digest.FromBytes(noise(32))
		r, err := g.do(ctx, http.MethodDelete, "/v2/"+c.Repo+"/manifests/"+d.String(), nil, nil)
		if err != nil {
			return failed(err)
		}
		return classify(r, c.Repo)
	}
	body := manifestOfBlobs(fr.Image.ConfigDesc, fr.Image.LayerDesc, c.N)
	d := digest.FromBytes(body)
	if err := m.admin.putManifest(ctx, c.Repo, fmt.Sprintf("del-%d", c.N), ocispec.MediaTypeImageManifest, body); err != nil {
		return cellResult{Out: "error", Note: "admin throwaway: " + err.Error()}
	}
	r, err := g.do(ctx, http.MethodDelete, "/v2/"+c.Repo+"/manifests/"+d.String(), nil, nil)
	if err != nil {
		return failed(err)
	}
	res := classify(r, c.Repo)
	return m.checkGone(ctx, res, "/v2/"+c.Repo+"/manifests/"+d.String())
}

// deleteBlob: the admin uploads a throwaway blob, the subject deletes it.
func (m *matrixRun) deleteBlob(ctx context.Context, g *registry, c *matrixCell) cellResult {
	content := noise(64)
	d := digest.FromBytes(content)
	if r, err := uploadBlob(ctx, m.admin, c.Repo, content); err != nil || r.Status != http.StatusCreated {
		return cellResult{Out: "error", Note: fmt.Sprintf("admin throwaway blob: %v %v", r, err)}
	}
	r, err := g.do(ctx, http.MethodDelete, "/v2/"+c.Repo+"/blobs/"+d.String(), nil, nil)
	if err != nil {
		return failed(err)
	}
	return m.checkGone(ctx, classify(r, c.Repo), "/v2/"+c.Repo+"/blobs/"+d.String())
}

// checkGone compares what the admin sees at path with what a delete
// answered: gone after a 202, still there otherwise.
func (m *matrixRun) checkGone(ctx context.Context, res cellResult, path string) cellResult {
	r, err := m.admin.do(ctx, http.MethodHead, path, http.Header{"Accept": {ocispec.MediaTypeImageManifest}}, nil)
	if err != nil {
		return failed(err)
	}
	gone := r.Status == http.StatusNotFound
	switch {
	case gone && res.Out != "202":
		res.Granted = true
		res.Note = strings.TrimPrefix(res.Note+"; but it was deleted", "; ")
	case !gone && res.Out == "202":
		res.Out = "202!"
		res.Note = fmt.Sprintf("but the admin still sees it: HEAD %d", r.Status)
	}
	return res
}

// mount: the subject asks to mount r's layer (from r) or r's config (no
// from) into its own scratch repository; the admin checks the link.
func (m *matrixRun) mount(ctx context.Context, g *registry, c *matrixCell) cellResult {
	target := c.Subject.scratch(c.Mode)
	q := url.Values{}
	var d digest.Digest
	if fr := m.repos[c.Repo]; fr == nil {
		d = digest.FromBytes(noise(32)) // nothing holds it
	} else if c.Op == opMountFrom {
		d = fr.Image.LayerDesc.Digest
	} else {
		d = fr.Image.ConfigDesc.Digest
	}
	q.Set("mount", d.String())
	if c.Op == opMountFrom {
		q.Set("from", c.Repo)
	}
	r, err := g.do(ctx, http.MethodPost, "/v2/"+target+"/blobs/uploads/?"+q.Encode(), nil, nil)
	if err != nil {
		return failed(err)
	}
	res := classify(r, target)
	res.Granted = r.Status == http.StatusCreated
	if r.Status == http.StatusAccepted {
		// Leave no session behind.
		if loc := r.Header.Get("Location"); loc != "" {
			_, _ = g.do(ctx, http.MethodDelete, loc, nil, nil)
		}
	}
	h, err := m.admin.do(ctx, http.MethodHead, "/v2/"+target+"/blobs/"+d.String(), nil, nil)
	if err != nil {
		return failed(err)
	}
	linked := h.Status == http.StatusOK
	switch {
	case linked && r.Status != http.StatusCreated:
		res.Granted = true
		res.Note = strings.TrimPrefix(res.Note+"; but the blob is now in "+target, "; ")
	case !linked && r.Status == http.StatusCreated:
		res.Out = "201!"
		res.Note = fmt.Sprintf("but the admin sees HEAD %s@%s %d", target, d, h.Status)
	}
	return res
}

// foreignTokenCells: registry tokens used beyond what they were issued
// for must grant nothing more.
func foreignTokenCells(m *matrixRun, subjects []*matrixSubject, n int) []*matrixCell {
	bySubject := map[string]*matrixSubject{}
	for _, s := range subjects {
		bySubject[s.Label] = s
	}
	deny := []string{"401", "403", "404"}
	type use struct {
		subject, scope, method, path, repo string
	}
	uses := []use{
		// eve's token for her own repository, used on others'.
		{"eve", "repository:eve/scratch:pull,push", http.MethodGet, "/v2/alice/priv/manifests/v1", "alice/priv"},
		{"eve", "repository:eve/scratch:pull,push", http.MethodPost, "/v2/alice/pub/blobs/uploads/", "alice/pub"},
		{"eve", "repository:eve/scratch:pull,push", http.MethodGet, "/v2/acme/priv/tags/list", "acme/priv"},
		// A token for acme/pub does not open acme/priv.
		{"eve", "repository:acme/pub:pull", http.MethodGet, "/v2/acme/priv/tags/list", "acme/priv"},
		// bob's read token does not push or delete.
		{"bob", "repository:acme/priv:pull", http.MethodPost, "/v2/acme/priv/blobs/uploads/", "acme/priv"},
		{"bob", "repository:acme/priv:pull,push,delete,*", http.MethodPost, "/v2/acme/priv/blobs/uploads/", "acme/priv"},
		// An anonymous token for a public pull does not push.
		{"anonymous", "repository:alice/pub:pull,push", http.MethodPost, "/v2/alice/pub/blobs/uploads/", "alice/pub"},
		{"anonymous", "repository:alice/priv:pull", http.MethodGet, "/v2/alice/priv/tags/list", "alice/priv"},
		// carol's write token does not delete.
		{"carol", "repository:acme/priv:pull,push,delete", http.MethodDelete, "/v2/acme/priv/manifests/v1", "acme/priv"},
		// A read-capped access token does not push even with a token asking for it.
		{"alice+read-token", "repository:alice/pub:pull,push", http.MethodPost, "/v2/alice/pub/blobs/uploads/", "alice/pub"},
	}
	var cells []*matrixCell
	for i, u := range uses {
		s := bySubject[u.subject]
		c := &matrixCell{N: n + i, Subject: s, Mode: modeToken, Op: opForeignToken, Repo: u.repo, Want: deny}
		c.Run = func(ctx context.Context, c *matrixCell) cellResult {
			auth := newClientAuth(m.base, s.User, s.Password, modeToken)
			tok, err := auth.token(ctx, []string{u.scope})
			if err != nil {
				return failed(err)
			}
			g := newRegistry(m.base)
			r, err := g.do(ctx, u.method, u.path, http.Header{"Authorization": {"Bearer " + tok}}, nil)
			if err != nil {
				return failed(err)
			}
			res := classify(r, "")
			res.Note = strings.TrimPrefix(res.Note+"; "+u.method+" "+u.path+" with a token for "+u.scope, "; ")
			return res
		}
		cells = append(cells, c)
	}
	return cells
}

// noise is n random bytes; safe on worker goroutines (crypto/rand.Read
// never returns an error).
func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// wrong marks a result whose status is right but whose body or side
// effect is not: it no longer matches the expected outcome.
func (r cellResult) wrong(note string) cellResult {
	if !strings.HasSuffix(r.Out, "!") {
		r.Out += "!"
	}
	r.Note = strings.TrimPrefix(r.Note+"; "+note, "; ")
	return r
}
