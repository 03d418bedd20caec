package registryapi

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

type apiPage[T any] struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}

// session logs in through the API and returns the bearer header.
func (e *authEnv) session(user, pw string) string {
	e.t.Helper()
	r := e.json("POST", "/api/v1/users/login", "", map[string]string{"username": user, "password": pw})
	e.expect(r, http.StatusOK, "")
	tok := decode[struct {
		Token string `json:"token"`
	}](e.t, r).Token
	if c := e.claims(tok, SessionAudience, auth.KindSession); c.Subject != user {
		e.t.Fatalf("session claims %+v", c)
	}
	return bearer(tok)
}

func TestHubUsers(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	admin := e.session("admin", testPassword)
	alice := e.session("alice", testPassword)

	r := e.do("GET", "/api/v1/user", alice, nil)
	e.expect(r, http.StatusOK, "")
	if u := decode[userView](t, r); u.Username != "alice" || u.IsAdmin || !u.IsActive || u.Type != "User" {
		t.Fatalf("whoami %s", r.body)
	}
	if strings.Contains(string(r.body), "password") {
		t.Fatalf("user view leaks the hash: %s", r.body)
	}
	r = e.do("GET", "/api/v1/user", "", nil)
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), `Bearer realm="http://`+e.host+`/token"`) {
		t.Fatalf("401 challenge %q", r.hdr.Get("WWW-Authenticate"))
	}
	e.expect(e.json("POST", "/api/v1/users/login", "", map[string]string{"username": "alice", "password": "nope"}), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("POST", "/api/v1/users/login", "", `{"username":"alice"`), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.json("POST", "/api/v1/users/login", "", `{"username":"alice","password":"x","otp":1}`), http.StatusBadRequest, "UNSUPPORTED")

	// signup: closed by default
	newUser := map[string]any{"username": "bob", "password": "bob-password", "email": "bob@example.com"}
	e.expect(e.json("POST", "/api/v1/users", "", newUser), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("POST", "/api/v1/users", alice, newUser), http.StatusForbidden, "DENIED")
	e.expect(e.json("PATCH", "/api/v1/settings", alice, map[string]bool{"open_signup": true}), http.StatusForbidden, "DENIED")
	r = e.json("PATCH", "/api/v1/settings", admin, map[string]bool{"open_signup": true})
	e.expect(r, http.StatusOK, "")
	if s := decode[hubmesh.Settings](t, r); !s.OpenSignup {
		t.Fatalf("settings %s", r.body)
	}
	e.expect(e.json("POST", "/api/v1/users", "", map[string]any{"username": "evil", "password": "x1234567", "is_admin": true}), http.StatusForbidden, "DENIED")
	r = e.json("POST", "/api/v1/users", "", newUser)
	e.expect(r, http.StatusCreated, "")
	e.expect(e.json("POST", "/api/v1/users", "", newUser), http.StatusConflict, "")
	for _, bad := range []map[string]any{
		{"username": "B", "password": "x"}, {"username": "-bob", "password": "x"}, {"username": "carol", "password": ""},
		{"username": "carol", "password": "x", "email": "nope"}, {"username": strings.Repeat("a", 31), "password": "x"},
	} {
		e.expect(e.json("POST", "/api/v1/users", "", bad), http.StatusBadRequest, "")
	}
	bob := e.session("bob", "bob-password")

	// listing (admins), paging
	e.expect(e.do("GET", "/api/v1/users", alice, nil), http.StatusForbidden, "DENIED")
	r = e.do("GET", "/api/v1/users?page_size=2", admin, nil)
	e.expect(r, http.StatusOK, "")
	p := decode[apiPage[userView]](t, r)
	if p.Count != 2 || p.Next == nil || p.Results[0].Username != "admin" || p.Results[1].Username != "alice" {
		t.Fatalf("users page 1: %s", r.body)
	}
	r = e.do("GET", strings.TrimPrefix(*p.Next, e.srv.URL), admin, nil)
	p = decode[apiPage[userView]](t, r)
	if p.Count != 1 || p.Next != nil || p.Results[0].Username != "bob" {
		t.Fatalf("users page 2: %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/users?page_size=0", admin, nil), http.StatusBadRequest, "PAGINATION_NUMBER_INVALID")

	// others see the public view
	r = e.do("GET", "/api/v1/users/bob", alice, nil)
	e.expect(r, http.StatusOK, "")
	if strings.Contains(string(r.body), "bob@example.com") {
		t.Fatalf("public view shows the email: %s", r.body)
	}
	r = e.do("GET", "/api/v1/users/bob/", bob, nil) // trailing slash as Hub writes it
	e.expect(r, http.StatusOK, "")
	if !strings.Contains(string(r.body), "bob@example.com") {
		t.Fatalf("own view lacks the email: %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/users/nobody", alice, nil), http.StatusNotFound, "NOT_FOUND")

	// password change
	e.expect(e.json("PATCH", "/api/v1/users/bob", alice, map[string]string{"email": "x@y.z"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("PATCH", "/api/v1/users/bob", bob, map[string]string{"password": "new-password"}), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.json("PATCH", "/api/v1/users/bob", bob, map[string]string{"password": "new-password", "current_password": "wrong"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("PATCH", "/api/v1/users/bob", bob, map[string]any{"is_admin": true}), http.StatusForbidden, "DENIED")
	e.expect(e.json("PATCH", "/api/v1/users/bob", bob, map[string]any{"emali": "typo"}), http.StatusBadRequest, "UNSUPPORTED")
	// sessions issued before a password change stop working (seconds
	// resolution: move the clock of the record)
	e.expect(e.json("PATCH", "/api/v1/users/bob", bob, map[string]string{"password": "new-password", "current_password": "bob-password"}), http.StatusOK, "")
	e.acc.mu.Lock()
	u := e.acc.users["bob"]
	u.PasswordChanged = u.PasswordChanged.Add(2 * time.Second)
	e.acc.users["bob"] = u
	e.acc.mu.Unlock()
	e.expect(e.do("GET", "/api/v1/user", bob, nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("GET", "/api/v1/user", basic("bob", "new-password"), nil), http.StatusOK, "")

	// admins disable and delete
	r = e.json("PATCH", "/api/v1/users/bob", admin, map[string]any{"disabled": true})
	e.expect(r, http.StatusOK, "")
	if decode[userView](t, r).IsActive {
		t.Fatalf("disabled user still active: %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/user", basic("bob", "new-password"), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("DELETE", "/api/v1/users/bob", alice, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("DELETE", "/api/v1/users/bob", admin, nil), http.StatusNoContent, "")
	e.expect(e.do("DELETE", "/api/v1/users/bob", admin, nil), http.StatusNotFound, "NOT_FOUND")

	// misc routing
	r = e.do("PUT", "/api/v1/users", admin, nil)
	e.expect(r, http.StatusMethodNotAllowed, "UNSUPPORTED")
	if r.hdr.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("Allow %q", r.hdr.Get("Allow"))
	}
	e.expect(e.do("GET", "/api/v1/nope", admin, nil), http.StatusNotFound, "NOT_FOUND")

	for _, want := range []string{"login", "settings.change", "user.create", "password.change", "user.disable", "user.delete", "login.failed"} {
		if !slices.Contains(e.acc.actions(), want) {
			t.Errorf("no %s audit event in %v", want, e.acc.actions())
		}
	}
	r = e.do("GET", "/api/v1/audit?page_size=3", admin, nil)
	e.expect(r, http.StatusOK, "")
	if ap := decode[apiPage[hubmesh.AuditEvent]](t, r); ap.Count != 3 || ap.Next == nil || ap.Results[0].Action == "" {
		t.Fatalf("audit page %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/audit", alice, nil), http.StatusForbidden, "DENIED")
}

func TestHubOrgsAndTeams(t *testing.T) {
	e := newAuthEnv(t)
	for _, u := range []string{"carol", "dave", "erin"} {
		e.addUser(u, false)
	}
	carol, dave, erin := basic("carol", testPassword), basic("dave", testPassword), basic("erin", testPassword)
	admin := basic("admin", testPassword)
	r := e.json("POST", "/api/v1/orgs", carol, map[string]string{"orgname": "acme"})
	e.expect(r, http.StatusCreated, "")
	e.expect(e.json("POST", "/api/v1/orgs", dave, map[string]string{"orgname": "acme"}), http.StatusConflict, "")
	e.expect(e.json("POST", "/api/v1/orgs", dave, map[string]string{"orgname": "carol"}), http.StatusConflict, "")
	e.expect(e.json("POST", "/api/v1/orgs", dave, map[string]string{"orgname": "x", "owner": "erin"}), http.StatusBadRequest, "")
	e.expect(e.json("POST", "/api/v1/orgs", dave, map[string]string{"orgname": "other", "owner": "erin"}), http.StatusForbidden, "DENIED")

	e.expect(e.json("POST", "/api/v1/orgs/acme/teams", dave, map[string]string{"name": "dev"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("POST", "/api/v1/orgs/acme/teams", carol, map[string]string{"name": "dev", "description": "developers"}), http.StatusCreated, "")
	e.expect(e.json("POST", "/api/v1/orgs/acme/teams", carol, map[string]string{"name": "bad name"}), http.StatusBadRequest, "")
	e.expect(e.json("POST", "/api/v1/orgs/nope/teams", carol, map[string]string{"name": "dev"}), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("PUT", "/api/v1/orgs/acme/teams/dev/members/dave", dave, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("PUT", "/api/v1/orgs/acme/teams/dev/members/dave", carol, nil), http.StatusNoContent, "")
	e.expect(e.do("PUT", "/api/v1/orgs/acme/teams/dev/members/ghost", carol, nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("PUT", "/api/v1/orgs/acme/teams/nope/members/dave", carol, nil), http.StatusNotFound, "NOT_FOUND")

	// members see teams; outsiders do not
	r = e.do("GET", "/api/v1/orgs/acme/teams", dave, nil)
	e.expect(r, http.StatusOK, "")
	teams := decode[apiPage[teamView]](t, r)
	if teams.Count != 2 || teams.Results[0].Name != "dev" || !slices.Equal(teams.Results[0].Members, []string{"dave"}) || teams.Results[1].Name != "owners" {
		t.Fatalf("teams %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/orgs/acme/teams", erin, nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("GET", "/api/v1/orgs/acme/teams/dev/members/dave", dave, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/api/v1/orgs/acme/teams/dev/members/erin", dave, nil), http.StatusNotFound, "NOT_FOUND")
	r = e.do("GET", "/api/v1/orgs/acme", erin, nil)
	e.expect(r, http.StatusOK, "")
	if strings.Contains(string(r.body), "carol") {
		t.Fatalf("an outsider sees the owner: %s", r.body)
	}
	r = e.do("GET", "/api/v1/orgs", dave, nil)
	if p := decode[apiPage[orgView]](t, r); p.Count != 1 || p.Results[0].Orgname != "acme" {
		t.Fatalf("dave's orgs %s", r.body)
	}
	if p := decode[apiPage[orgView]](t, e.do("GET", "/api/v1/orgs", erin, nil)); p.Count != 0 {
		t.Fatal("erin sees orgs")
	}

	// grants: dave may push acme/api once the team has write
	e.addRepo("acme/api", true)
	e.expect(e.do("POST", "/v2/acme/api/blobs/uploads/", dave, nil), http.StatusForbidden, "DENIED")
	e.expect(e.json("PUT", "/api/v1/orgs/acme/teams/dev/permissions/acme/api", dave, map[string]string{"permission": "write"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("PUT", "/api/v1/orgs/acme/teams/dev/permissions/acme/api", carol, map[string]string{"permission": "owner"}), http.StatusBadRequest, "")
	e.expect(e.json("PUT", "/api/v1/orgs/acme/teams/dev/permissions/other/api", carol, map[string]string{"permission": "read"}), http.StatusBadRequest, "NAME_INVALID")
	e.expect(e.json("PUT", "/api/v1/orgs/acme/teams/dev/permissions/acme/api", carol, `{}`), http.StatusBadRequest, "")
	e.expect(e.json("PUT", "/api/v1/orgs/acme/teams/dev/permissions/api", carol, map[string]string{"permission": "write"}), http.StatusOK, "")
	e.expect(e.do("POST", "/v2/acme/api/blobs/uploads/", dave, nil), http.StatusAccepted, "")
	r = e.do("GET", "/api/v1/orgs/acme/teams/dev/permissions", dave, nil)
	e.expect(r, http.StatusOK, "")
	if g := decode[apiPage[grantView]](t, r); g.Count != 1 || g.Results[0].Repository != "acme/api" || g.Results[0].Permission != hubmesh.PermWrite {
		t.Fatalf("grants %s", r.body)
	}
	e.expect(e.do("DELETE", "/api/v1/orgs/acme/teams/dev/permissions/acme/api", carol, nil), http.StatusNoContent, "")
	e.expect(e.do("POST", "/v2/acme/api/blobs/uploads/", dave, nil), http.StatusForbidden, "DENIED")

	// owners
	e.expect(e.do("DELETE", "/api/v1/orgs/acme/teams/owners/members/carol", carol, nil), http.StatusBadRequest, "")
	e.expect(e.do("DELETE", "/api/v1/orgs/acme/teams/owners", carol, nil), http.StatusBadRequest, "")
	e.expect(e.do("DELETE", "/api/v1/orgs/acme/teams/dev/members/dave", carol, nil), http.StatusNoContent, "")
	e.expect(e.do("DELETE", "/api/v1/orgs/acme/teams/dev", carol, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/api/v1/orgs/acme/teams/dev", carol, nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("DELETE", "/api/v1/orgs/acme", dave, nil), http.StatusForbidden, "DENIED")
	r = e.do("GET", "/api/v1/orgs", admin, nil)
	if p := decode[apiPage[orgView]](t, r); p.Count != 1 {
		t.Fatalf("admin's orgs %s", r.body)
	}
	e.expect(e.do("DELETE", "/api/v1/orgs/acme", carol, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/api/v1/orgs/acme", carol, nil), http.StatusNotFound, "NOT_FOUND")
	for _, want := range []string{"org.create", "team.create", "team.member.add", "team.grant", "team.member.remove", "team.delete", "org.delete"} {
		if !slices.Contains(e.acc.actions(), want) {
			t.Errorf("no %s audit event in %v", want, e.acc.actions())
		}
	}
}

func TestHubRepositories(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	alice, bob := basic("alice", testPassword), basic("bob", testPassword)
	e.expect(e.json("POST", "/api/v1/repositories", bob, map[string]any{"namespace": "alice", "name": "app"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("POST", "/api/v1/repositories", "", map[string]any{"namespace": "alice", "name": "app"}), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("POST", "/api/v1/repositories", alice, map[string]any{"namespace": "alice", "name": "App"}), http.StatusBadRequest, "NAME_INVALID")
	r := e.json("POST", "/api/v1/repositories", alice, map[string]any{"namespace": "alice", "name": "app", "description": "d"})
	e.expect(r, http.StatusCreated, "")
	if v := decode[repoView](t, r); v.Namespace != "alice" || v.Name != "app" || v.IsPrivate || v.Description != "d" {
		t.Fatalf("created %s", r.body)
	}
	e.expect(e.json("POST", "/api/v1/repositories", alice, map[string]any{"namespace": "alice", "name": "app"}), http.StatusConflict, "")

	// namespace default visibility
	e.expect(e.json("PATCH", "/api/v1/namespaces/alice", bob, map[string]bool{"default_private": true}), http.StatusForbidden, "DENIED")
	r = e.json("PATCH", "/api/v1/namespaces/alice", alice, map[string]bool{"default_private": true})
	e.expect(r, http.StatusOK, "")
	if ns := decode[hubmesh.Namespace](t, r); !ns.DefaultPrivate || ns.Kind != "user" {
		t.Fatalf("namespace %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/namespaces/nobody", alice, nil), http.StatusNotFound, "NOT_FOUND")
	r = e.json("POST", "/api/v1/repositories", alice, map[string]any{"name": "alice/secret"})
	e.expect(r, http.StatusCreated, "")
	if !decode[repoView](t, r).IsPrivate {
		t.Fatalf("default_private not applied: %s", r.body)
	}

	// visibility
	e.expect(e.do("GET", "/api/v1/repositories/alice/secret", bob, nil), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.do("GET", "/api/v1/repositories/alice/secret", "", nil), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.do("GET", "/api/v1/repositories/alice/secret/", alice, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/api/v1/repositories/alice/app", "", nil), http.StatusOK, "")
	e.pushImage("alice/app", "v1", alice)
	e.pushImage("alice/secret", "v1", alice)
	list := func(path, authz string) []string {
		t.Helper()
		r := e.do("GET", path, authz, nil)
		e.expect(r, http.StatusOK, "")
		var names []string
		for _, v := range decode[apiPage[repoView]](t, r).Results {
			names = append(names, v.Namespace+"/"+v.Name)
		}
		return names
	}
	if got := list("/api/v1/repositories/alice", bob); !slices.Equal(got, []string{"alice/app"}) {
		t.Fatalf("bob lists %v", got)
	}
	if got := list("/api/v1/repositories?namespace=alice", alice); !slices.Equal(got, []string{"alice/app", "alice/secret"}) {
		t.Fatalf("alice lists %v", got)
	}

	// settings: admin permission on the repository
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", bob, map[string]bool{"is_private": true}), http.StatusForbidden, "DENIED")
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/secret", bob, map[string]bool{"is_private": false}), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]any{"is_private": "yes"}), http.StatusBadRequest, "")
	r = e.json("PATCH", "/api/v1/repositories/alice/app", alice, map[string]any{"is_private": true, "full_description": "# App"})
	e.expect(r, http.StatusOK, "")
	if v := decode[repoView](t, r); !v.IsPrivate || v.FullDescription != "# App" {
		t.Fatalf("patched %s", r.body)
	}
	e.expect(e.do("GET", "/v2/alice/app/manifests/v1", bob, nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	e.expect(e.do("DELETE", "/api/v1/repositories/alice/app", bob, nil), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.do("DELETE", "/api/v1/repositories/alice/app", alice, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/api/v1/repositories/alice/app", alice, nil), http.StatusNotFound, "NAME_UNKNOWN")
	for _, want := range []string{"repo.create", "repo.visibility", "repo.delete", "namespace.update"} {
		if !slices.Contains(e.acc.actions(), want) {
			t.Errorf("no %s audit event in %v", want, e.acc.actions())
		}
	}
}

func TestHubAccessTokens(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addUser("bob", false)
	alice := basic("alice", testPassword)
	r := e.json("POST", "/api/v1/access-tokens", alice, map[string]any{"token_label": "ci", "scopes": []string{"repo:read"}, "expires_in": 3600})
	e.expect(r, http.StatusCreated, "")
	created := decode[tokenView](t, r)
	if created.Token == "" || created.UUID == "" || !slices.Equal(created.Scopes, []string{"read"}) || created.ExpiresAt == nil || !created.IsActive {
		t.Fatalf("created %s", r.body)
	}
	for _, bad := range []map[string]any{
		{"scopes": []string{"root"}}, {"scopes": []string{}}, {"scopes": []string{"read"}, "expires_in": -1},
		{"scopes": []string{"read"}, "expires_at": "2001-01-01T00:00:00Z"},
		{"scopes": []string{"read"}, "expires_in": 5, "expires_at": "2101-01-01T00:00:00Z"},
	} {
		e.expect(e.json("POST", "/api/v1/access-tokens", alice, bad), http.StatusBadRequest, "")
	}
	// the token works as a password, read-only on the API
	pat := basic("alice", created.Token)
	e.expect(e.do("GET", "/api/v1/user", pat, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/api/v1/user", bearer(created.Token), nil), http.StatusOK, "")
	e.expect(e.json("POST", "/api/v1/orgs", pat, map[string]string{"orgname": "acme"}), http.StatusForbidden, "DENIED")
	e.expect(e.json("POST", "/api/v1/access-tokens", pat, map[string]any{"scopes": []string{"admin"}}), http.StatusForbidden, "DENIED")
	// a session obtained with it keeps the cap
	sess := e.session("alice", created.Token)
	e.expect(e.do("GET", "/api/v1/user", sess, nil), http.StatusOK, "")
	e.expect(e.json("POST", "/api/v1/orgs", sess, map[string]string{"orgname": "acme"}), http.StatusForbidden, "DENIED")
	// a registry token reads only
	rt := bearer(e.token("alice"))
	e.expect(e.do("GET", "/api/v1/user", rt, nil), http.StatusOK, "")
	e.expect(e.json("POST", "/api/v1/orgs", rt, map[string]string{"orgname": "acme"}), http.StatusForbidden, "DENIED")
	// an admin-scoped token may manage
	r = e.json("POST", "/api/v1/access-tokens", alice, map[string]any{"scopes": []string{"admin"}})
	e.expect(r, http.StatusCreated, "")
	adminPAT := basic("alice", decode[tokenView](t, r).Token)
	e.expect(e.json("POST", "/api/v1/orgs", adminPAT, map[string]string{"orgname": "acme"}), http.StatusCreated, "")

	r = e.do("GET", "/api/v1/access-tokens", alice, nil)
	e.expect(r, http.StatusOK, "")
	list := decode[apiPage[tokenView]](t, r)
	if list.Count != 2 || list.Results[0].Token != "" || strings.Contains(string(r.body), "hash") {
		t.Fatalf("token list %s", r.body)
	}
	e.expect(e.do("GET", "/api/v1/access-tokens/"+created.UUID, alice, nil), http.StatusOK, "")
	e.expect(e.do("GET", "/api/v1/access-tokens/"+created.UUID, basic("bob", testPassword), nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("DELETE", "/api/v1/access-tokens/"+created.UUID, basic("bob", testPassword), nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.do("GET", "/api/v1/access-tokens?username=alice", basic("bob", testPassword), nil), http.StatusForbidden, "DENIED")
	e.expect(e.do("GET", "/api/v1/access-tokens?username=alice", basic("admin", testPassword), nil), http.StatusOK, "")
	e.expect(e.do("DELETE", "/api/v1/access-tokens/"+created.UUID, alice, nil), http.StatusNoContent, "")
	e.expect(e.do("GET", "/api/v1/user", pat, nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("GET", "/api/v1/user", sess, nil), http.StatusUnauthorized, "UNAUTHORIZED")
	for _, want := range []string{"token.create", "token.revoke"} {
		if !slices.Contains(e.acc.actions(), want) {
			t.Errorf("no %s audit event in %v", want, e.acc.actions())
		}
	}
}

func TestHubKeyRotation(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	old := e.token("alice")
	e.expect(e.do("POST", "/api/v1/keys/rotate", basic("alice", testPassword), nil), http.StatusForbidden, "DENIED")
	r := e.do("POST", "/api/v1/keys/rotate", basic("admin", testPassword), nil)
	e.expect(r, http.StatusOK, "")
	kid := decode[struct {
		Kid string `json:"kid"`
	}](t, r).Kid
	if len(e.acc.keys) != 2 || e.acc.keys[1].ID != kid || e.acc.keys[0].Retired.IsZero() {
		t.Fatalf("keys after rotation: %+v", e.acc.keys)
	}
	// new tokens use the new key at once on this node; old ones still verify
	fresh := e.token("alice")
	e.claims(fresh, testService, auth.KindAccess)
	if h := strings.Split(fresh, ".")[0]; h == strings.Split(old, ".")[0] {
		t.Fatal("the new token has the old header (kid)")
	}
	e.expect(e.do("GET", "/v2/", bearer(old), nil), http.StatusOK, "")
	e.expect(e.do("GET", "/v2/", bearer(fresh), nil), http.StatusOK, "")
	if !slices.Contains(e.acc.actions(), "key.rotate") {
		t.Fatal("rotation not audited")
	}
}
