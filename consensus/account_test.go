package consensus

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testUser(name string) hubmesh.User {
	return hubmesh.User{
		Name: name, Email: name + "@example.com",
		PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
		Created:      t0,
	}
}

func testToken(id, user string, created time.Time) hubmesh.AccessToken {
	sum := sha256.Sum256([]byte("hmp_" + id + "_secret"))
	return hubmesh.AccessToken{
		ID: id, User: user, Label: "ci " + id, Hash: hex.EncodeToString(sum[:]),
		Scopes: []string{hubmesh.ScopeRead, hubmesh.ScopeWrite}, Created: created,
	}
}

func testKey(id string, created time.Time) hubmesh.SigningKey {
	return hubmesh.SigningKey{ID: id, PrivateKey: []byte("pkcs8 of " + id), Created: created}
}

func auditEvent(i int) hubmesh.AuditEvent {
	return hubmesh.AuditEvent{
		ID: fmt.Sprintf("%020d-n1-%d", i, i), Time: t0.Add(time.Duration(i) * time.Second),
		Action: "login", Actor: "alice", Client: "192.0.2.1", Node: "n1",
	}
}

// populateAccounts gives h a state with every kind of account key: users,
// tokens, an organization with teams, members and grants, namespace
// settings, a private repository pushed into the org, signing keys,
// settings and audit events.
func populateAccounts(h *fsmHarness) {
	h.t.Helper()
	h.mustApply(&Bootstrap{Admin: testUser("root"), Key: testKey("k1", t0)})
	for _, u := range []string{"alice", "bob", "carol"} {
		h.mustApply(&CreateUser{User: testUser(u)})
	}
	h.mustApply(&CreateToken{Token: testToken("tok1", "bob", t0)})
	h.mustApply(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}})
	h.mustApply(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev", Description: "developers"}})
	h.mustApply(&AddTeamMember{Org: "acme", Team: "dev", User: "bob"})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermWrite})
	h.mustApply(&SetNamespace{Namespace: hubmesh.Namespace{Name: "acme", DefaultPrivate: true}})
	populate(h, "acme/api")
	h.mustApply(&AddSigningKey{Key: testKey("k2", t0.Add(time.Hour)), At: t0.Add(time.Hour)})
	h.mustApply(&SetSettings{Settings: hubmesh.Settings{OpenSignup: true}})
	h.mustApply(&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(1), auditEvent(2)}})
}

// keysUnder counts the keys of state that start with prefix.
func keysUnder(state map[string]string, prefix string) int {
	n := 0
	for k := range state {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

func mustErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func TestFSMUsersAndTokens(t *testing.T) {
	h := newFSM(t)
	alice := testUser("alice")
	h.mustApply(&CreateUser{User: alice})
	if got, err := h.f.user("alice"); err != nil || !reflect.DeepEqual(got, alice) {
		t.Fatalf("user = %+v, %v", got, err)
	}
	mustErr(t, "create twice", h.applyErr(&CreateUser{User: testUser("alice")}), hubmesh.ErrExists)
	h.mustApply(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}})
	mustErr(t, "user named like an org", h.applyErr(&CreateUser{User: testUser("acme")}), hubmesh.ErrExists)
	mustErr(t, "org named like a user", h.applyErr(&CreateOrg{Org: hubmesh.Org{Name: "alice", Owner: "alice"}}), hubmesh.ErrExists)
	_, err := h.f.user("bob")
	mustErr(t, "unknown user", err, hubmesh.ErrNotFound)
	_, err = h.f.user("Bob")
	mustErr(t, "malformed user", err, hubmesh.ErrInvalid)

	// UpdateUser changes only the fields it sets and returns the result.
	email, hash, yes := "a@example.org", "$argon2id$new", true
	at := t0.Add(time.Hour)
	res := h.mustApply(&UpdateUser{Name: "alice", Update: hubmesh.UserUpdate{Email: &email, PasswordHash: &hash, Disabled: &yes, At: at}})
	want := alice
	want.Email, want.PasswordHash, want.Disabled, want.PasswordChanged = email, hash, true, at
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("update result %+v, want %+v", res, want)
	}
	if got, _ := h.f.user("alice"); !reflect.DeepEqual(got, want) {
		t.Fatalf("updated user %+v, want %+v", got, want)
	}
	res = h.mustApply(&UpdateUser{Name: "alice", Update: hubmesh.UserUpdate{Admin: &yes, At: at.Add(time.Hour)}})
	if u := res.(hubmesh.User); !u.Admin || !u.PasswordChanged.Equal(at) || u.Email != email {
		t.Fatalf("admin update %+v", u)
	}
	mustErr(t, "update unknown", h.applyErr(&UpdateUser{Name: "bob", Update: hubmesh.UserUpdate{Admin: &yes}}), hubmesh.ErrNotFound)

	// Tokens.
	h.mustApply(&CreateUser{User: testUser("bob")})
	t2 := testToken("t2", "alice", t0.Add(time.Minute))
	t1 := testToken("t1", "alice", t0)
	h.mustApply(&CreateToken{Token: t2})
	h.mustApply(&CreateToken{Token: t1})
	h.mustApply(&CreateToken{Token: testToken("t3", "bob", t0)})
	mustErr(t, "token twice", h.applyErr(&CreateToken{Token: testToken("t1", "bob", t0)}), hubmesh.ErrExists)
	mustErr(t, "token of unknown user", h.applyErr(&CreateToken{Token: testToken("t9", "dave", t0)}), hubmesh.ErrNotFound)
	if got, err := h.f.tokens("alice"); err != nil || len(got) != 2 || !reflect.DeepEqual(got[0], t1) || !reflect.DeepEqual(got[1], t2) {
		t.Fatalf("tokens of alice (oldest first) = %+v, %v", got, err)
	}
	if got, err := h.f.tokens("dave"); err != nil || len(got) != 0 {
		t.Fatalf("tokens of an unknown user = %+v, %v", got, err)
	}

	// TouchTokens: LastUsed only moves forward; unknown ids are ignored.
	used := t0.Add(2 * time.Hour)
	h.mustApply(&TouchTokens{Used: map[string]time.Time{"t1": used, "gone": used, "t3": used.Add(time.Minute)}})
	h.mustApply(&TouchTokens{Used: map[string]time.Time{"t1": used.Add(-time.Hour)}})
	if got, _ := h.f.token("t1"); !got.LastUsed.Equal(used) {
		t.Fatalf("t1 last used %v, want %v", got.LastUsed, used)
	}
	if got, _ := h.f.token("t3"); !got.LastUsed.Equal(used.Add(time.Minute)) {
		t.Fatalf("t3 last used %v", got.LastUsed)
	}
	if got, _ := h.f.token("t2"); !got.LastUsed.IsZero() {
		t.Fatalf("untouched t2 last used %v", got.LastUsed)
	}
	_, err = h.f.token("gone")
	mustErr(t, "touching created a token", err, hubmesh.ErrNotFound)

	h.mustApply(&DeleteToken{ID: "t2"})
	mustErr(t, "delete twice", h.applyErr(&DeleteToken{ID: "t2"}), hubmesh.ErrNotFound)
	if got, _ := h.f.tokens("alice"); len(got) != 1 || got[0].ID != "t1" {
		t.Fatalf("tokens after delete %+v", got)
	}

	// Listing pages.
	h.mustApply(&CreateUser{User: testUser("carol")})
	var names []string
	for p := (hubmesh.Page{N: 2}); ; {
		page, err := listPage[hubmesh.User](h.f, prefixUser, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, u := range page {
			names = append(names, u.Name)
		}
		p.Last = page[len(page)-1].Name
	}
	if strings.Join(names, ",") != "alice,bob,carol" {
		t.Fatalf("users = %v", names)
	}

	// DeleteUser removes the user and its tokens, and frees the name.
	h.mustApply(&DeleteUser{Name: "bob"})
	st := h.dump()
	if keysUnder(st, "user/bob") != 0 || keysUnder(st, "token/t3") != 0 || keysUnder(st, "usertoken/bob\x00") != 0 {
		t.Fatalf("bob survived: %v", st)
	}
	mustErr(t, "delete twice", h.applyErr(&DeleteUser{Name: "bob"}), hubmesh.ErrNotFound)
	h.mustApply(&CreateUser{User: testUser("bob")})
	if got, _ := h.f.tokens("bob"); len(got) != 0 {
		t.Fatalf("a new bob inherited tokens %+v", got)
	}
}

