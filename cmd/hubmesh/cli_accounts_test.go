package main_test

// The account commands of the real CLI against a real node: users, an
// organization with a team and a private repository, grants, access
// tokens, login, passwords, disable, settings, key rotation and the audit
// log, each checked by what a user would see (exit codes, output, and what
// the registry then allows).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// cliAuditTimeout bounds the wait for audit events, which nodes append in
// batches about once a second.
const cliAuditTimeout = 30 * time.Second

// cliSession runs hubmesh commands against one node as one identity.
type cliSession struct {
	t   *testing.T
	env []string
}

// cliAs is a session with HUBMESH_USERNAME and HUBMESH_PASSWORD (or
// HUBMESH_TOKEN when password starts with "token:"); user "" is
// anonymous.
func cliAs(t *testing.T, p *nodetest.Process, user, password string) *cliSession {
	env := []string{"HUBMESH_SERVER=" + p.URL(), "HUBMESH_USERNAME=" + user}
	if tok, ok := strings.CutPrefix(password, "token:"); ok {
		env = append(env, "HUBMESH_TOKEN="+tok)
	} else {
		env = append(env, "HUBMESH_PASSWORD="+password)
	}
	return &cliSession{t: t, env: env}
}

// ok runs a command that must succeed and returns its trimmed stdout.
func (s *cliSession) ok(stdin string, args ...string) string {
	s.t.Helper()
	res := nodetest.CLIStdin(s.t, 0, s.env, stdin, args...)
	if res.Code != 0 {
		s.t.Fatalf("hubmesh %s: %s", strings.Join(args, " "), res)
	}
	return strings.TrimSpace(res.Stdout)
}

// fails runs a command that must fail with one line on stderr holding
// each of want.
func (s *cliSession) fails(stdin string, args []string, want ...string) {
	s.t.Helper()
	res := nodetest.CLIStdin(s.t, 0, s.env, stdin, args...)
	if res.Code == 0 {
		s.t.Fatalf("hubmesh %s succeeded (%s); want it to fail with %q", strings.Join(args, " "), res, want)
	}
	ls := lines([]byte(res.Stderr))
	if len(ls) != 1 {
		s.t.Fatalf("hubmesh %s: stderr is %d lines, want one: %s", strings.Join(args, " "), len(ls), res.Stderr)
	}
	for _, w := range want {
		if !strings.Contains(ls[0], w) {
			s.t.Errorf("hubmesh %s: stderr %q lacks %q", strings.Join(args, " "), ls[0], w)
		}
	}
}

// json runs a command with --json and decodes what it printed into out.
func (s *cliSession) json(out any, args ...string) {
	s.t.Helper()
	b := s.ok("", append(args, "--json")...)
	if err := json.Unmarshal([]byte(b), out); err != nil {
		s.t.Fatalf("hubmesh %s --json printed %q: %v", strings.Join(args, " "), b, err)
	}
}

// cliRepo is a repository as `repo show --json` prints it.
type cliRepo struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	IsPrivate   bool   `json:"is_private"`
	Description string `json:"description"`
}

// registryAs is a registry client of p with Basic credentials.
func registryAs(p *nodetest.Process, user, password string) *registry {
	r := newRegistry(p.URL())
	r.user, r.password = user, password
	return r
}

// pullStatus is the status of GET repo:tag's manifest.
func pullStatus(t *testing.T, reg *registry, repo, tag string) int {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Status
}

