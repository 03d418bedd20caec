package registryapi

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

const (
	testPassword = "correct horse battery"
	testService  = "test-svc"
	testIssuer   = "hubmesh:c1"
)

// testHash is the one argon2id hash every test user starts with, computed
// once: hashing costs tens of milliseconds.
var testHash = sync.OnceValue(func() string {
	h, err := auth.HashPassword(testPassword)
	if err != nil {
		panic(err)
	}
	return h
})

// authEnv is a node's API plane with access control over fakes: /v2/,
// /token, /api/v1/ and /api/v1/cluster/ behind one real HTTP server.
type authEnv struct {
	t    testing.TB
	acc  *fakeAccounts
	reg  *memRegistry
	ev   *fakeEvents
	a    *Auth
	srv  *httptest.Server
	host string
	h    http.Handler
}

func newAuthEnv(t testing.TB, opts ...func(*AuthConfig)) *authEnv {
	t.Helper()
	acc := newFakeAccounts()
	key, err := auth.NewSigningKey(time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	acc.keys = []hubmesh.SigningKey{key}
	ev := &fakeEvents{acc: acc}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := AuthConfig{
		Identities: acc, ClusterID: func() string { return "c1" }, Service: testService,
		Events: ev, Logger: logger, Limiter: auth.NewLimiter(5, time.Minute),
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := NewAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := newMemRegistry()
	acc.oci = func(repo string) bool {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		r, ok := reg.repos[repo]
		return ok && len(r.manifests) > 0
	}
	v2, err := New(Config{Manifests: reg, Listings: reg, Links: reg, Blobs: reg, Uploads: reg, Logger: logger, Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := NewTokenHandler(a)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := NewHub(HubConfig{Auth: a, Accounts: acc, Listings: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewClusterHandler(&fakeCluster{}, logger, WithAdminAuth(a))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v2/", v2)
	mux.Handle("/token", tok)
	mux.Handle("/api/v1/", hub)
	mux.Handle("/api/v1/cluster/", cl)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &authEnv{t: t, acc: acc, reg: reg, ev: ev, a: a, srv: srv, host: strings.TrimPrefix(srv.URL, "http://"), h: mux}
	e.addUser("admin", true)
	return e
}

// withHub serves e through a new test server whose /api/v1/ is a Hub of
// cfg (its Auth, Accounts, Listings and Logger are e's) and whose other
// paths are e's handler as it was (/v2/, /token).
func (e *authEnv) withHub(cfg HubConfig) {
	e.t.Helper()
	cfg.Auth, cfg.Accounts, cfg.Listings, cfg.Logger = e.a, e.acc, e.reg, e.a.log
	hub, err := NewHub(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", hub)
	mux.Handle("/", e.h)
	e.srv = httptest.NewServer(mux)
	e.t.Cleanup(e.srv.Close)
	e.h, e.host = mux, strings.TrimPrefix(e.srv.URL, "http://")
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *authEnv) addUser(name string, admin bool) {
	e.acc.mu.Lock()
	defer e.acc.mu.Unlock()
	e.acc.users[name] = hubmesh.User{Name: name, PasswordHash: testHash(), Admin: admin, Created: time.Now().Add(-time.Hour)}
}

func (e *authEnv) addOrg(org, owner string) {
	e.t.Helper()
	if err := e.acc.CreateOrg(e.t.Context(), hubmesh.Org{Name: org, Owner: owner}); err != nil {
		e.t.Fatal(err)
	}
}

// addTeam creates team with members and repository grants.
func (e *authEnv) addTeam(org, team string, members []string, grants map[string]hubmesh.Permission) {
	e.t.Helper()
	ctx := e.t.Context()
	if team != hubmesh.OwnersTeam {
		if err := e.acc.CreateTeam(ctx, hubmesh.Team{Org: org, Name: team}); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, m := range members {
		if err := e.acc.AddTeamMember(ctx, org, team, m); err != nil {
			e.t.Fatal(err)
		}
	}
	for repo, p := range grants {
		if err := e.acc.SetTeamPermission(ctx, org, team, repo, p); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *authEnv) addRepo(name string, private bool) {
	e.t.Helper()
	if err := e.acc.CreateRepository(e.t.Context(), hubmesh.Repository{Namespace: hubmesh.RepoOf(name), Name: name, IsPrivate: private}); err != nil {
		e.t.Fatal(err)
	}
}

func basic(user, pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
}

func bearer(tok string) string { return "Bearer " + tok }

// do sends a request; authz is the Authorization header ("" for none).
func (e *authEnv) do(method, path, authz string, body []byte, hdr ...string) result {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return result{status: resp.StatusCode, hdr: resp.Header, body: b}
}

func (e *authEnv) expect(r result, status int, code string) {
	e.t.Helper()
	if r.status != status || code != "" && r.code() != code {
		e.t.Fatalf("got %d %q, want %d %q; body %s", r.status, r.code(), status, code, truncate(string(r.body), 400))
	}
}

// json sends a JSON body to the REST API.
func (e *authEnv) json(method, path, authz string, v any) result {
	e.t.Helper()
	var body []byte
	if v != nil {
		var err error
		if s, ok := v.(string); ok {
			body = []byte(s)
		} else if body, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.do(method, path, authz, body, "Content-Type", "application/json")
}

func decode[T any](t testing.TB, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", truncate(string(r.body), 300), err)
	}
	return v
}

// pushImage pushes a config, a layer and a manifest tagged tag into repo
// with authz; it returns the layer digest.
func (e *authEnv) pushImage(repo, tag, authz string) digest.Digest {
	e.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","repo":"` + repo + `"}`)
	layer := []byte(repo + "/" + tag + "/" + strconv.FormatInt(time.Now().UnixNano(), 10))
	var ds []digest.Digest
	for _, b := range [][]byte{cfg, layer} {
		d := digest.FromBytes(b)
		e.expect(e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), authz, b), http.StatusCreated, "")
		ds = append(ds, d)
	}
	m, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": ds[0], "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ds[1], "size": len(layer)}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.expect(e.do("PUT", "/v2/"+repo+"/manifests/"+tag, authz, m, "Content-Type", mediaTypeOCIManifest), http.StatusCreated, "")
	return ds[1]
}

// token asks GET /token for scopes, with Basic credentials when user is
// not empty.
func (e *authEnv) token(user string, scopes ...string) string {
	e.t.Helper()
	q := url.Values{"service": {testService}, "scope": scopes}
	authz := ""
	if user != "" {
		authz = basic(user, testPassword)
	}
	r := e.do("GET", "/token?"+q.Encode(), authz, nil)
	e.expect(r, http.StatusOK, "")
	return decode[tokenResponse](e.t, r).Token
}

// claims verifies a token as the cluster would and returns its claims.
func (e *authEnv) claims(tok, aud, kind string) auth.Claims {
	e.t.Helper()
	ks, err := auth.NewKeySet(e.acc.keys)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := ks.Verify(tok, testIssuer, aud, kind, time.Now())
	if err != nil {
		e.t.Fatalf("verify %s token: %v", kind, err)
	}
	return c
}

func accessOf(c auth.Claims) map[string][]string {
	out := map[string][]string{}
	for _, a := range c.Access {
		out[a.Type+":"+a.Name] = a.Actions
	}
	return out
}

func TestNewAuthValidatesConfig(t *testing.T) {
	_, err := NewAuth(AuthConfig{})
	if err == nil {
		t.Fatal("NewAuth(AuthConfig{}) succeeded")
	}
	for _, field := range []string{"Identities", "ClusterID", "Logger"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := NewHub(HubConfig{}); err == nil {
		t.Fatal("NewHub(HubConfig{}) succeeded")
	}
	if _, err := NewTokenHandler(nil); err == nil {
		t.Fatal("NewTokenHandler(nil) succeeded")
	}
}

func TestChallenge(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	realm := `Bearer realm="http://` + e.host + `/token",service="test-svc"`
	anonPull := e.token("", "repository:alice/app:pull")
	d := digest.FromString("x").String()
	cases := []struct {
		name, method, path, authz string
		hdr                       []string
		want                      string
	}{
		{"base", "GET", "/v2/", "", nil, realm},
		{"base HEAD", "HEAD", "/v2/", "", nil, realm},
		{"base behind a TLS proxy", "GET", "/v2/", "", []string{"X-Forwarded-Proto", "https"},
			`Bearer realm="https://` + e.host + `/token",service="test-svc"`},
		{"push manifest", "PUT", "/v2/alice/app/manifests/latest", "", nil, realm + `,scope="repository:alice/app:pull,push"`},
		{"start upload", "POST", "/v2/alice/app/blobs/uploads/", "", nil, realm + `,scope="repository:alice/app:pull,push"`},
		{"delete", "DELETE", "/v2/alice/app/manifests/" + d, "", nil, realm + `,scope="repository:alice/app:delete"`},
		{"bad basic", "PUT", "/v2/alice/app/manifests/latest", basic("alice", "nope"), nil, realm + `,scope="repository:alice/app:pull,push"`},
		{"malformed header", "GET", "/v2/", "Digest x", nil, realm},
		{"bad bearer", "GET", "/v2/alice/app/tags/list", "Bearer abc.def.ghi", nil,
			realm + `,scope="repository:alice/app:pull",error="invalid_token"`},
		{"anonymous token lacks push", "POST", "/v2/alice/app/blobs/uploads/", bearer(anonPull), nil,
			realm + `,scope="repository:alice/app:pull,push",error="insufficient_scope"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, c.authz, nil, c.hdr...)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, body %s", r.status, r.body)
			}
			if c.method != "HEAD" && r.code() != "UNAUTHORIZED" {
				t.Fatalf("code %q", r.code())
			}
			if got := r.hdr.Values("WWW-Authenticate"); len(got) != 1 || got[0] != c.want {
				t.Fatalf("WWW-Authenticate\n got %q\nwant %q", got, c.want)
			}
		})
	}
	// anonymous pulls of a public repository need no credentials at all
	e.pushImage("alice/app", "v1", basic("alice", testPassword))
	e.expect(e.do("GET", "/v2/alice/app/manifests/v1", "", nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v2/alice/app/manifests/v1", bearer(anonPull), nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v2/", bearer(anonPull), nil), http.StatusOK, "")
}

var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// TestDockerLoginFlow follows what the docker CLI does for `docker login`
// and then for a push with the stored refresh token.
func TestDockerLoginFlow(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	r := e.do("GET", "/v2/", "", nil)
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	params := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(r.hdr.Get("WWW-Authenticate"), -1) {
		params[m[1]] = m[2]
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Host != e.host || realm.Path != "/token" || params["service"] != testService {
		t.Fatalf("challenge params %v", params)
	}
	q := url.Values{"account": {"alice"}, "client_id": {"docker"}, "offline_token": {"true"}, "service": {params["service"]}}
	r = e.do("GET", realm.Path+"?"+q.Encode(), basic("alice", testPassword), nil)
	e.expect(r, http.StatusOK, "")
	if r.hdr.Get("Cache-Control") != "no-store" || r.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("token response headers %v", r.hdr)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"token", "access_token", "expires_in", "issued_at", "refresh_token"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("token response lacks %s: %s", k, r.body)
		}
	}
	tr := decode[tokenResponse](t, r)
	if tr.Token != tr.AccessToken || tr.ExpiresIn != 300 || tr.RefreshToken == "" {
		t.Fatalf("token response %+v", tr)
	}
	if at, err := time.Parse(time.RFC3339, tr.IssuedAt); err != nil || time.Since(at) > time.Minute {
		t.Fatalf("issued_at %q: %v", tr.IssuedAt, err)
	}
	c := e.claims(tr.Token, testService, auth.KindAccess)
	if c.Subject != "alice" || c.Issuer != testIssuer || len(c.Access) != 0 || c.Expires.Sub(c.IssuedAt) != 5*time.Minute {
		t.Fatalf("access claims %+v", c)
	}
	if rc := e.claims(tr.RefreshToken, testService, auth.KindRefresh); rc.Subject != "alice" {
		t.Fatalf("refresh claims %+v", rc)
	}
	e.expect(e.do("GET", "/v2/", bearer(tr.Token), nil), http.StatusOK, "")
	if !slices.Contains(e.acc.actions(), "login") {
		t.Fatalf("docker login not audited: %v", e.acc.actions())
	}

	// later: the daemon trades the refresh token for a push token
	form := url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "service": {testService},
		"client_id": {"docker"}, "scope": {"repository:alice/app:pull,push"},
	}
	r = e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	e.expect(r, http.StatusOK, "")
	pt := decode[tokenResponse](t, r)
	if pt.RefreshToken != "" {
		t.Fatalf("a refresh grant without access_type=offline returned a refresh token")
	}
	if got := accessOf(e.claims(pt.AccessToken, testService, auth.KindAccess)); !slices.Equal(got["repository:alice/app"], []string{"pull", "push"}) {
		t.Fatalf("granted %v", got)
	}
	e.pushImage("alice/app", "latest", bearer(pt.Token))
	e.expect(e.do("GET", "/v2/alice/app/tags/list", bearer(pt.Token), nil), http.StatusOK, "")
	// the token is for alice/app only
	e.expect(e.do("GET", "/v2/alice/other/tags/list", bearer(pt.Token), nil), http.StatusUnauthorized, "UNAUTHORIZED")

	// POST grant_type=password with access_type=offline
	form = url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword},
		"access_type": {"offline"}, "scope": {"repository:alice/app:pull"}, "service": {testService}}
	r = e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	e.expect(r, http.StatusOK, "")
	if tr := decode[tokenResponse](t, r); tr.RefreshToken == "" || tr.AccessToken == "" {
		t.Fatalf("password grant %s", r.body)
	}
}

func TestTokenPostErrors(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	post := func(form url.Values, ct string) result {
		t.Helper()
		return e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", ct)
	}
	oauthErr := func(r result) string {
		var b struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(r.body, &b)
		return b.Error
	}
	const form = "application/x-www-form-urlencoded"
	refresh := func() string {
		f := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}, "access_type": {"offline"}}
		r := post(f, form)
		e.expect(r, http.StatusOK, "")
		return decode[tokenResponse](t, r).RefreshToken
	}
	rt := refresh()
	cases := []struct {
		name   string
		form   url.Values
		ct     string
		status int
		err    string
	}{
		{"bad password", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"x"}}, form, 400, "invalid_grant"},
		{"unknown user", url.Values{"grant_type": {"password"}, "username": {"zed"}, "password": {"x"}}, form, 400, "invalid_grant"},
		{"no grant", url.Values{"username": {"alice"}}, form, 400, "invalid_request"},
		{"odd grant", url.Values{"grant_type": {"client_credentials"}}, form, 400, "unsupported_grant_type"},
		{"json body", url.Values{"grant_type": {"password"}}, "application/json", 400, "invalid_request"},
		{"bad scope", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "scope": {"repository:UPPER:pull"}}, form, 400, "invalid_scope"},
		{"garbage refresh", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"a.b.c"}}, form, 400, "invalid_grant"},
		{"missing refresh", url.Values{"grant_type": {"refresh_token"}}, form, 400, "invalid_request"},
		{"ok refresh", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, form, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(c.form, c.ct)
			if r.status != c.status || oauthErr(r) != c.err {
				t.Fatalf("got %d %s, want %d %q", r.status, r.body, c.status, c.err)
			}
		})
	}

	// an access token is not a refresh token
	at := e.token("alice")
	r := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {at}}, form)
	if r.status != 400 || oauthErr(r) != "invalid_grant" {
		t.Fatalf("access token as refresh token: %d %s", r.status, r.body)
	}
	// a password change voids older refresh tokens
	e.acc.mu.Lock()
	u := e.acc.users["alice"]
	u.PasswordChanged = time.Now().Add(2 * time.Second)
	e.acc.users["alice"] = u
	e.acc.mu.Unlock()
	if r := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, form); r.status != 400 || oauthErr(r) != "invalid_grant" {
		t.Fatalf("refresh after password change: %d %s", r.status, r.body)
	}
	// a disabled user gets nothing
	e.acc.mu.Lock()
	u.PasswordChanged, u.Disabled = time.Time{}, true
	e.acc.users["alice"] = u
	e.acc.mu.Unlock()
	if r := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, form); r.status != 400 {
		t.Fatalf("refresh of a disabled user: %d %s", r.status, r.body)
	}
	e.expect(e.do("GET", "/token?service=test-svc", basic("alice", testPassword), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	// GET with bad credentials: 401 in the registry format
	r = e.do("GET", "/token?service=test-svc&scope=repository:alice/app:pull", basic("bob", "x"), nil)
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("GET", "/token?scope=nonsense", "", nil), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.do("PUT", "/token", "", nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
}

// TestTokenGrants checks granted = requested ∩ allowed, scope by scope.
func TestTokenGrants(t *testing.T) {
	e := newAuthEnv(t)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		e.addUser(u, false)
	}
	e.addRepo("alice/app", false)
	e.addRepo("alice/secret", true)
	e.addOrg("acme", "carol")
	e.addRepo("acme/api", true)
	e.addTeam("acme", "dev", []string{"dave"}, map[string]hubmesh.Permission{"acme/api": hubmesh.PermWrite})
	all := []string{
		"repository:alice/app:pull,push,delete", "repository:alice/secret:pull", "repository:acme/api:*",
		"repository:alice/new:pull,push", "registry:catalog:*",
	}
	cases := []struct {
		user string
		want map[string][]string
	}{
		{"", map[string][]string{
			"repository:alice/app": {"pull"}, "repository:alice/new": {"pull"}, "registry:catalog": {"*"},
		}},
		{"alice", map[string][]string{
			"repository:alice/app": {"delete", "pull", "push"}, "repository:alice/secret": {"pull"},
			"repository:alice/new": {"pull", "push"}, "registry:catalog": {"*"},
		}},
		{"bob", map[string][]string{
			"repository:alice/app": {"pull"}, "repository:alice/new": {"pull"}, "registry:catalog": {"*"},
		}},
		{"carol", map[string][]string{
			"repository:alice/app": {"pull"}, "repository:acme/api": {"delete", "pull", "push"},
			"repository:alice/new": {"pull"}, "registry:catalog": {"*"},
		}},
		{"dave", map[string][]string{
			"repository:alice/app": {"pull"}, "repository:acme/api": {"pull", "push"},
			"repository:alice/new": {"pull"}, "registry:catalog": {"*"},
		}},
		{"admin", map[string][]string{
			"repository:alice/app": {"delete", "pull", "push"}, "repository:alice/secret": {"pull"},
			"repository:acme/api": {"delete", "pull", "push"}, "repository:alice/new": {"pull", "push"}, "registry:catalog": {"*"},
		}},
	}
	for _, c := range cases {
		t.Run("user="+c.user, func(t *testing.T) {
			got := accessOf(e.claims(e.token(c.user, all...), testService, auth.KindAccess))
			if len(got) != len(c.want) {
				t.Fatalf("granted %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if !slices.Equal(got[k], v) {
					t.Fatalf("%s: granted %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
	// several scopes in one parameter, separated by spaces
	got := accessOf(e.claims(e.token("alice", "repository:alice/app:pull repository:bob/x:push"), testService, auth.KindAccess))
	if !slices.Equal(got["repository:alice/app"], []string{"pull"}) || !slices.Equal(got["repository:bob/x"], []string{}) {
		t.Fatalf("space-separated scopes: %v", got)
	}
}

func TestPrivateRepositoriesLookAbsent(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	e.addRepo("alice/secret", true)
	alice, bob := basic("alice", testPassword), basic("bob", testPassword)
	layer := e.pushImage("alice/secret", "v1", alice)
	subject := digest.FromString("subject").String()
	paths := []struct{ name, path, absentCode string }{
		{"manifest", "/v2/alice/secret/manifests/v1", "MANIFEST_UNKNOWN"},
		{"blob", "/v2/alice/secret/blobs/" + layer.String(), "BLOB_UNKNOWN"},
		{"tags", "/v2/alice/secret/tags/list", "NAME_UNKNOWN"},
	}
	for _, who := range []struct{ name, authz string }{{"bob", bob}, {"anonymous", ""}, {"anonymous token", bearer(e.token("", "repository:alice/secret:pull", "repository:alice/missing:pull"))}} {
		anonymous := who.name != "bob"
		for _, p := range paths {
			t.Run(who.name+"/"+p.name, func(t *testing.T) {
				if anonymous {
					// asked to log in, for a private and a missing name alike
					e.expect(e.do("GET", p.path, who.authz, nil), http.StatusUnauthorized, "UNAUTHORIZED")
					e.expect(e.do("GET", strings.Replace(p.path, "alice/secret", "alice/missing", 1), who.authz, nil), http.StatusUnauthorized, "UNAUTHORIZED")
					if p.name != "tags" {
						e.expect(e.do("HEAD", p.path, who.authz, nil), http.StatusUnauthorized, "")
					}
					return
				}
				e.expect(e.do("GET", p.path, who.authz, nil), http.StatusNotFound, p.absentCode)
				// what a repository that does not exist answers (the
				// consensus store answers MANIFEST_UNKNOWN for a manifest
				// of a missing repository; the fake says NAME_UNKNOWN)
				if p.name != "manifest" {
					e.expect(e.do("GET", strings.Replace(p.path, "alice/secret", "alice/missing", 1), who.authz, nil), http.StatusNotFound, p.absentCode)
				}
				if p.name != "tags" {
					e.expect(e.do("HEAD", p.path, who.authz, nil), http.StatusNotFound, "")
				}
			})
		}
		r := e.do("GET", "/v2/alice/secret/referrers/"+subject, who.authz, nil)
		if anonymous {
			e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
		} else {
			e.expect(r, http.StatusOK, "")
			if !bytes.Contains(r.body, []byte(`"manifests":[]`)) {
				t.Fatalf("referrers of an invisible repository: %s", r.body)
			}
		}
		// a bad reference answers as on a missing repository
		bad, missing := e.do("GET", "/v2/alice/secret/blobs/sha256:nope", who.authz, nil), e.do("GET", "/v2/alice/missing/blobs/sha256:nope", who.authz, nil)
		if bad.status != missing.status || bad.code() != missing.code() {
			t.Fatalf("bad digest: private repository %d %s, missing one %d %s", bad.status, bad.code(), missing.status, missing.code())
		}
	}
	// writes: bob is denied as on any repository of alice; anonymous is asked to log in
	e.expect(e.do("POST", "/v2/alice/secret/blobs/uploads/", bob, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("POST", "/v2/alice/missing/blobs/uploads/", bob, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("POST", "/v2/alice/secret/blobs/uploads/", "", nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("DELETE", "/v2/alice/secret/manifests/v1", bob, nil), http.StatusForbidden, "DENIED")
	// the owner and the admin see it
	e.expect(e.do("GET", "/v2/alice/secret/manifests/v1", alice, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v2/alice/secret/manifests/v1", basic("admin", testPassword), nil), http.StatusOK, "")
	// with a registry token, a refused write is 401 insufficient_scope (docker
	// gives up at once; it retries a 403)
	r := e.do("POST", "/v2/alice/secret/blobs/uploads/", bearer(e.token("bob", "repository:alice/secret:pull,push")), nil)
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	if h := r.hdr.Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, `scope="repository:alice/secret:pull,push"`) {
		t.Fatalf("refused push with a token: WWW-Authenticate %q", h)
	}
	// a token for it grants nothing to bob
	tok := e.token("bob", "repository:alice/secret:pull")
	if got := accessOf(e.claims(tok, testService, auth.KindAccess)); len(got) != 0 {
		t.Fatalf("bob was granted %v", got)
	}
	e.expect(e.do("GET", "/v2/alice/secret/manifests/v1", bearer(tok), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
}

func TestCatalogFiltering(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	e.addRepo("alice/secret", true)
	e.addRepo("bob/hidden", true)
	admin := basic("admin", testPassword)
	for _, repo := range []string{"alice/pub", "alice/secret", "bob/hidden", "bob/x", "zed"} {
		e.pushImage(repo, "v1", admin)
	}
	catalog := func(authz, query string) ([]string, string) {
		t.Helper()
		r := e.do("GET", "/v2/_catalog"+query, authz, nil)
		e.expect(r, http.StatusOK, "")
		return decode[struct {
			Repositories []string `json:"repositories"`
		}](t, r).Repositories, r.hdr.Get("Link")
	}
	cases := []struct {
		name, authz string
		want        []string
	}{
		{"anonymous", "", []string{"alice/pub", "bob/x", "zed"}},
		{"anonymous token", bearer(e.token("", "registry:catalog:*")), []string{"alice/pub", "bob/x", "zed"}},
		{"alice", basic("alice", testPassword), []string{"alice/pub", "alice/secret", "bob/x", "zed"}},
		{"bob token", bearer(e.token("bob", "registry:catalog:*")), []string{"alice/pub", "bob/hidden", "bob/x", "zed"}},
		{"admin", admin, []string{"alice/pub", "alice/secret", "bob/hidden", "bob/x", "zed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, _ := catalog(c.authz, ""); !slices.Equal(got, c.want) {
				t.Fatalf("catalog %v, want %v", got, c.want)
			}
		})
	}
	// paging counts visible repositories only
	got, link := catalog("", "?n=1")
	if !slices.Equal(got, []string{"alice/pub"}) || !strings.Contains(link, "last=alice%2Fpub") {
		t.Fatalf("page 1: %v %q", got, link)
	}
	got, _ = catalog("", "?n=1&last=alice%2Fpub")
	if !slices.Equal(got, []string{"bob/x"}) {
		t.Fatalf("page 2: %v", got)
	}
	got, link = catalog("", "?n=2&last=bob%2Fx")
	if !slices.Equal(got, []string{"zed"}) || link != "" {
		t.Fatalf("last page: %v %q", got, link)
	}
}

func TestMountFromInvisibleRepository(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	e.addRepo("alice/secret", true)
	alice, bob := basic("alice", testPassword), basic("bob", testPassword)
	layer := e.pushImage("alice/secret", "v1", alice)
	e.pushImage("alice/pub", "v1", alice)
	mount := func(authz, target, query string) result {
		t.Helper()
		return e.do("POST", "/v2/"+target+"/blobs/uploads/?mount="+layer.String()+query, authz, nil)
	}
	// bob cannot read alice/secret: as if the blob were not there, an
	// upload session starts
	r := mount(bob, "bob/app", "&from=alice/secret")
	e.expect(r, http.StatusAccepted, "")
	if !strings.Contains(r.hdr.Get("Location"), "/v2/bob/app/blobs/uploads/") {
		t.Fatalf("fallback Location %q", r.hdr.Get("Location"))
	}
	e.expect(e.do("HEAD", "/v2/bob/app/blobs/"+layer.String(), bob, nil), http.StatusNotFound, "")
	// a mount without from is a search everywhere: only for admins
	e.expect(mount(bob, "bob/app", ""), http.StatusAccepted, "")
	e.expect(mount(basic("admin", testPassword), "bob/adm", ""), http.StatusCreated, "")
	// with read on the source the mount happens
	e.expect(mount(alice, "alice/copy", "&from=alice/secret"), http.StatusCreated, "")
	// a token must grant pull on the source too
	tok := e.token("alice", "repository:alice/copy2:pull,push")
	e.expect(mount(bearer(tok), "alice/copy2", "&from=alice/secret"), http.StatusAccepted, "")
	tok = e.token("alice", "repository:alice/copy2:pull,push", "repository:alice/secret:pull")
	e.expect(mount(bearer(tok), "alice/copy2", "&from=alice/secret"), http.StatusCreated, "")
	// and the target needs push
	e.expect(mount(bob, "alice/pub", "&from=alice/pub"), http.StatusForbidden, "DENIED")
}

func TestBasicAndAccessTokensOnV2(t *testing.T) {
	e := newAuthEnv(t, func(c *AuthConfig) { c.Limiter = auth.NewLimiter(100, time.Minute) })
	e.addUser("alice", false)
	alice := basic("alice", testPassword)
	e.pushImage("alice/app", "v1", alice)
	e.expect(e.do("GET", "/v2/", alice, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v2/", basic("alice", "wrong"), nil), http.StatusUnauthorized, "UNAUTHORIZED")

	mkToken := func(scopes []string, expires time.Time) string {
		t.Helper()
		secret, id, hash, err := auth.NewAccessToken()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.acc.CreateToken(t.Context(), hubmesh.AccessToken{ID: id, User: "alice", Hash: hash, Scopes: scopes, Expires: expires}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	read, write, del := mkToken([]string{"read"}, time.Time{}), mkToken([]string{"write"}, time.Time{}), mkToken([]string{"delete"}, time.Time{})
	expired := mkToken([]string{"admin"}, time.Now().Add(-time.Second))
	d := digest.FromString("absent").String()
	cases := []struct {
		name, authz, method, path string
		status                    int
		code                      string
	}{
		{"read pulls", basic("alice", read), "GET", "/v2/alice/app/manifests/v1", 200, ""},
		{"read cannot push", basic("alice", read), "POST", "/v2/alice/app/blobs/uploads/", 403, "DENIED"},
		{"write pushes", basic("alice", write), "POST", "/v2/alice/app/blobs/uploads/", 202, ""},
		{"write cannot delete", basic("alice", write), "DELETE", "/v2/alice/app/blobs/" + d, 403, "DENIED"},
		{"delete deletes", basic("alice", del), "DELETE", "/v2/alice/app/blobs/" + d, 404, "BLOB_UNKNOWN"},
		{"token as bearer", bearer(read), "GET", "/v2/alice/app/tags/list", 200, ""},
		{"someone else's name", basic("bob", read), "GET", "/v2/", 401, "UNAUTHORIZED"},
		{"expired", basic("alice", expired), "GET", "/v2/", 401, "UNAUTHORIZED"},
		{"altered secret", basic("alice", altered(read)), "GET", "/v2/", 401, "UNAUTHORIZED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.expect(e.do(c.method, c.path, c.authz, nil), c.status, c.code)
		})
	}
	id, _, _ := auth.ParseAccessToken(read)
	if e.ev.lastUsed(id).IsZero() {
		t.Fatal("token use not reported")
	}
	// /token caps the grant by the token's scope
	r := e.do("GET", "/token?service=test-svc&offline_token=true&scope=repository:alice/app:pull,push", basic("alice", read), nil)
	e.expect(r, http.StatusOK, "")
	tr := decode[tokenResponse](t, r)
	if got := accessOf(e.claims(tr.Token, testService, auth.KindAccess)); !slices.Equal(got["repository:alice/app"], []string{"pull"}) {
		t.Fatalf("read token granted %v", got)
	}
	// and its refresh token keeps the cap and dies with the access token
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "scope": {"repository:alice/app:push,pull"}}
	r = e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	e.expect(r, http.StatusOK, "")
	if got := accessOf(e.claims(decode[tokenResponse](t, r).Token, testService, auth.KindAccess)); !slices.Equal(got["repository:alice/app"], []string{"pull"}) {
		t.Fatalf("refreshed read token granted %v", got)
	}
	if err := e.acc.DeleteToken(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	if r.status != http.StatusBadRequest {
		t.Fatalf("refresh with a revoked token: %d %s", r.status, r.body)
	}
	e.expect(e.do("GET", "/v2/", basic("alice", read), nil), http.StatusUnauthorized, "UNAUTHORIZED")

	// a disabled user's credentials all stop working
	e.acc.mu.Lock()
	u := e.acc.users["alice"]
	u.Disabled = true
	e.acc.users["alice"] = u
	e.acc.mu.Unlock()
	e.expect(e.do("GET", "/v2/", alice, nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("GET", "/v2/", basic("alice", write), nil), http.StatusUnauthorized, "UNAUTHORIZED")
}

func TestLoginLimiter(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newAuthEnv(t, func(c *AuthConfig) { c.Limiter = auth.NewLimiter(3, time.Minute); c.Now = clock })
	e.addUser("alice", false)
	e.addUser("bob", false)
	for range 3 {
		e.expect(e.do("GET", "/v2/", basic("alice", "wrong"), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	}
	for _, path := range []string{"/v2/", "/token", "/api/v1/user"} {
		r := e.do("GET", path, basic("alice", testPassword), nil)
		e.expect(r, http.StatusTooManyRequests, "TOOMANYREQUESTS")
		secs, err := strconv.Atoi(r.hdr.Get("Retry-After"))
		if err != nil || secs < 1 || secs > 60 {
			t.Fatalf("%s: Retry-After %q", path, r.hdr.Get("Retry-After"))
		}
	}
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {testPassword}}
	r := e.do("POST", "/token", "", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	if r.status != http.StatusTooManyRequests || r.hdr.Get("Retry-After") == "" {
		t.Fatalf("POST /token while limited: %d %v", r.status, r.hdr)
	}
	// the client address is limited too: bob is refused from here
	e.expect(e.do("GET", "/v2/", basic("bob", testPassword), nil), http.StatusTooManyRequests, "TOOMANYREQUESTS")
	// the window ends
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	e.expect(e.do("GET", "/v2/", basic("alice", testPassword), nil), http.StatusOK, "")
	if n := strings.Count(strings.Join(e.acc.actions(), " "), "login.failed"); n != 3 {
		t.Fatalf("%d login.failed events, want 3", n)
	}
}

// forge builds a compact JWT with the given header and claims, signed by
// sign (nil: no signature).
func forge(t *testing.T, hdr, claims map[string]any, sign func(string) []byte) string {
	t.Helper()
	h, _ := json.Marshal(hdr)
	c, _ := json.Marshal(claims)
	s := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	var sig []byte
	if sign != nil {
		sig = sign(s)
	}
	return s + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestBadTokensRefused(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.pushImage("alice/app", "v1", basic("alice", testPassword))
	now := time.Now()
	good := map[string]any{
		"iss": testIssuer, "sub": "alice", "aud": testService, "typ": "access", "jti": "x",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"access": []any{map[string]any{"type": "repository", "name": "alice/app", "actions": []string{"pull", "push"}}},
	}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range good {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	kid := e.acc.keys[0].ID
	priv, err := x509.ParsePKCS8PrivateKey(e.acc.keys[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.(*ecdsa.PrivateKey).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := auth.NewKeySet(e.acc.keys)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(c auth.Claims) string {
		t.Helper()
		tok, err := ks.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other, err := auth.NewSigningKey(now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	otherKS, err := auth.NewKeySet([]hubmesh.SigningKey{other})
	if err != nil {
		t.Fatal(err)
	}
	foreignKey, err := otherKS.Sign(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "alice", Audience: testService, Expires: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	hs256 := func(s string) []byte {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(good))
		tok.Header["kid"] = kid
		full, err := tok.SignedString(pubDER)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(full)
	}
	hsTok := string(hs256(""))
	ok := signed(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "alice", Audience: testService, Expires: now.Add(time.Minute),
		Access: []auth.Access{{Type: "repository", Name: "alice/app", Actions: []string{"pull"}}}})
	e.expect(e.do("GET", "/v2/alice/app/manifests/v1", bearer(ok), nil), http.StatusOK, "")
	cases := map[string]string{
		"alg none":                  forge(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, good, nil),
		"alg none no sig":           strings.TrimSuffix(forge(t, map[string]any{"alg": "none", "kid": kid}, good, nil), "."),
		"HS256 with the public key": hsTok,
		"expired": signed(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "alice", Audience: testService,
			IssuedAt: now.Add(-time.Hour), Expires: now.Add(-10 * time.Minute)}),
		"other cluster":  signed(auth.Claims{Kind: "access", Issuer: "hubmesh:c2", Subject: "alice", Audience: testService, Expires: now.Add(time.Minute)}),
		"other audience": signed(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "alice", Audience: "other", Expires: now.Add(time.Minute)}),
		"refresh token":  signed(auth.Claims{Kind: "refresh", Issuer: testIssuer, Subject: "alice", Audience: testService, Expires: now.Add(time.Minute)}),
		"session token":  signed(auth.Claims{Kind: "session", Issuer: testIssuer, Subject: "alice", Audience: SessionAudience, Expires: now.Add(time.Minute)}),
		"foreign key":    foreignKey,
		"unknown user":   signed(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "ghost", Audience: testService, Expires: now.Add(time.Minute)}),
		"tampered":       ok[:len(ok)-4] + "AAAA",
		"ES256 header, ECDSA over other claims": forge(t, map[string]any{"alg": "ES256", "kid": kid}, with("sub", "admin"),
			func(string) []byte {
				s := strings.Split(ok, ".")
				b, _ := base64.RawURLEncoding.DecodeString(s[2])
				return b
			}),
		"garbage": "not-a-jwt",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v2/", "/v2/alice/app/manifests/v1"} {
				r := e.do("GET", path, bearer(tok), nil)
				e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
				if !strings.Contains(r.hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
					t.Fatalf("%s: challenge %q", path, r.hdr.Get("WWW-Authenticate"))
				}
			}
			if name != "session token" { // the API takes those
				e.expect(e.do("GET", "/api/v1/user", bearer(tok), nil), http.StatusUnauthorized, "UNAUTHORIZED")
			}
		})
	}
}

// TestPermissionMatrix runs users x namespaces x visibility x actions
// over the fakes and compares every cell with a table written by hand.
func TestPermissionMatrix(t *testing.T) {
	e := newAuthEnv(t)
	for _, u := range []string{"alice", "bob", "owner", "reader", "writer", "orgadmin", "noteam"} {
		e.addUser(u, false)
	}
	e.addOrg("acme", "owner")
	e.addTeam("acme", "r", []string{"reader"}, map[string]hubmesh.Permission{"acme/pub": hubmesh.PermRead, "acme/priv": hubmesh.PermRead})
	e.addTeam("acme", "w", []string{"writer"}, map[string]hubmesh.Permission{"acme/pub": hubmesh.PermWrite, "acme/priv": hubmesh.PermWrite})
	e.addTeam("acme", "a", []string{"orgadmin"}, map[string]hubmesh.Permission{"acme/pub": hubmesh.PermAdmin, "acme/priv": hubmesh.PermAdmin})
	e.addTeam("acme", "none", []string{"noteam"}, nil)
	repos := []string{"alice/pub", "alice/priv", "acme/pub", "acme/priv"}
	for _, repo := range repos {
		e.addRepo(repo, strings.HasSuffix(repo, "priv"))
		e.pushImage(repo, "v1", basic("admin", testPassword))
	}
	// permission of each user on each repo: n(one), r, w, a
	perm := map[string]string{
		//          alice/pub alice/priv acme/pub acme/priv
		"":         "r n r n",
		"alice":    "a a r n",
		"bob":      "r n r n",
		"owner":    "r n a a",
		"reader":   "r n r r",
		"writer":   "r n w w",
		"orgadmin": "r n a a",
		"noteam":   "r n r n",
		"admin":    "a a a a",
	}
	absent := digest.FromString("absent").String()
	for user, row := range perm {
		levels := strings.Fields(row)
		authz := ""
		if user != "" {
			authz = basic(user, testPassword)
		}
		for i, repo := range repos {
			p := levels[i]
			for _, action := range []string{"pull", "push", "delete", "tags", "referrers"} {
				t.Run(user+"/"+repo+"/"+action, func(t *testing.T) {
					var r result
					want, code := 0, ""
					switch action {
					case "pull":
						r = e.do("GET", "/v2/"+repo+"/manifests/v1", authz, nil)
						want, code = 200, ""
						if p == "n" {
							want, code = 404, "MANIFEST_UNKNOWN"
						}
					case "tags":
						r = e.do("GET", "/v2/"+repo+"/tags/list", authz, nil)
						want, code = 200, ""
						if p == "n" {
							want, code = 404, "NAME_UNKNOWN"
						}
					case "referrers":
						r = e.do("GET", "/v2/"+repo+"/referrers/"+absent, authz, nil)
						want = 200
					}
					if p == "n" && user == "" && (action == "pull" || action == "tags" || action == "referrers") {
						want, code = 401, "UNAUTHORIZED" // anonymous: asked to log in
					}
					switch action {
					case "push":
						r = e.do("POST", "/v2/"+repo+"/blobs/uploads/", authz, nil)
						want = 202
						if p == "n" || p == "r" {
							want, code = 403, "DENIED"
							if user == "" {
								want, code = 401, "UNAUTHORIZED"
							}
						}
					case "delete":
						r = e.do("DELETE", "/v2/"+repo+"/blobs/"+absent, authz, nil)
						want, code = 404, "BLOB_UNKNOWN"
						if p != "a" {
							want, code = 403, "DENIED"
							if user == "" {
								want, code = 401, "UNAUTHORIZED"
							}
						}
					}
					e.expect(r, want, code)
				})
			}
		}
	}
}

func TestClusterAPIAdminOnly(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("bob", false)
	e.expect(e.do("GET", "/api/v1/cluster/status", "", nil), http.StatusOK, "")
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/v1/cluster/join-tokens"}, {"POST", "/api/v1/cluster/leave"}, {"DELETE", "/api/v1/cluster/members/n2"},
	} {
		r := e.do(c.method, c.path, "", nil)
		e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
		if r.hdr.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s %s: 401 without a challenge", c.method, c.path)
		}
		e.expect(e.do(c.method, c.path, basic("bob", testPassword), nil), http.StatusForbidden, "DENIED")
	}
	e.expect(e.do("POST", "/api/v1/cluster/join-tokens", basic("admin", testPassword), nil), http.StatusCreated, "")
	e.expect(e.do("DELETE", "/api/v1/cluster/members/n2", basic("admin", testPassword), nil), http.StatusNoContent, "")
	// join carries its own token
	e.expect(e.do("POST", "/api/v1/cluster/join", "", []byte(`{"token":"tok","member":{"id":"n3"}}`)), http.StatusOK, "")
}

func TestKeySetCache(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newAuthEnv(t, func(c *AuthConfig) { c.Now = clock })
	e.addUser("alice", false)
	reads := func() int { e.acc.mu.Lock(); defer e.acc.mu.Unlock(); return e.acc.keyReads }
	tok := e.token("alice", "repository:alice/app:pull")
	for range 5 {
		e.expect(e.do("GET", "/v2/", bearer(tok), nil), http.StatusOK, "")
	}
	if n := reads(); n != 1 {
		t.Fatalf("%d key reads for 6 requests in one instant, want 1", n)
	}
	// a rotation elsewhere: the new kid is unknown here until a reread
	k2, err := auth.NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.acc.AddSigningKey(t.Context(), k2, now); err != nil {
		t.Fatal(err)
	}
	ks, _ := auth.NewKeySet(e.acc.keys)
	newTok, err := ks.Sign(auth.Claims{Kind: "access", Issuer: testIssuer, Subject: "alice", Audience: testService, IssuedAt: now, Expires: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	// within keysMinRefresh of the last read an unknown kid does not reread
	e.expect(e.do("GET", "/v2/", bearer(newTok), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	e.expect(e.do("GET", "/v2/", bearer(newTok), nil), http.StatusOK, "")
	// the old key still verifies its tokens
	e.expect(e.do("GET", "/v2/", bearer(tok), nil), http.StatusOK, "")
	// and new tokens are signed with the new key
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	tok3 := e.token("alice")
	parts := strings.Split(tok3, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if !strings.Contains(string(hdr), k2.ID) {
		t.Fatalf("new token header %s, want kid %s", hdr, k2.ID)
	}
}

// FuzzAuthorization sends requests with arbitrary Authorization headers,
// paths and bodies through /v2, /token and /api/v1: never a panic, never
// a 5xx, and every 401 of /v2 carries a Bearer challenge.
func FuzzAuthorization(f *testing.F) {
	e := newAuthEnv(f)
	e.addUser("alice", false)
	e.addRepo("alice/secret", true)
	e.pushImage("alice/secret", "v1", basic("alice", testPassword))
	valid := e.token("alice", "repository:alice/secret:pull,push")
	secret, id, hash, err := auth.NewAccessToken()
	if err != nil {
		f.Fatal(err)
	}
	if err := e.acc.CreateToken(f.Context(), hubmesh.AccessToken{ID: id, User: "alice", Hash: hash, Scopes: []string{"read"}}); err != nil {
		f.Fatal(err)
	}
	headers := []string{
		"", basic("alice", testPassword), basic("alice", secret), bearer(valid), bearer(secret), "Basic !!!", "Basic ",
		"Bearer a.b.c", "Bearer " + valid[:len(valid)/2], "bearer " + valid, "Digest x", basic("alice", ""), "Basic YWxpY2U=",
		"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", "Basic " + strings.Repeat("A", 9000),
	}
	paths := []string{
		"/v2/", "/v2/alice/secret/manifests/v1", "/v2/alice/secret/blobs/uploads/?mount=sha256:" + strings.Repeat("a", 64) + "&from=alice/secret",
		"/v2/_catalog?n=1", "/token?service=test-svc&scope=repository:alice/secret:pull,push&offline_token=true",
		"/token?scope=repository:a:b:c:pull&scope=registry:catalog:*", "/api/v1/user", "/api/v1/users/login",
		"/api/v1/access-tokens", "/api/v1/repositories/alice/secret", "/api/v1/orgs/x/teams/y/permissions/x/z",
	}
	for i, h := range headers {
		f.Add(uint8(i), h, paths[i%len(paths)], []byte(`{"username":"alice","password":"x"}`))
	}
	f.Add(uint8(2), "", "/token", []byte("grant_type=refresh_token&refresh_token="+valid))
	f.Add(uint8(3), "", "/token", []byte("grant_type=password&username=alice&password=x&scope=repository:alice/secret:*"))
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
	f.Fuzz(func(t *testing.T, sel uint8, authz, path string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") || len(path) > 4096 {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return
		}
		method := methods[int(sel)%len(methods)]
		req := httptest.NewRequestWithContext(t.Context(), method, "http://node.test"+path, bytes.NewReader(body))
		if strings.ContainsAny(authz, "\r\n") {
			return
		}
		req.Header.Set("Authorization", authz)
		if path == "/token" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.RemoteAddr = "192.0.2." + strconv.Itoa(int(sel)) + ":1234"
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", method, path, authz, w.Code, w.Body)
		}
		if w.Code == http.StatusUnauthorized && strings.HasPrefix(path, "/v2") &&
			!strings.HasPrefix(w.Header().Get("WWW-Authenticate"), `Bearer realm="http://node.test/token",service="test-svc"`) {
			t.Fatalf("%s %s: 401 with challenge %q", method, path, w.Header().Get("WWW-Authenticate"))
		}
	})
}

// altered changes the last character of secret to another one.
func altered(secret string) string {
	last := byte('A')
	if secret[len(secret)-1] == last {
		last = 'B'
	}
	return secret[:len(secret)-1] + string(last)
}