func TestFSMOrgsAndTeams(t *testing.T) {
	h := newFSM(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		h.mustApply(&CreateUser{User: testUser(u)})
	}
	mustErr(t, "org with unknown owner", h.applyErr(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "dave"}}), hubmesh.ErrNotFound)
	acme := hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}
	h.mustApply(&CreateOrg{Org: acme})
	mustErr(t, "org twice", h.applyErr(&CreateOrg{Org: acme}), hubmesh.ErrExists)
	if got, err := h.f.org("acme"); err != nil || got != acme {
		t.Fatalf("org = %+v, %v", got, err)
	}
	teams, err := h.f.teams("acme")
	if err != nil || len(teams) != 1 || teams[0].Name != hubmesh.OwnersTeam || strings.Join(teams[0].Members, ",") != "alice" {
		t.Fatalf("teams of a new org = %+v, %v", teams, err)
	}
	_, err = h.f.teams("nope")
	mustErr(t, "teams of unknown org", err, hubmesh.ErrNotFound)

	h.mustApply(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev", Description: "developers", Members: []string{"ignored"}}})
	mustErr(t, "team twice", h.applyErr(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev"}}), hubmesh.ErrExists)
	mustErr(t, "team of unknown org", h.applyErr(&CreateTeam{Team: hubmesh.Team{Org: "nope", Name: "dev"}}), hubmesh.ErrNotFound)
	h.mustApply(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "QA_team"}})

	for _, u := range []string{"carol", "bob", "bob"} { // the second bob changes nothing
		h.mustApply(&AddTeamMember{Org: "acme", Team: "dev", User: u})
	}
	h.mustApply(&AddTeamMember{Org: "acme", Team: "QA_team", User: "bob"})
	mustErr(t, "add unknown user", h.applyErr(&AddTeamMember{Org: "acme", Team: "dev", User: "dave"}), hubmesh.ErrNotFound)
	mustErr(t, "add to unknown team", h.applyErr(&AddTeamMember{Org: "acme", Team: "ops", User: "bob"}), hubmesh.ErrNotFound)
	dev, err := h.f.team("acme", "dev")
	if err != nil || !reflect.DeepEqual(dev, hubmesh.Team{Org: "acme", Name: "dev", Description: "developers", Members: []string{"bob", "carol"}}) {
		t.Fatalf("team dev = %+v, %v", dev, err)
	}
	if orgs, err := h.f.orgsOf("bob"); err != nil || strings.Join(orgs, ",") != "acme" {
		t.Fatalf("orgs of bob = %v, %v", orgs, err)
	}

	// Grants.
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermWrite})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/web", Permission: hubmesh.PermRead})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/web", Permission: hubmesh.PermAdmin})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/old", Permission: hubmesh.PermRead})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/old", Permission: hubmesh.PermNone})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/never", Permission: hubmesh.PermNone})
	mustErr(t, "grant outside the org", h.applyErr(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "bob/api", Permission: hubmesh.PermRead}), hubmesh.ErrInvalid)
	mustErr(t, "grant of unknown team", h.applyErr(&SetTeamPermission{Org: "acme", Team: "ops", Repo: "acme/api", Permission: hubmesh.PermRead}), hubmesh.ErrNotFound)
	perms, err := h.f.teamPermissions("acme", "dev")
	if err != nil || !maps.Equal(perms, map[string]hubmesh.Permission{"acme/api": hubmesh.PermWrite, "acme/web": hubmesh.PermAdmin}) {
		t.Fatalf("permissions of dev = %v, %v", perms, err)
	}
	if st := h.dump(); keysUnder(st, "grantrepo/acme/old") != 0 || keysUnder(st, "grantrepo/") != 2 {
		t.Fatalf("reverse grant index out of step: %d keys", keysUnder(st, "grantrepo/"))
	}

	// The last owner stays.
	mustErr(t, "remove last owner", h.applyErr(&RemoveTeamMember{Org: "acme", Team: hubmesh.OwnersTeam, User: "alice"}), hubmesh.ErrInvalid)
	mustErr(t, "delete last owner", h.applyErr(&DeleteUser{Name: "alice"}), hubmesh.ErrInvalid)
	mustErr(t, "remove a non-member", h.applyErr(&RemoveTeamMember{Org: "acme", Team: "dev", User: "alice"}), hubmesh.ErrNotFound)
	h.mustApply(&AddTeamMember{Org: "acme", Team: hubmesh.OwnersTeam, User: "bob"})
	h.mustApply(&RemoveTeamMember{Org: "acme", Team: hubmesh.OwnersTeam, User: "alice"})
	if orgs, _ := h.f.orgsOf("alice"); len(orgs) != 0 {
		t.Fatalf("alice left acme but is in %v", orgs)
	}

	// Teams go with their members and grants; owners cannot go.
	mustErr(t, "delete owners", h.applyErr(&DeleteTeam{Org: "acme", Team: hubmesh.OwnersTeam}), hubmesh.ErrInvalid)
	mustErr(t, "delete unknown team", h.applyErr(&DeleteTeam{Org: "acme", Team: "ops"}), hubmesh.ErrNotFound)
	h.mustApply(&DeleteTeam{Org: "acme", Team: "dev"})
	st := h.dump()
	for _, p := range []string{"team/acme\x00dev", "teammember/acme\x00dev\x00", "userteam/carol\x00", "userteam/bob\x00acme\x00dev", "grant/", "grantrepo/"} {
		if n := keysUnder(st, p); n != 0 {
			t.Fatalf("%d keys under %q after DeleteTeam", n, p)
		}
	}
	if orgs, _ := h.f.orgsOf("bob"); strings.Join(orgs, ",") != "acme" {
		t.Fatalf("bob's orgs after DeleteTeam: %v", orgs)
	}

	// DeleteUser removes the memberships of a user who is not the last owner.
	h.mustApply(&AddTeamMember{Org: "acme", Team: hubmesh.OwnersTeam, User: "carol"})
	h.mustApply(&DeleteUser{Name: "carol"})
	if owners, _ := h.f.team("acme", hubmesh.OwnersTeam); strings.Join(owners.Members, ",") != "bob" {
		t.Fatalf("owners after deleting carol: %v", owners.Members)
	}

	// DeleteOrg removes every team, membership and grant, and frees the name.
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "QA_team", Repo: "acme/api", Permission: hubmesh.PermRead})
	h.mustApply(&DeleteOrg{Name: "acme"})
	st = h.dump()
	for _, p := range []string{"org/", "team/", "teammember/", "userteam/", "grant/", "grantrepo/"} {
		if n := keysUnder(st, p); n != 0 {
			t.Fatalf("%d keys under %q after DeleteOrg", n, p)
		}
	}
	mustErr(t, "delete org twice", h.applyErr(&DeleteOrg{Name: "acme"}), hubmesh.ErrNotFound)
	h.mustApply(&DeleteUser{Name: "bob"})
	h.mustApply(&CreateUser{User: testUser("acme")})
}