func TestCLIAccounts(t *testing.T) {
	p := nodetest.Start(t, nodetest.Options{})
	adminUser, adminPassword := p.Admin()
	admin := cliAs(t, p, adminUser, adminPassword)
	anon := cliAs(t, p, "", "")

	// Users, created by the administrator.
	if out := admin.ok("alice-pw-1\n", "user", "create", "alice", "--password-stdin", "--email", "alice@example.test"); out != "alice" {
		t.Fatalf("user create printed %q, want alice", out)
	}
	admin.ok("bob-pw-1", "user", "create", "bob", "--password-stdin")
	admin.ok("carol-pw-1", "user", "create", "carol", "--password-stdin")
	admin.fails("x", []string{"user", "create", "alice", "--password-stdin"}, "alice")
	var users []struct {
		Username string `json:"username"`
		Email    string `json:"email"`
		IsAdmin  bool   `json:"is_admin"`
	}
	admin.json(&users, "user", "ls")
	names := []string{}
	for _, u := range users {
		names = append(names, u.Username)
	}
	for _, want := range []string{"admin", "alice", "bob", "carol"} {
		if !slices.Contains(names, want) {
			t.Errorf("user ls --json lists %q, want %s in it", names, want)
		}
	}
	if table := admin.ok("", "user", "ls"); !strings.Contains(table, "USERNAME") || !strings.Contains(table, "alice@example.test") {
		t.Errorf("user ls table:\n%s", table)
	}
	alice := cliAs(t, p, "alice", "alice-pw-1")
	bob := cliAs(t, p, "bob", "bob-pw-1")
	carol := cliAs(t, p, "carol", "carol-pw-1")
	carol.fails("", []string{"user", "ls"}, "DENIED")
	anon.fails("", []string{"user", "ls"}, "UNAUTHORIZED", "HUBMESH_USERNAME")

	// An organization, a team, a private repository and a grant.
	alice.ok("", "org", "create", "acme")
	alice.ok("", "team", "create", "acme/dev", "--description", "developers")
	alice.ok("", "team", "add", "acme/dev", "bob")
	alice.ok("", "repo", "create", "acme/api", "--private")
	alice.ok("", "team", "grant", "acme/dev", "acme/api", "write")
	carol.fails("", []string{"team", "add", "acme/dev", "carol"}, "DENIED")
	var team struct {
		Members     []string `json:"members"`
		Permissions []struct {
			Repository string `json:"repository"`
			Permission string `json:"permission"`
		} `json:"permissions"`
	}
	alice.json(&team, "team", "show", "acme/dev")
	if !slices.Equal(team.Members, []string{"bob"}) || len(team.Permissions) != 1 ||
		team.Permissions[0].Repository != "acme/api" || team.Permissions[0].Permission != "write" {
		t.Errorf("team show acme/dev: %+v, want member bob and write on acme/api", team)
	}
	if out := alice.ok("", "team", "ls", "acme"); !strings.Contains(out, "acme/owners") || !strings.Contains(out, "acme/dev") {
		t.Errorf("team ls acme:\n%s", out)
	}

	// What the grant allows through the registry: bob pushes, carol and
	// anonymous users do not even see the private repository.
	im := randomImage(t, 8<<10)
	if err := registryAs(p, "bob", "bob-pw-1").push(t.Context(), "acme/api", "1", im); err != nil {
		t.Fatalf("bob pushes to acme/api with a write grant: %v", err)
	}
	if err := registryAs(p, "carol", "carol-pw-1").push(t.Context(), "acme/api", "2", im); err == nil {
		t.Error("carol, in no team, pushed to acme/api")
	}
	if s := pullStatus(t, registryAs(p, "carol", "carol-pw-1"), "acme/api", "1"); s != http.StatusNotFound {
		t.Errorf("carol pulls private acme/api: %d, want 404", s)
	}
	if s := pullStatus(t, newRegistry(p.URL()), "acme/api", "1"); s == http.StatusOK {
		t.Errorf("anonymous pull of private acme/api: %d", s)
	}
	var repos []cliRepo
	carol.json(&repos, "repo", "ls")
	if slices.ContainsFunc(repos, func(r cliRepo) bool { return r.Namespace == "acme" }) {
		t.Errorf("carol's repo ls shows the private acme/api: %+v", repos)
	}

	// Visibility and description.
	alice.ok("", "repo", "set", "acme/api", "--public")
	if s := pullStatus(t, newRegistry(p.URL()), "acme/api", "1"); s != http.StatusOK {
		t.Errorf("anonymous pull of acme/api made public: %d, want 200", s)
	}
	alice.ok("", "repo", "set", "acme/api", "--private", "--description", "the API server")
	var repo cliRepo
	bob.json(&repo, "repo", "show", "acme/api")
	if repo.Namespace != "acme" || repo.Name != "api" || !repo.IsPrivate || repo.Description != "the API server" {
		t.Errorf("repo show acme/api: %+v", repo)
	}
	carol.fails("", []string{"repo", "show", "acme/api"}, "not found")
	bob.fails("", []string{"repo", "set", "acme/api", "--public"}, "DENIED")

	// Revoke, then grant read only.
	alice.ok("", "team", "revoke", "acme/dev", "acme/api")
	if err := registryAs(p, "bob", "bob-pw-1").push(t.Context(), "acme/api", "3", randomImage(t, 4<<10)); err == nil {
		t.Error("bob pushed after the grant was revoked")
	}
	alice.ok("", "team", "grant", "acme/dev", "api", "read")
	if s := pullStatus(t, registryAs(p, "bob", "bob-pw-1"), "acme/api", "1"); s != http.StatusOK {
		t.Errorf("bob pulls acme/api with a read grant: %d", s)
	}

	// Access tokens: created, used as a password and as a bearer token,
	// capped by their scope, listed and revoked.
	tok := bob.ok("", "token", "create", "--scope", "read", "--expires", "30d", "--label", "ci")
	if !strings.HasPrefix(tok, "hmp_") || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token create printed %q, want one hmp_ token", tok)
	}
	bobTok := cliAs(t, p, "bob", "token:"+tok)
	bobTok.json(&repo, "repo", "show", "acme/api")
	var me struct {
		Username string `json:"username"`
	}
	cliAs(t, p, "", "token:"+tok).json(&me, "user", "show")
	if me.Username != "bob" {
		t.Errorf("user show with bob's token as a bearer token: %q", me.Username)
	}
	bobTok.fails("", []string{"token", "create"}, "DENIED")
	if s := pullStatus(t, registryAs(p, "bob", tok), "acme/api", "1"); s != http.StatusOK {
		t.Errorf("pull with bob's read token: %d", s)
	}
	var toks []struct {
		UUID      string     `json:"uuid"`
		Label     string     `json:"token_label"`
		Scopes    []string   `json:"scopes"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	bob.json(&toks, "token", "ls")
	if len(toks) != 1 || toks[0].Label != "ci" || !slices.Equal(toks[0].Scopes, []string{"read"}) ||
		toks[0].ExpiresAt == nil || time.Until(*toks[0].ExpiresAt) < 29*24*time.Hour {
		t.Fatalf("token ls: %+v, want the ci token, read, expiring in 30 days", toks)
	}
	if strings.Contains(bob.ok("", "token", "ls"), tok) {
		t.Error("token ls prints the secret")
	}
	bob.ok("", "token", "rm", toks[0].UUID)
	bobTok.fails("", []string{"user", "show"}, "UNAUTHORIZED")

	// Login prints a session token for scripts.
	sess := cliAs(t, p, "", "").ok("alice-pw-1\n", "login", "-u", "alice", "--password-stdin")
	if strings.Count(sess, ".") != 2 {
		t.Fatalf("login printed %q, want a JWT", sess)
	}
	aliceSess := cliAs(t, p, "", "token:"+sess)
	aliceSess.json(&me, "user", "show")
	if me.Username != "alice" {
		t.Errorf("user show with alice's session token: %q", me.Username)
	}
	anon.fails("wrong\n", []string{"login", "-u", "alice", "--password-stdin"}, "UNAUTHORIZED")

	// Passwords: one's own with the current one, anyone's as an admin.
	alice.ok("alice-pw-2\n", "user", "passwd", "--password-stdin")
	alice.fails("", []string{"user", "show"}, "UNAUTHORIZED")
	alice = cliAs(t, p, "alice", "alice-pw-2")
	alice.ok("", "user", "show")
	admin.ok("bob-pw-2", "user", "passwd", "bob", "--password-stdin")
	bob.fails("", []string{"user", "show"}, "UNAUTHORIZED")
	bob = cliAs(t, p, "bob", "bob-pw-2")
	bob.ok("", "user", "show")
	carol.fails("x", []string{"user", "passwd", "bob", "--password-stdin"}, "DENIED")

	// Disable and enable.
	admin.ok("", "user", "disable", "carol")
	carol.fails("", []string{"user", "show"}, "UNAUTHORIZED")
	admin.ok("", "user", "enable", "carol")
	carol.ok("", "user", "show")

	// Settings: open sign-up lets anyone create an account.
	carol.fails("", []string{"settings", "set", "--open-signup=true"}, "DENIED")
	anon.fails("dave-pw", []string{"user", "create", "dave", "--password-stdin"}, "UNAUTHORIZED")
	admin.ok("", "settings", "set", "--open-signup=true")
	var settings struct {
		OpenSignup bool `json:"open_signup"`
	}
	admin.json(&settings, "settings", "show")
	if !settings.OpenSignup {
		t.Error("settings show: open_signup false after settings set --open-signup=true")
	}
	anon.ok("dave-pw", "user", "create", "dave", "--password-stdin")
	cliAs(t, p, "dave", "dave-pw").ok("", "user", "show")
	admin.ok("", "settings", "set", "--open-signup=false")

	// Key rotation: new tokens are signed with the new key, and a session
	// signed with the old one still works. (The session must postdate
	// alice's password change: sessions issued before it are refused.)
	sess = cliAs(t, p, "", "").ok("alice-pw-2\n", "login", "-u", "alice", "--password-stdin")
	aliceSess = cliAs(t, p, "", "token:"+sess)
	if kid := admin.ok("", "keys", "rotate"); kid == "" || strings.Contains(kid, " ") {
		t.Errorf("keys rotate printed %q, want the new key's ID", kid)
	}
	aliceSess.json(&me, "user", "show")

	// Deletes.
	admin.ok("", "user", "rm", "dave")
	cliAs(t, p, "dave", "dave-pw").fails("", []string{"user", "show"}, "UNAUTHORIZED")
	alice.ok("", "org", "rm", "acme")
	bob.fails("", []string{"repo", "show", "acme/api"}, "not found")

	// The audit log holds what happened, for administrators only.
	carol.fails("", []string{"audit"}, "DENIED")
	want := []string{"user.create", "org.create", "team.create", "team.member.add", "team.grant", "repo.create",
		"repo.visibility", "token.create", "token.revoke", "login", "password.change", "user.disable",
		"settings.change", "key.rotate", "user.delete", "org.delete"}
	ctx, cancel := context.WithTimeout(t.Context(), cliAuditTimeout)
	defer cancel()
	for {
		var events []struct {
			Action string `json:"action"`
		}
		admin.json(&events, "audit")
		var missing []string
		for _, w := range want {
			found := false
			for _, e := range events {
				found = found || e.Action == w
			}
			if !found {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("audit lacks %q after %s (%d events)", missing, cliAuditTimeout, len(events))
		case <-time.After(250 * time.Millisecond):
		}
	}
	if out := admin.ok("", "audit", "--limit", "3"); len(lines([]byte(out))) != 4 {
		t.Errorf("audit --limit 3 printed:\n%s\nwant a header and 3 events", out)
	}
}

// cliHubTimeout bounds the waits of TestCLIHub: for a change to reach the
// node's search index (seconds), and for the node to flush its pull
// statistics (about every 10 s).
const cliHubTimeout = 45 * time.Second

// cliHubRepo is a repository as `repo show --json` prints it, with the
// Hub's fields.
type cliHubRepo struct {
	Namespace       string `json:"namespace"`
	Name            string `json:"name"`
	IsPrivate       bool   `json:"is_private"`
	IsOfficial      bool   `json:"is_official"`
	Description     string `json:"description"`
	FullDescription string `json:"full_description"`
	StarCount       int64  `json:"star_count"`
}

// cliHubHit is a result as `search --json` prints it.
type cliHubHit struct {
	RepoName         string `json:"repo_name"`
	ShortDescription string `json:"short_description"`
	StarCount        int64  `json:"star_count"`
	IsOfficial       bool   `json:"is_official"`
	IsPrivate        bool   `json:"is_private"`
}

// cliHubTag is a tag as `repo tags --json` prints it.
type cliHubTag struct {
	Name     string `json:"name"`
	Digest   string `json:"digest"`
	FullSize int64  `json:"full_size"`
	Images   []struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"images"`
	LastPushed time.Time  `json:"last_pushed"`
	LastPulled *time.Time `json:"last_pulled"`
}