func TestFSMRepositorySettings(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateUser{User: testUser("alice")})
	mustErr(t, "namespace nobody owns", h.applyErr(&SetNamespace{Namespace: hubmesh.Namespace{Name: "nobody", DefaultPrivate: true}}), hubmesh.ErrNotFound)
	h.mustApply(&SetNamespace{Namespace: hubmesh.Namespace{Name: "alice", Kind: "ignored", DefaultPrivate: true}})
	if ns, err := h.f.namespace("alice"); err != nil || ns != (hubmesh.Namespace{Name: "alice", Kind: KindUser, DefaultPrivate: true}) {
		t.Fatalf("namespace = %+v, %v", ns, err)
	}
	for _, name := range []string{"nobody", "", "Not-Valid"} {
		if ns, err := h.f.namespace(name); err != nil || ns != (hubmesh.Namespace{Name: name}) {
			t.Fatalf("namespace %q = %+v, %v", name, ns, err)
		}
	}

	// The first push creates the repository with the namespace's default.
	populate(h, "alice/app")
	populate(h, "bob/app")
	repo, err := h.f.repository("alice/app")
	if err != nil || repo != (hubmesh.Repository{Namespace: "alice", Name: "alice/app", IsPrivate: true, Created: created, Updated: created}) {
		t.Fatalf("pushed repository = %+v, %v", repo, err)
	}
	if repo, _ := h.f.repository("bob/app"); repo.IsPrivate {
		t.Fatal("a repository of a namespace without settings is private")
	}
	// Later pushes move Updated forward, never back.
	later := *imageManifest("alice/app", "later")
	later.Created = created.Add(time.Hour)
	h.mustApply(&PutManifest{Manifest: later})
	earlier := *imageManifest("alice/app", "earlier")
	earlier.Created = created.Add(-time.Hour)
	h.mustApply(&PutManifest{Manifest: earlier})
	if repo, _ := h.f.repository("alice/app"); !repo.Updated.Equal(later.Created) || !repo.Created.Equal(created) {
		t.Fatalf("after more pushes: %+v", repo)
	}
	_, err = h.f.repository("alice/none")
	mustErr(t, "unknown repository", err, hubmesh.ErrRepoUnknown)

	// CreateRepository and UpdateRepository.
	nr := hubmesh.Repository{Namespace: "alice", Name: "alice/new", Description: "short", Created: t0, Updated: t0}
	h.mustApply(&CreateRepository{Repository: nr})
	mustErr(t, "create twice", h.applyErr(&CreateRepository{Repository: nr}), hubmesh.ErrExists)
	mustErr(t, "create pushed", h.applyErr(&CreateRepository{Repository: hubmesh.Repository{Namespace: "alice", Name: "alice/app"}}), hubmesh.ErrExists)
	if got, _ := h.f.repository("alice/new"); got != nr {
		t.Fatalf("created repository %+v, want %+v", got, nr)
	}
	yes, full := true, "# New\nlong text"
	res := h.mustApply(&UpdateRepository{Name: "alice/new", Update: hubmesh.RepositoryUpdate{IsPrivate: &yes, FullDescription: &full, At: t0.Add(time.Minute)}})
	want := nr
	want.IsPrivate, want.FullDescription, want.Updated = true, full, t0.Add(time.Minute)
	if res != want {
		t.Fatalf("update result %+v, want %+v", res, want)
	}
	if got, _ := h.f.repository("alice/new"); got != want {
		t.Fatalf("updated repository %+v", got)
	}
	mustErr(t, "update unknown", h.applyErr(&UpdateRepository{Name: "alice/none", Update: hubmesh.RepositoryUpdate{IsPrivate: &yes}}), hubmesh.ErrRepoUnknown)
	if repos, _ := h.f.repositories(hubmesh.Page{}); strings.Join(repos, ",") != "alice/app,alice/new,bob/app" {
		t.Fatalf("repositories = %v", repos)
	}
	if r, _, _, _ := h.f.counts(); r != 3 {
		t.Fatalf("repository count %d, want 3", r)
	}
}

// TestFSMOldRepoRecord reads a repository record written before the
// account commands: it only has "created".
func TestFSMOldRepoRecord(t *testing.T) {
	h := newFSM(t)
	if err := h.f.db.Set(repoKey("old/app"), []byte(`{"created":"2024-05-06T07:08:09Z"}`), nil); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	repo, err := h.f.repository("old/app")
	if err != nil || repo != (hubmesh.Repository{Namespace: "old", Name: "old/app", Created: when, Updated: when}) {
		t.Fatalf("old record = %+v, %v", repo, err)
	}
	m := *imageManifest("old/app", "v2")
	h.mustApply(&PutManifest{Manifest: m})
	if repo, _ := h.f.repository("old/app"); !repo.Created.Equal(when) || !repo.Updated.Equal(created) || repo.IsPrivate {
		t.Fatalf("old record after a push = %+v", repo)
	}
}

func TestFSMDeleteRepositories(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateUser{User: testUser("alice")})
	h.mustApply(&CreateUser{User: testUser("alicex")})
	h.mustApply(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice"}})
	h.mustApply(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev"}})
	h.mustApply(&SetNamespace{Namespace: hubmesh.Namespace{Name: "alice", DefaultPrivate: true}})
	// Neighbours by name prefix must survive: alice/app2, alicex/app, "alice".
	for _, repo := range []string{"alice/app", "alice/app2", "alice/app/sub", "alicex/app", "alice", "acme/api", "acme/web"} {
		populate(h, repo)
	}
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermWrite})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/web", Permission: hubmesh.PermRead})
	blobsBefore := keysUnder(h.dump(), "blob/")

	// state after deleting repos: nothing left under their keys, the rest intact.
	check := func(gone, kept []string) {
		t.Helper()
		st := h.dump()
		for _, repo := range gone {
			for _, p := range []string{"manifest/", "tag/", "tagrev/", "referrer/", "link/", "grantrepo/"} {
				if n := keysUnder(st, p+repo+"\x00"); n != 0 {
					t.Fatalf("%d keys under %s%s after delete", n, p, repo)
				}
			}
			if _, ok := st["repo/"+repo]; ok {
				t.Fatalf("record of %s survived", repo)
			}
		}
		for _, repo := range kept {
			if _, err := h.f.getManifest(repo, "latest"); err != nil {
				t.Fatalf("%s lost: %v", repo, err)
			}
			if _, err := h.f.statBlob(repo, blobDesc("layer of "+repo).Digest); err != nil {
				t.Fatalf("%s lost its link: %v", repo, err)
			}
		}
		if n := keysUnder(st, "blob/"); n != blobsBefore {
			t.Fatalf("%d blob records, want %d: blobs are content and stay", n, blobsBefore)
		}
		r, m, _, _ := h.f.counts()
		if int(r) != keysUnder(st, "repo/") || int(m) != keysUnder(st, "manifest/") {
			t.Fatalf("counts %d repos %d manifests, keys %d %d", r, m, keysUnder(st, "repo/"), keysUnder(st, "manifest/"))
		}
	}

	h.mustApply(&DeleteRepository{Name: "acme/api"})
	mustErr(t, "delete twice", h.applyErr(&DeleteRepository{Name: "acme/api"}), hubmesh.ErrRepoUnknown)
	check([]string{"acme/api"}, []string{"acme/web", "alice/app", "alice/app2", "alice/app/sub", "alicex/app", "alice"})
	if perms, _ := h.f.teamPermissions("acme", "dev"); !maps.Equal(perms, map[string]hubmesh.Permission{"acme/web": hubmesh.PermRead}) {
		t.Fatalf("grants after deleting acme/api: %v", perms)
	}

	h.mustApply(&DeleteRepository{Name: "alice/app"})
	check([]string{"alice/app"}, []string{"alice/app2", "alice/app/sub", "alicex/app", "alice"})

	h.mustApply(&DeleteUser{Name: "alicex"})
	check([]string{"alicex/app"}, []string{"alice/app2", "alice/app/sub", "alice"})

	h.mustApply(&DeleteOrg{Name: "acme"})
	check([]string{"acme/web"}, []string{"alice/app2", "alice/app/sub", "alice"})

	h.mustApply(&DeleteUser{Name: "alice"})
	check([]string{"alice/app2", "alice/app/sub"}, []string{"alice"})
	if st := h.dump(); keysUnder(st, "ns/") != 0 || keysUnder(st, "grant") != 0 {
		t.Fatalf("namespace settings or grants survived: %v", st)
	}
}

func TestFSMAccessFacts(t *testing.T) {
	h := newFSM(t)
	for _, u := range []string{"alice", "bob", "carol", "dave", "root", "off"} {
		h.mustApply(&CreateUser{User: testUser(u)})
	}
	yes := true
	h.mustApply(&UpdateUser{Name: "root", Update: hubmesh.UserUpdate{Admin: &yes}})
	h.mustApply(&UpdateUser{Name: "off", Update: hubmesh.UserUpdate{Disabled: &yes}})
	h.mustApply(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice"}})
	for _, tm := range []string{"dev", "ro"} {
		h.mustApply(&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: tm}})
	}
	h.mustApply(&AddTeamMember{Org: "acme", Team: "dev", User: "bob"})
	h.mustApply(&AddTeamMember{Org: "acme", Team: "ro", User: "bob"})
	h.mustApply(&AddTeamMember{Org: "acme", Team: "ro", User: "carol"})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermWrite})
	h.mustApply(&SetTeamPermission{Org: "acme", Team: "ro", Repo: "acme/api", Permission: hubmesh.PermRead})
	h.mustApply(&SetNamespace{Namespace: hubmesh.Namespace{Name: "acme", DefaultPrivate: true}})
	populate(h, "acme/api")
	populate(h, "alice/app")
	populate(h, "app")

	acmeNS := hubmesh.Namespace{Name: "acme", Kind: KindOrg, DefaultPrivate: true}
	aliceNS := hubmesh.Namespace{Name: "alice", Kind: KindUser}
	for _, tc := range []struct {
		user, repo string
		want       hubmesh.AccessFacts
	}{
		{"", "acme/api", hubmesh.AccessFacts{Namespace: acmeNS, RepoExists: true, RepoPrivate: true}},
		{"bob", "acme/api", hubmesh.AccessFacts{User: "bob", UserExists: true, Namespace: acmeNS, TeamPermission: hubmesh.PermWrite, RepoExists: true, RepoPrivate: true}},
		{"carol", "acme/api", hubmesh.AccessFacts{User: "carol", UserExists: true, Namespace: acmeNS, TeamPermission: hubmesh.PermRead, RepoExists: true, RepoPrivate: true}},
		{"dave", "acme/api", hubmesh.AccessFacts{User: "dave", UserExists: true, Namespace: acmeNS, RepoExists: true, RepoPrivate: true}},
		{"alice", "acme/api", hubmesh.AccessFacts{User: "alice", UserExists: true, Namespace: acmeNS, OrgOwner: true, RepoExists: true, RepoPrivate: true}},
		{"bob", "acme/new", hubmesh.AccessFacts{User: "bob", UserExists: true, Namespace: acmeNS}},
		{"alice", "alice/app", hubmesh.AccessFacts{User: "alice", UserExists: true, Namespace: aliceNS, NamespaceUser: true, RepoExists: true}},
		{"bob", "alice/app", hubmesh.AccessFacts{User: "bob", UserExists: true, Namespace: aliceNS, RepoExists: true}},
		{"root", "app", hubmesh.AccessFacts{User: "root", UserExists: true, SiteAdmin: true, RepoExists: true}},
		{"off", "off/app", hubmesh.AccessFacts{User: "off", UserExists: true, UserDisabled: true, Namespace: hubmesh.Namespace{Name: "off", Kind: KindUser}, NamespaceUser: true}},
		{"ghost", "ghost/app", hubmesh.AccessFacts{User: "ghost", Namespace: hubmesh.Namespace{Name: "ghost"}}},
		{"Not Valid", "nobody/x/y", hubmesh.AccessFacts{User: "Not Valid", Namespace: hubmesh.Namespace{Name: "nobody"}}},
	} {
		got, err := h.f.accessFacts(tc.user, tc.repo)
		if err != nil || got != tc.want {
			t.Errorf("facts(%q, %q):\n got %+v, %v\nwant %+v", tc.user, tc.repo, got, err, tc.want)
		}
	}
	_, err := h.f.accessFacts("bob", "Acme/API")
	mustErr(t, "malformed repository", err, hubmesh.ErrInvalid)
}