// search runs `hubmesh search --json` with args.
func (s *cliSession) search(args ...string) []cliHubHit {
	s.t.Helper()
	var hits []cliHubHit
	s.json(&hits, append([]string{"search"}, args...)...)
	return hits
}

// cliHubFind is the hit of repo, if any.
func cliHubFind(hits []cliHubHit, repo string) (cliHubHit, bool) {
	i := slices.IndexFunc(hits, func(h cliHubHit) bool { return h.RepoName == repo })
	if i < 0 {
		return cliHubHit{}, false
	}
	return hits[i], true
}

// cliHubEventually calls check until it reports nothing wrong (""), and
// fails the test with the last complaint after cliHubTimeout.
func cliHubEventually(t *testing.T, what string, check func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cliHubTimeout)
	defer cancel()
	for {
		wrong := check()
		if wrong == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still %s after %s", what, wrong, cliHubTimeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// TestCLIHub drives the Hub commands of the real CLI against a real node:
// tags after a push, descriptions and a README, stars, the official flag,
// and search with its filters and private repositories hidden.
func TestCLIHub(t *testing.T) {
	p := nodetest.Start(t, nodetest.Options{})
	adminUser, adminPassword := p.Admin()
	admin := cliAs(t, p, adminUser, adminPassword)
	anon := cliAs(t, p, "", "")
	admin.ok("alice-pw-1", "user", "create", "alice", "--password-stdin")
	admin.ok("bob-pw-1", "user", "create", "bob", "--password-stdin")
	alice := cliAs(t, p, "alice", "alice-pw-1")
	bob := cliAs(t, p, "bob", "bob-pw-1")

	// Two tags pushed, one pulled: its pull time shows once the node has
	// flushed its pull statistics (checked at the end).
	im1, im2 := randomImage(t, 8<<10), randomImage(t, 4<<10)
	reg := registryAs(p, "alice", "alice-pw-1")
	for tag, im := range map[string]image{"1.0": im1, "2.0": im2} {
		if err := reg.push(t.Context(), "alice/widget", tag, im); err != nil {
			t.Fatalf("push alice/widget:%s: %v", tag, err)
		}
	}
	if s := pullStatus(t, newRegistry(p.URL()), "alice/widget", "1.0"); s != http.StatusOK {
		t.Fatalf("anonymous pull of alice/widget:1.0: %d", s)
	}
	var tags []cliHubTag
	anon.json(&tags, "repo", "tags", "alice/widget")
	if len(tags) != 2 || tags[0].Name != "1.0" || tags[1].Name != "2.0" {
		t.Fatalf("repo tags alice/widget: %+v, want 1.0 and 2.0", tags)
	}
	for i, im := range []image{im1, im2} {
		tg := tags[i]
		if tg.Digest != im.Digest().String() || tg.FullSize != int64(len(im.Layer)+len(im.Config)) ||
			len(tg.Images) != 1 || tg.Images[0].OS != "linux" || tg.Images[0].Architecture != "amd64" ||
			time.Since(tg.LastPushed) > time.Hour || time.Until(tg.LastPushed) > time.Minute {
			t.Errorf("repo tags: %s is %+v; want digest %s, size %d, linux/amd64, pushed just now",
				tg.Name, tg, im.Digest(), len(im.Layer)+len(im.Config))
		}
	}
	if tags[1].LastPulled != nil {
		t.Errorf("repo tags: 2.0, never pulled, has last_pulled %v", tags[1].LastPulled)
	}
	if out := anon.ok("", "repo", "tags", "alice/widget"); !strings.Contains(out, "LAST PULLED") ||
		!strings.Contains(out, im2.Digest().String()) || !strings.Contains(out, "linux/amd64") || !strings.Contains(out, "never") {
		t.Errorf("repo tags table:\n%s", out)
	}

	// Descriptions: a short one, and a README from a file.
	readme := "# Widget\n\nFrobnicates *widgets*, every one of them.\n"
	file := t.TempDir() + "/README.md"
	if err := os.WriteFile(file, []byte(readme), 0o600); err != nil {
		t.Fatal(err)
	}
	alice.ok("", "repo", "set", "alice/widget", "--description", "frobnicates widgets", "--readme", file)
	bob.fails("", []string{"repo", "set", "alice/widget", "--description", "mine now"}, "DENIED")
	var repo cliHubRepo
	anon.json(&repo, "repo", "show", "alice/widget")
	if repo.Description != "frobnicates widgets" || repo.FullDescription != readme {
		t.Errorf("repo show alice/widget: description %q, full description %q; want what repo set gave", repo.Description, repo.FullDescription)
	}
	if out := anon.ok("", "repo", "show", "alice/widget"); !strings.Contains(out, "# Widget (") {
		t.Errorf("repo show table lacks the README's first line:\n%s", out)
	}
	alice.fails("", []string{"repo", "set", "alice/widget", "--description", strings.Repeat("x", 101)}, "longer than 100")

	// Stars: bob and alice star it, bob takes his back.
	bob.ok("", "repo", "star", "alice/widget")
	alice.ok("", "repo", "star", "alice/widget")
	bob.ok("", "repo", "star", "alice/widget") // idempotent
	anon.fails("", []string{"repo", "star", "alice/widget"}, "UNAUTHORIZED")
	bob.fails("", []string{"repo", "star", "alice/nothing"}, "not found")
	anon.json(&repo, "repo", "show", "alice/widget")
	if repo.StarCount != 2 {
		t.Errorf("repo show after two stars: star_count %d", repo.StarCount)
	}
	var starred []cliRepo
	bob.json(&starred, "repo", "starred")
	if len(starred) != 1 || starred[0].Namespace != "alice" || starred[0].Name != "widget" {
		t.Errorf("bob's repo starred: %+v, want alice/widget", starred)
	}
	if out := anon.ok("", "repo", "starred", "alice"); !strings.Contains(out, "alice/widget") {
		t.Errorf("repo starred alice:\n%s", out)
	}
	bob.ok("", "repo", "unstar", "alice/widget")
	bob.json(&starred, "repo", "starred")
	if len(starred) != 0 {
		t.Errorf("bob's repo starred after unstar: %+v", starred)
	}
	anon.json(&repo, "repo", "show", "alice/widget")
	if repo.StarCount != 1 {
		t.Errorf("repo show after an unstar: star_count %d, want 1", repo.StarCount)
	}

	// The official flag, on a repository and on a namespace: admins only.
	alice.fails("", []string{"repo", "official", "alice/widget"}, "DENIED")
	admin.ok("", "repo", "official", "alice/widget")
	if anon.json(&repo, "repo", "show", "alice/widget"); !repo.IsOfficial {
		t.Error("repo show: not official after repo official")
	}
	admin.ok("", "repo", "official", "alice/widget", "--unset")
	if anon.json(&repo, "repo", "show", "alice/widget"); repo.IsOfficial {
		t.Error("repo show: official after repo official --unset")
	}
	admin.ok("", "org", "create", "library")
	alice.fails("", []string{"repo", "create", "library/gadget"}, "DENIED")
	admin.ok("", "repo", "create", "library/gadget", "--description", "widget gadgets")
	admin.ok("", "repo", "official", "--namespace", "library")
	if anon.json(&repo, "repo", "show", "library/gadget"); !repo.IsOfficial {
		t.Error("repo show library/gadget: not official in an official namespace")
	}

	// Search: the index catches up with the stars, the flag and a private
	// repository, which only its owner finds.
	alice.ok("", "repo", "create", "alice/widget-secret", "--private", "--description", "secret widgets")
	cliHubEventually(t, "alice's search for widget", func() string {
		hits := alice.search("widget")
		w, ok1 := cliHubFind(hits, "alice/widget")
		g, ok2 := cliHubFind(hits, "library/gadget")
		s, ok3 := cliHubFind(hits, "alice/widget-secret")
		if !ok1 || !ok2 || !ok3 || w.StarCount != 1 || w.ShortDescription != "frobnicates widgets" || !g.IsOfficial || !s.IsPrivate {
			return fmt.Sprintf("%+v", hits)
		}
		return ""
	})
	hits := anon.search("widget")
	if _, ok := cliHubFind(hits, "alice/widget-secret"); ok {
		t.Errorf("anonymous search shows the private alice/widget-secret: %+v", hits)
	}
	if len(hits) != 2 || hits[0].RepoName != "alice/widget" || hits[1].RepoName != "library/gadget" {
		t.Errorf("anonymous search widget: %+v; want alice/widget (name match), then library/gadget (description match)", hits)
	}
	if _, ok := cliHubFind(bob.search("widget"), "alice/widget-secret"); ok {
		t.Error("bob's search shows the private alice/widget-secret")
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"widget", "--official"}, []string{"library/gadget"}},
		{[]string{"widget", "--official=false"}, []string{"alice/widget"}},
		{[]string{"widget", "--stars", "1"}, []string{"alice/widget"}},
		{[]string{"widget", "--stars", "2"}, nil},
		{[]string{"widget", "--namespace", "library"}, []string{"library/gadget"}},
		{[]string{"--namespace", "alice"}, []string{"alice/widget"}},
		{[]string{"widget", "--limit", "1"}, []string{"alice/widget"}},
	} {
		var got []string
		for _, h := range anon.search(tc.args...) {
			got = append(got, h.RepoName)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("search %s: %q, want %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}
	if out := anon.ok("", "search", "widget"); !strings.Contains(out, "OFFICIAL") || !strings.Contains(out, "frobnicates widgets") {
		t.Errorf("search table:\n%s", out)
	}
	anon.fails("", []string{"search", "widget", "--limit", "0"}, "--limit")

	// The pull of 1.0 at the start shows once flushed.
	cliHubEventually(t, "last pull of alice/widget:1.0", func() string {
		anon.json(&tags, "repo", "tags", "alice/widget")
		if len(tags) != 2 || tags[0].LastPulled == nil || tags[1].LastPulled != nil {
			return fmt.Sprintf("%+v", tags)
		}
		return ""
	})
	if time.Since(*tags[0].LastPulled) > time.Hour {
		t.Errorf("repo tags: 1.0 last pulled %v, want just now", tags[0].LastPulled)
	}
}