func TestFSMSigningKeysAndSettings(t *testing.T) {
	h := newFSM(t)
	if keys, err := h.f.signingKeys(); err != nil || len(keys) != 0 {
		t.Fatalf("keys before bootstrap = %v, %v", keys, err)
	}
	admin := testUser("root") // Admin is forced on
	h.mustApply(&Bootstrap{Admin: admin, Key: testKey("k1", t0)})
	if u, _ := h.f.user("root"); !u.Admin {
		t.Fatal("bootstrapped user is not an admin")
	}
	mustErr(t, "bootstrap twice", h.applyErr(&Bootstrap{Admin: testUser("other"), Key: testKey("k9", t0)}), hubmesh.ErrExists)
	if _, err := h.f.user("other"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("a refused bootstrap created its user: %v", err)
	}

	day := 24 * time.Hour
	h.mustApply(&AddSigningKey{Key: testKey("k2", t0.Add(day)), At: t0.Add(day)})
	mustErr(t, "key twice", h.applyErr(&AddSigningKey{Key: testKey("k2", t0.Add(day)), At: t0.Add(day)}), hubmesh.ErrExists)
	keys, _ := h.f.signingKeys()
	if len(keys) != 2 || keys[0].ID != "k1" || !keys[0].Retired.Equal(t0.Add(day)) || keys[1].ID != "k2" || !keys[1].Retired.IsZero() {
		t.Fatalf("keys after a rotation: %+v", keys)
	}
	// k1 was retired at t0+1d: kept until t0+1d+SigningKeyRetention.
	edge := t0.Add(day + SigningKeyRetention)
	h.mustApply(&AddSigningKey{Key: testKey("k3", edge), At: edge})
	if keys, _ := h.f.signingKeys(); len(keys) != 3 {
		t.Fatalf("k1 pruned at the edge of its retention: %+v", keys)
	}
	h.mustApply(&AddSigningKey{Key: testKey("k4", edge.Add(time.Second)), At: edge.Add(time.Second)})
	keys, _ = h.f.signingKeys()
	var ids []string
	for _, k := range keys {
		ids = append(ids, fmt.Sprintf("%s:%v", k.ID, k.Retired.IsZero()))
	}
	if strings.Join(ids, ",") != "k2:false,k3:false,k4:true" {
		t.Fatalf("keys = %v", ids)
	}

	// A bootstrap whose user name is taken is refused.
	h2 := newFSM(t)
	h2.mustApply(&CreateUser{User: testUser("root")})
	mustErr(t, "bootstrap over a user", h2.applyErr(&Bootstrap{Admin: testUser("root"), Key: testKey("k1", t0)}), hubmesh.ErrExists)

	if s, err := h.f.settings(); err != nil || s.OpenSignup {
		t.Fatalf("default settings %+v, %v", s, err)
	}
	h.mustApply(&SetSettings{Settings: hubmesh.Settings{OpenSignup: true}})
	if s, err := h.f.settings(); err != nil || !s.OpenSignup {
		t.Fatalf("settings %+v, %v", s, err)
	}
}

func TestFSMAudit(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(3), auditEvent(1), auditEvent(2)}})
	h.mustApply(&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(2), auditEvent(4)}}) // a retry and a new one
	var got []string
	for p := (hubmesh.Page{N: 3}); ; {
		page, err := listPage[hubmesh.AuditEvent](h.f, prefixAudit, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			got = append(got, strings.TrimLeft(e.ID[:20], "0"))
		}
		p.Last = page[len(page)-1].ID
	}
	if strings.Join(got, ",") != "1,2,3,4" {
		t.Fatalf("audit ids %v", got)
	}
	if v := readU64([]byte(h.dump()[string(keyCountAudit)])); v != 4 {
		t.Fatalf("audit count %d, want 4", v)
	}
	if e, _ := listPage[hubmesh.AuditEvent](h.f, prefixAudit, hubmesh.Page{N: 1}); !reflect.DeepEqual(e[0], auditEvent(1)) {
		t.Fatalf("stored event %+v", e[0])
	}
}

// TestFSMAuditKeepsNewest fills the audit log past its limit (lowered
// for the test) with batches from two "nodes" whose ids interleave.
func TestFSMAuditKeepsNewest(t *testing.T) {
	if auditLimit != MaxAuditEvents || MaxAuditEvents != 100000 {
		t.Fatalf("audit limit %d / %d, want 100000", auditLimit, MaxAuditEvents)
	}
	auditLimit = 50
	t.Cleanup(func() { auditLimit = MaxAuditEvents })
	h := newFSM(t)
	ids := func() []int {
		t.Helper()
		evs, err := listPage[hubmesh.AuditEvent](h.f, prefixAudit, hubmesh.Page{})
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, e := range evs {
			var i int
			fmt.Sscan(strings.TrimLeft(e.ID[:20], "0"), &i)
			out = append(out, i)
		}
		if v := readU64([]byte(h.dump()[string(keyCountAudit)])); int(v) != len(out) {
			t.Fatalf("audit count %d, %d events stored", v, len(out))
		}
		return out
	}
	batch := func(from, to, step int) *AppendAudit {
		c := &AppendAudit{}
		for i := from; i < to; i += step {
			c.Events = append(c.Events, auditEvent(i))
		}
		return c
	}
	h.mustApply(batch(0, 60, 2)) // node A: even ids 0..58 (30 events)
	h.mustApply(batch(1, 41, 2)) // node B, late: odd ids 1..39 interleave (20 events, 50 in all)
	if got := ids(); len(got) != 50 || got[0] != 0 || got[49] != 58 {
		t.Fatalf("before the limit: %v", got)
	}
	h.mustApply(batch(60, 70, 1)) // 10 more: the 10 oldest go
	got := ids()
	if len(got) != 50 || got[0] != 10 || got[len(got)-1] != 69 {
		t.Fatalf("after trimming: %v", got)
	}
	// An event older than everything kept is dropped; a retry is skipped;
	// a late event newer than the floor is kept (and the oldest goes).
	h.mustApply(&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(3), auditEvent(65), auditEvent(41)}})
	got = ids()
	if len(got) != 50 || got[0] != 11 || !slices.Contains(got, 41) || slices.Contains(got, 3) {
		t.Fatalf("after late events: %v", got)
	}
	for range 5 {
		h.mustApply(batch(100, 200, 1))
		h.mustApply(batch(200, 300, 1))
	}
	if got := ids(); len(got) != 50 || got[0] != 250 || got[49] != 299 {
		t.Fatalf("after many trims: %v", got)
	}
}

// TestFSMAccountRejectionsWriteNothing checks rejected account commands:
// the error reaches the proposer and only the applied index changes.
func TestFSMAccountRejectionsWriteNothing(t *testing.T) {
	yes := true
	empty := ""
	long := func(n int) string { return strings.Repeat("x", n) }
	tooManyScopes := testToken("tx", "bob", t0)
	tooManyScopes.Scopes = []string{"read", "write", "delete", "admin", "read"}
	badScope := testToken("tx", "bob", t0)
	badScope.Scopes = []string{"push"}
	retired := testKey("k9", t0)
	retired.Retired = t0
	bigBatch := make([]hubmesh.AuditEvent, MaxAuditBatch+1)
	for i := range bigBatch {
		bigBatch[i] = auditEvent(i)
	}
	var bigEvents []hubmesh.AuditEvent
	for i := range 200 {
		e := auditEvent(i)
		e.Detail = long(maxAuditDetailLen)
		bigEvents = append(bigEvents, e)
	}
	touchMany := map[string]time.Time{}
	for i := range MaxTouchTokens + 1 {
		touchMany[fmt.Sprint("t", i)] = t0
	}
	// Rejected commands write nothing, so they all run against one state.
	h := newFSM(t)
	populateAccounts(h)
	before := h.dump()
	delete(before, string(keyApplied))

	for _, tc := range []struct {
		name string
		cmd  Command
		want error
	}{
		{"bootstrap again", &Bootstrap{Admin: testUser("zed"), Key: testKey("k9", t0)}, hubmesh.ErrExists},
		{"bootstrap retired key", &Bootstrap{Admin: testUser("zed"), Key: retired}, hubmesh.ErrInvalid},
		{"user name taken by org", &CreateUser{User: testUser("acme")}, hubmesh.ErrExists},
		{"user name too short", &CreateUser{User: testUser("a")}, hubmesh.ErrInvalid},
		{"user name too long", &CreateUser{User: testUser(long(31))}, hubmesh.ErrInvalid},
		{"user name upper case", &CreateUser{User: testUser("Alice")}, hubmesh.ErrInvalid},
		{"user name ends in dash", &CreateUser{User: testUser("alice-")}, hubmesh.ErrInvalid},
		{"user name not a repo component", &CreateUser{User: testUser("a-_b")}, hubmesh.ErrInvalid},
		{"user name with NUL", &CreateUser{User: testUser("al\x00ce")}, hubmesh.ErrInvalid},
		{"email too long", &CreateUser{User: hubmesh.User{Name: "zed", Email: long(300)}}, hubmesh.ErrInvalid},
		{"password hash too long", &CreateUser{User: hubmesh.User{Name: "zed", PasswordHash: long(2000)}}, hubmesh.ErrInvalid},
		{"password change without time", &UpdateUser{Name: "bob", Update: hubmesh.UserUpdate{PasswordHash: &empty}}, hubmesh.ErrInvalid},
		{"update unknown user", &UpdateUser{Name: "zed", Update: hubmesh.UserUpdate{Admin: &yes}}, hubmesh.ErrNotFound},
		{"delete unknown user", &DeleteUser{Name: "zed"}, hubmesh.ErrNotFound},
		{"delete last owner", &DeleteUser{Name: "alice"}, hubmesh.ErrInvalid},
		{"token of unknown user", &CreateToken{Token: testToken("tx", "zed", t0)}, hubmesh.ErrNotFound},
		{"token id taken", &CreateToken{Token: testToken("tok1", "alice", t0)}, hubmesh.ErrExists},
		{"token id malformed", &CreateToken{Token: testToken("t/x", "bob", t0)}, hubmesh.ErrInvalid},
		{"token without hash", &CreateToken{Token: hubmesh.AccessToken{ID: "tx", User: "bob"}}, hubmesh.ErrInvalid},
		{"token label too long", &CreateToken{Token: func() hubmesh.AccessToken { tk := testToken("tx", "bob", t0); tk.Label = long(300); return tk }()}, hubmesh.ErrInvalid},
		{"token scopes too many", &CreateToken{Token: tooManyScopes}, hubmesh.ErrInvalid},
		{"token scope unknown", &CreateToken{Token: badScope}, hubmesh.ErrInvalid},
		{"delete unknown token", &DeleteToken{ID: "nope"}, hubmesh.ErrNotFound},
		{"touch too many", &TouchTokens{Used: touchMany}, hubmesh.ErrInvalid},
		{"touch malformed id", &TouchTokens{Used: map[string]time.Time{"a b": t0}}, hubmesh.ErrInvalid},
		{"org name taken by user", &CreateOrg{Org: hubmesh.Org{Name: "bob", Owner: "alice"}}, hubmesh.ErrExists},
		{"org without owner", &CreateOrg{Org: hubmesh.Org{Name: "zorg"}}, hubmesh.ErrInvalid},
		{"org of unknown owner", &CreateOrg{Org: hubmesh.Org{Name: "zorg", Owner: "zed"}}, hubmesh.ErrNotFound},
		{"delete unknown org", &DeleteOrg{Name: "zorg"}, hubmesh.ErrNotFound},
		{"team name invalid", &CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "a b"}}, hubmesh.ErrInvalid},
		{"team name too long", &CreateTeam{Team: hubmesh.Team{Org: "acme", Name: long(31)}}, hubmesh.ErrInvalid},
		{"team description too long", &CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "qa", Description: long(2000)}}, hubmesh.ErrInvalid},
		{"team exists", &CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev"}}, hubmesh.ErrExists},
		{"team of unknown org", &CreateTeam{Team: hubmesh.Team{Org: "zorg", Name: "dev"}}, hubmesh.ErrNotFound},
		{"delete owners", &DeleteTeam{Org: "acme", Team: hubmesh.OwnersTeam}, hubmesh.ErrInvalid},
		{"delete unknown team", &DeleteTeam{Org: "acme", Team: "qa"}, hubmesh.ErrNotFound},
		{"add unknown user", &AddTeamMember{Org: "acme", Team: "dev", User: "zed"}, hubmesh.ErrNotFound},
		{"add to unknown team", &AddTeamMember{Org: "acme", Team: "qa", User: "bob"}, hubmesh.ErrNotFound},
		{"remove last owner", &RemoveTeamMember{Org: "acme", Team: hubmesh.OwnersTeam, User: "alice"}, hubmesh.ErrInvalid},
		{"remove non-member", &RemoveTeamMember{Org: "acme", Team: "dev", User: "carol"}, hubmesh.ErrNotFound},
		{"grant outside namespace", &SetTeamPermission{Org: "acme", Team: "dev", Repo: "other/api", Permission: hubmesh.PermRead}, hubmesh.ErrInvalid},
		{"grant on bad repo", &SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/API", Permission: hubmesh.PermRead}, hubmesh.ErrInvalid},
		{"grant of unknown team", &SetTeamPermission{Org: "acme", Team: "qa", Repo: "acme/api", Permission: hubmesh.PermRead}, hubmesh.ErrNotFound},
		{"create existing repo", &CreateRepository{Repository: hubmesh.Repository{Namespace: "acme", Name: "acme/api"}}, hubmesh.ErrExists},
		{"create repo wrong namespace", &CreateRepository{Repository: hubmesh.Repository{Namespace: "bob", Name: "acme/x"}}, hubmesh.ErrInvalid},
		{"create repo description too long", &CreateRepository{Repository: hubmesh.Repository{Namespace: "acme", Name: "acme/x", Description: long(2000)}}, hubmesh.ErrInvalid},
		{"update unknown repo", &UpdateRepository{Name: "acme/x", Update: hubmesh.RepositoryUpdate{IsPrivate: &yes}}, hubmesh.ErrRepoUnknown},
		{"update full description too long", &UpdateRepository{Name: "acme/api", Update: hubmesh.RepositoryUpdate{FullDescription: new(long(70000))}}, hubmesh.ErrInvalid},
		{"delete unknown repo", &DeleteRepository{Name: "acme/x"}, hubmesh.ErrRepoUnknown},
		{"namespace nobody owns", &SetNamespace{Namespace: hubmesh.Namespace{Name: "zorg"}}, hubmesh.ErrNotFound},
		{"namespace invalid", &SetNamespace{Namespace: hubmesh.Namespace{Name: ""}}, hubmesh.ErrInvalid},
		{"key id taken", &AddSigningKey{Key: testKey("k1", t0), At: t0}, hubmesh.ErrExists},
		{"key without time", &AddSigningKey{Key: testKey("k9", t0)}, hubmesh.ErrInvalid},
		{"key without private key", &AddSigningKey{Key: hubmesh.SigningKey{ID: "k9", Created: t0}, At: t0}, hubmesh.ErrInvalid},
		{"key retired", &AddSigningKey{Key: retired, At: t0}, hubmesh.ErrInvalid},
		{"audit empty", &AppendAudit{}, hubmesh.ErrInvalid},
		{"audit batch too big", &AppendAudit{Events: bigBatch}, hubmesh.ErrInvalid},
		{"audit without id", &AppendAudit{Events: []hubmesh.AuditEvent{{Action: "login"}}}, hubmesh.ErrInvalid},
		{"audit detail too long", &AppendAudit{Events: []hubmesh.AuditEvent{{ID: "1", Action: "login", Detail: long(5000)}}}, hubmesh.ErrInvalid},
		{"audit batch too many bytes", &AppendAudit{Events: bigEvents}, hubmesh.ErrInvalid},
	} {
		res := h.apply(tc.cmd)
		if err, _ := res.(error); !errors.Is(err, tc.want) {
			t.Errorf("%s: result %v, want an error wrapping %v", tc.name, res, tc.want)
		}
		after := h.dump()
		if got := readU64([]byte(after[string(keyApplied)])); got != h.index {
			t.Fatalf("%s: applied index %d, want %d", tc.name, got, h.index)
		}
		delete(after, string(keyApplied))
		if !maps.Equal(before, after) {
			t.Fatalf("%s: a rejected command changed the state", tc.name)
		}
	}
}

// accountCommands is one valid instance of every account command.
func accountCommands() []Command {
	yes, email, desc := true, "a@example.org", "d"
	tok := testToken("tok1", "bob", t0)
	tok.Expires = t0.Add(time.Hour)
	tok.LastUsed = t0.Add(time.Minute)
	return []Command{
		&Bootstrap{Admin: testUser("root"), Key: testKey("k1", t0)},
		&CreateUser{User: testUser("alice")},
		&UpdateUser{Name: "alice", Update: hubmesh.UserUpdate{Email: &email, Admin: &yes, PasswordHash: &desc, Disabled: &yes, At: t0}},
		&DeleteUser{Name: "alice"},
		&CreateToken{Token: tok},
		&DeleteToken{ID: "tok1"},
		&TouchTokens{Used: map[string]time.Time{"tok1": t0, "tok2": t0.Add(time.Second)}},
		&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}},
		&DeleteOrg{Name: "acme"},
		&CreateTeam{Team: hubmesh.Team{Org: "acme", Name: "dev", Description: "developers"}},
		&DeleteTeam{Org: "acme", Team: "dev"},
		&AddTeamMember{Org: "acme", Team: "dev", User: "bob"},
		&RemoveTeamMember{Org: "acme", Team: "dev", User: "bob"},
		&SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermAdmin},
		&CreateRepository{Repository: hubmesh.Repository{Namespace: "acme", Name: "acme/api", IsPrivate: true, Description: "d", FullDescription: "f", Created: t0, Updated: t0}},
		&UpdateRepository{Name: "acme/api", Update: hubmesh.RepositoryUpdate{IsPrivate: &yes, Description: &desc, FullDescription: &email, At: t0}},
		&DeleteRepository{Name: "acme/api"},
		&SetNamespace{Namespace: hubmesh.Namespace{Name: "acme", Kind: KindOrg, DefaultPrivate: true}},
		&AddSigningKey{Key: testKey("k2", t0), At: t0},
		&SetSettings{Settings: hubmesh.Settings{OpenSignup: true}},
		&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(1), auditEvent(2)}},
	}
}

// TestAccountValidateBeyondLog covers what cannot reach the log at all: a
// permission above admin has no name, so it cannot be encoded into a
// decodable command; validate (which Apply runs before encoding) refuses it.
func TestAccountValidateBeyondLog(t *testing.T) {
	c := &SetTeamPermission{Org: "acme", Team: "dev", Repo: "acme/api", Permission: hubmesh.PermAdmin + 1}
	mustErr(t, "permission beyond admin", c.validate(), hubmesh.ErrInvalid)
}

func TestAccountCommandsRoundTrip(t *testing.T) {
	checkCommandsRoundTrip(t, accountCommands(), TypeBootstrap, TypeAppendAudit)
}

// undecodable holds, for each account command type, a payload that is not
// its JSON.
var undecodable = map[Type]string{
	TypeBootstrap:         `{"admin":{"username":7}}`,
	TypeCreateUser:        `{"user":{"is_admin":"yes"}}`,
	TypeUpdateUser:        `{"name":"a","update":{"at":"yesterday"}}`,
	TypeDeleteUser:        `{"name":["a"]}`,
	TypeCreateToken:       `{"token":{"scopes":"read"}}`,
	TypeDeleteToken:       `{"id":1}`,
	TypeTouchTokens:       `{"used":{"t1":"never"}}`,
	TypeCreateOrg:         `{"org":{"date_joined":5}}`,
	TypeDeleteOrg:         `{"name":false}`,
	TypeCreateTeam:        `{"team":{"members":"bob"}}`,
	TypeDeleteTeam:        `{"org":1}`,
	TypeAddTeamMember:     `{"user":{}}`,
	TypeRemoveTeamMember:  `{"team":[]}`,
	TypeSetTeamPermission: `{"org":"acme","team":"dev","repo":"acme/api","permission":"superuser"}`,
	TypeCreateRepository:  `{"repository":{"is_private":"no"}}`,
	TypeUpdateRepository:  `{"name":"a/b","update":{"is_private":1}}`,
	TypeDeleteRepository:  `{"name":null,"x":}`,
	TypeSetNamespace:      `{"namespace":{"default_private":"yes"}}`,
	TypeAddSigningKey:     `{"key":{"private_key":"%%%"}}`,
	TypeSetSettings:       `{"settings":{"open_signup":"sure"}}`,
	TypeAppendAudit:       `{"events":{"id":"1"}}`,
}

func envelope(t Type, payload string) []byte {
	return append([]byte{envelopeVersion, byte(t >> 8), byte(t)}, payload...)
}

func TestAccountDecodeRejects(t *testing.T) {
	for typ := TypeBootstrap; typ <= TypeAppendAudit; typ++ {
		payload, ok := undecodable[typ]
		if !ok {
			t.Errorf("no undecodable payload for %v", typ)
			continue
		}
		if _, err := Decode(envelope(typ, payload)); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%v: Decode error %v, want ErrInvalid", typ, err)
		}
	}
}

// TestFSMAccountDecodeFailurePanics: a committed account entry that cannot
// be decoded halts the node without changing its state.
func TestFSMAccountDecodeFailurePanics(t *testing.T) {
	for typ, payload := range undecodable {
		t.Run(typ.String(), func(t *testing.T) {
			h := newFSM(t)
			h.mustApply(&CreateUser{User: testUser("alice")})
			h.mustHalt(envelope(typ, payload))
		})
	}
}

func TestSnapshotRoundTripAccounts(t *testing.T) {
	src := newFSM(t)
	populateAccounts(src)
	dst := newFSM(t)
	dst.mustApply(&CreateUser{User: testUser("stale")}) // older state the restore discards
	restoreInto(t, src, dst, "user/", "token/", "usertoken/", "org/", "team/", "teammember/", "userteam/",
		"grant/", "grantrepo/", "ns/", "key/", "audit/", "meta/settings", "meta/count/audit")
	if _, err := dst.f.user("stale"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("pre-restore user survived: %v", err)
	}
	facts, err := dst.f.accessFacts("bob", "acme/api")
	if err != nil || facts.TeamPermission != hubmesh.PermWrite || !facts.RepoPrivate || facts.Namespace.Kind != KindOrg {
		t.Fatalf("facts after restore %+v, %v", facts, err)
	}
	if tok, err := dst.f.token("tok1"); err != nil || tok.User != "bob" {
		t.Fatalf("token after restore %+v, %v", tok, err)
	}
	if keys, _ := dst.f.signingKeys(); len(keys) != 2 {
		t.Fatalf("keys after restore %+v", keys)
	}
	if s, _ := dst.f.settings(); !s.OpenSignup {
		t.Fatal("settings lost in restore")
	}
	// The restored state keeps working: the audit counter and repo counts.
	dst.index = src.index
	dst.mustApply(&AppendAudit{Events: []hubmesh.AuditEvent{auditEvent(3)}})
	if v := readU64([]byte(dst.dump()[string(keyCountAudit)])); v != 3 {
		t.Fatalf("audit count after restore and append %d", v)
	}
	dst.mustApply(&DeleteOrg{Name: "acme"})
	if r, m, _, _ := dst.f.counts(); r != 0 || m != 0 {
		t.Fatalf("counts after deleting the only org: %d repos %d manifests", r, m)
	}
}

func TestFSMTokensPerUserBounded(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateUser{User: testUser("bob")})
	logs := make([]*raft.Log, 0, maxTokensPerUser)
	for i := range maxTokensPerUser {
		logs = append(logs, h.entry(&CreateToken{Token: testToken(fmt.Sprint("t", i), "bob", t0)}))
	}
	for i, res := range h.f.ApplyBatch(logs) { // one batch: one commit
		if err, ok := res.(error); ok {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	mustErr(t, "one token too many", h.applyErr(&CreateToken{Token: testToken("last", "bob", t0)}), hubmesh.ErrInvalid)
	h.mustApply(&DeleteToken{ID: "t7"})
	h.mustApply(&CreateToken{Token: testToken("last", "bob", t0)})
}

func TestFSMNameFreeRefusesNamespaceWithRepositories(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateUser{User: testUser("alice")})
	for _, name := range []string{"library/x", "acme/api", "lib/y"} {
		h.mustApply(&CreateRepository{Repository: hubmesh.Repository{Namespace: hubmesh.RepoOf(name), Name: name, Created: t0, Updated: t0}})
	}
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{"user over cache namespace", &CreateUser{User: testUser("library")}, hubmesh.ErrExists},
		{"org over federated namespace", &CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}}, hubmesh.ErrExists},
		{"user with empty namespace", &CreateUser{User: testUser("libr")}, nil},
		{"org with empty namespace", &CreateOrg{Org: hubmesh.Org{Name: "acm", Owner: "alice", Created: t0}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == nil {
				h.mustApply(tt.cmd)
				return
			}
			err := h.applyErr(tt.cmd)
			mustErr(t, tt.name, err, tt.want)
			if !strings.Contains(err.Error(), "holds repositories") {
				t.Fatalf("error %q does not say the namespace holds repositories", err)
			}
		})
	}
}
