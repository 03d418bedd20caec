package consensus

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// TestNodeAccounts drives the account API of a one-voter cluster over real
// TCP, then restarts it from a snapshot plus log and reads everything back.
func TestNodeAccounts(t *testing.T) {
	tn := newTCPNet()
	dir := t.TempDir()
	ctx := t.Context()
	n := openNode(t, testConfig(t, dir, tn.listen(t, "node-1")))
	waitLeader(t, n)

	if keys, err := n.SigningKeys(ctx); err != nil || len(keys) != 0 {
		t.Fatalf("keys before bootstrap = %v, %v", keys, err)
	}
	if err := n.Bootstrap(ctx, testUser("root"), testKey("k1", t0)); err != nil {
		t.Fatal(err)
	}
	mustErr(t, "bootstrap twice", n.Bootstrap(ctx, testUser("root2"), testKey("k2", t0)), hubmesh.ErrExists)
	for _, u := range []string{"alice", "bob"} {
		if err := n.CreateUser(ctx, testUser(u)); err != nil {
			t.Fatal(err)
		}
	}
	mustErr(t, "create user twice", n.CreateUser(ctx, testUser("bob")), hubmesh.ErrExists)
	mustErr(t, "bad name", n.CreateUser(ctx, testUser("-bob")), hubmesh.ErrInvalid)
	if root, err := n.User(ctx, "root"); err != nil || !root.Admin {
		t.Fatalf("root = %+v, %v", root, err)
	}
	email := "bob@example.org"
	u, err := n.UpdateUser(ctx, "bob", hubmesh.UserUpdate{Email: &email})
	if err != nil || u.Email != email || u.Name != "bob" {
		t.Fatalf("update = %+v, %v", u, err)
	}
	if users, err := n.Users(ctx, hubmesh.Page{N: 2}); err != nil || len(users) != 2 || users[0].Name != "alice" || users[1].Name != "bob" {
		t.Fatalf("users = %+v, %v", users, err)
	}

	// Organization, team, grant, and a push into its private namespace.
	if err := n.CreateOrg(ctx, hubmesh.Org{Name: "acme", Owner: "alice", Created: t0}); err != nil {
		t.Fatal(err)
	}
	if err := n.CreateTeam(ctx, hubmesh.Team{Org: "acme", Name: "dev", Members: []string{"ignored"}}); err != nil {
		t.Fatal(err)
	}
	if err := n.AddTeamMember(ctx, "acme", "dev", "bob"); err != nil {
		t.Fatal(err)
	}
	if err := n.SetTeamPermission(ctx, "acme", "dev", "acme/api", hubmesh.PermWrite); err != nil {
		t.Fatal(err)
	}
	if err := n.SetNamespace(ctx, hubmesh.Namespace{Name: "acme", DefaultPrivate: true}); err != nil {
		t.Fatal(err)
	}
	if ns, err := n.Namespace(ctx, "acme"); err != nil || ns != (hubmesh.Namespace{Name: "acme", Kind: KindOrg, DefaultPrivate: true}) {
		t.Fatalf("namespace = %+v, %v", ns, err)
	}
	layer := blobDesc("layer")
	if err := n.LinkBlob(ctx, "acme/api", layer); err != nil {
		t.Fatal(err)
	}
	if err := n.PutManifest(ctx, imageManifest("acme/api", "v1", layer), []string{"1.0"}); err != nil {
		t.Fatal(err)
	}
	facts, err := n.AccessFacts(ctx, "bob", "acme/api")
	want := hubmesh.AccessFacts{User: "bob", UserExists: true, Namespace: hubmesh.Namespace{Name: "acme", Kind: KindOrg, DefaultPrivate: true},
		TeamPermission: hubmesh.PermWrite, RepoExists: true, RepoPrivate: true}
	if err != nil || facts != want {
		t.Fatalf("facts = %+v, %v\nwant %+v", facts, err, want)
	}
	if facts, err := n.AccessFacts(ctx, "", "acme/api"); err != nil || facts.UserExists || !facts.RepoPrivate {
		t.Fatalf("anonymous facts = %+v, %v", facts, err)
	}
	no := false
	repo, err := n.UpdateRepository(ctx, "acme/api", hubmesh.RepositoryUpdate{IsPrivate: &no, At: created.Add(time.Hour)})
	if err != nil || repo.IsPrivate || repo.Namespace != "acme" || !repo.Updated.Equal(created.Add(time.Hour)) {
		t.Fatalf("update repository = %+v, %v", repo, err)
	}
	if err := n.CreateRepository(ctx, hubmesh.Repository{Name: "alice/empty", Created: t0}); err != nil {
		t.Fatal(err)
	}
	if r, err := n.Repository(ctx, "alice/empty"); err != nil || r.Namespace != "alice" || !r.Updated.Equal(t0) {
		t.Fatalf("created repository = %+v, %v", r, err)
	}
	if orgs, err := n.OrgsOf(ctx, "bob"); err != nil || strings.Join(orgs, ",") != "acme" {
		t.Fatalf("orgs of bob = %v, %v", orgs, err)
	}
	if orgs, err := n.Orgs(ctx, hubmesh.Page{}); err != nil || len(orgs) != 1 || orgs[0].Owner != "alice" {
		t.Fatalf("orgs = %+v, %v", orgs, err)
	}

	// Tokens, last use, keys, settings, audit.
	if err := n.CreateToken(ctx, testToken("tok1", "bob", t0)); err != nil {
		t.Fatal(err)
	}
	if err := n.TouchTokens(ctx, map[string]time.Time{"tok1": t0.Add(time.Hour), "nope": t0}); err != nil {
		t.Fatal(err)
	}
	if err := n.TouchTokens(ctx, nil); err != nil {
		t.Fatal(err)
	}
	many := map[string]time.Time{"tok1": t0.Add(2 * time.Hour)}
	for i := range MaxTouchTokens + 10 { // two commands
		many[fmt.Sprint("gone", i)] = t0
	}
	before := n.Stats().AppliedIndex
	if err := n.TouchTokens(ctx, many); err != nil {
		t.Fatal(err)
	}
	if d := n.Stats().AppliedIndex - before; d < 2 {
		t.Fatalf("TouchTokens of %d tokens took %d commands, want 2", len(many), d)
	}
	if tok, err := n.Token(ctx, "tok1"); err != nil || !tok.LastUsed.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("token = %+v, %v", tok, err)
	}
	if err := n.AddSigningKey(ctx, testKey("k2", t0.Add(time.Hour)), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := n.SetSettings(ctx, hubmesh.Settings{OpenSignup: true}); err != nil {
		t.Fatal(err)
	}
	evs := make([]hubmesh.AuditEvent, MaxAuditBatch+500) // at least two commands
	for i := range evs {
		evs[i] = auditEvent(i)
		if i >= MaxAuditBatch {
			evs[i].Detail = strings.Repeat("d", maxAuditDetailLen) // and a split by size
		}
	}
	before = n.Stats().AppliedIndex
	if err := n.AppendAudit(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if d := n.Stats().AppliedIndex - before; d < 3 {
		t.Fatalf("AppendAudit of 500 large events after 1000 small ones took %d commands", d)
	}
	if page, err := n.Audit(ctx, hubmesh.Page{Last: evs[1200].ID, N: 10}); err != nil || len(page) != 10 || page[0].ID != evs[1201].ID {
		t.Fatalf("audit page = %d events, %v", len(page), err)
	}

	// Snapshot, write more, restart: snapshot and log replay keep it all.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteToken(ctx, "tok1"); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, testConfig(t, dir, tn.listen(t, "node-1")))
	waitLeader(t, n)
	if facts, err := n.AccessFacts(ctx, "bob", "acme/api"); err != nil || facts.TeamPermission != hubmesh.PermWrite || facts.RepoPrivate {
		t.Fatalf("facts after restart = %+v, %v", facts, err)
	}
	if _, err := n.Token(ctx, "tok1"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("deleted token after restart: %v", err)
	}
	if keys, err := n.SigningKeys(ctx); err != nil || len(keys) != 2 || keys[0].ID != "k1" || keys[0].Retired.IsZero() {
		t.Fatalf("keys after restart = %+v, %v", keys, err)
	}
	if s, err := n.Settings(ctx); err != nil || !s.OpenSignup {
		t.Fatalf("settings after restart = %+v, %v", s, err)
	}
	if page, err := n.Audit(ctx, hubmesh.Page{}); err != nil || len(page) != len(evs) {
		t.Fatalf("audit after restart: %d events, %v", len(page), err)
	}

	// Deletes.
	mustErr(t, "delete last owner", n.DeleteUser(ctx, "alice"), hubmesh.ErrInvalid)
	if err := n.DeleteRepository(ctx, "acme/api"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetManifest(ctx, "acme/api", "1.0"); !errors.Is(err, hubmesh.ErrManifestUnknown) {
		t.Fatalf("manifest of a deleted repository: %v", err)
	}
	if perms, err := n.TeamPermissions(ctx, "acme", "dev"); err != nil || len(perms) != 0 {
		t.Fatalf("grants after deleting the repository = %v, %v", perms, err)
	}
	if err := n.DeleteTeam(ctx, "acme", "dev"); err != nil {
		t.Fatal(err)
	}
	if err := n.RemoveTeamMember(ctx, "acme", hubmesh.OwnersTeam, "alice"); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("remove the last owner: %v", err)
	}
	if err := n.DeleteOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Repository(ctx, "alice/empty"); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Fatalf("repository of a deleted user: %v", err)
	}
	if st := n.Stats(); st.Repositories != 0 || st.Manifests != 0 || st.Blobs != 1 {
		t.Fatalf("stats after the deletes %+v", st)
	}
}

// TestClusterAccounts: account writes through any node are visible through
// every other node on the next read, and results and refusals come back
// through forwarding.
func TestClusterAccounts(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := t.Context()
	leader, fs := c.leader()
	f1, f2 := fs[0], fs[1]

	// Bootstrap through a follower; the keys are visible at once elsewhere.
	if err := f1.Bootstrap(ctx, testUser("root"), testKey("k1", t0)); err != nil {
		t.Fatal(err)
	}
	if keys, err := f2.SigningKeys(ctx); err != nil || len(keys) != 1 || keys[0].ID != "k1" {
		t.Fatalf("keys through the other follower = %+v, %v", keys, err)
	}
	mustErr(t, "bootstrap again through a follower", f2.Bootstrap(ctx, testUser("root"), testKey("k2", t0)), hubmesh.ErrExists)

	for i := range 6 {
		writer, reader := fs[i%2], fs[(i+1)%2]
		name := fmt.Sprint("user", i)
		if err := writer.CreateUser(ctx, testUser(name)); err != nil {
			t.Fatalf("create %s through %s: %v", name, writer.ID(), err)
		}
		if u, err := reader.User(ctx, name); err != nil || u.Name != name {
			t.Fatalf("user %s through %s right after the create: %+v, %v", name, reader.ID(), u, err)
		}
		// A login right after signup elsewhere: the facts know the user.
		name = fmt.Sprint("login", i)
		if err := reader.CreateUser(ctx, testUser(name)); err != nil {
			t.Fatal(err)
		}
		if facts, err := writer.AccessFacts(ctx, name, name+"/app"); err != nil || !facts.UserExists || !facts.NamespaceUser {
			t.Fatalf("facts of %s through %s right after the create: %+v, %v", name, writer.ID(), facts, err)
		}
	}
	if u, err := leader.User(ctx, "user1"); err != nil || u.Name != "user1" {
		t.Fatalf("user on the leader = %+v, %v", u, err)
	}
	mustErr(t, "forwarded create of a taken name", f1.CreateUser(ctx, testUser("user0")), hubmesh.ErrExists)

	// Results come back through forwarding.
	yes := true
	u, err := f2.UpdateUser(ctx, "user0", hubmesh.UserUpdate{Admin: &yes})
	if err != nil || !u.Admin || u.Name != "user0" || !reflect.DeepEqual(u.Created, t0) {
		t.Fatalf("forwarded update = %+v, %v", u, err)
	}
	if err := f1.CreateOrg(ctx, hubmesh.Org{Name: "acme", Owner: "user1"}); err != nil {
		t.Fatal(err)
	}
	if team, err := f2.Team(ctx, "acme", hubmesh.OwnersTeam); err != nil || strings.Join(team.Members, ",") != "user1" {
		t.Fatalf("owners through the other follower = %+v, %v", team, err)
	}
	mustErr(t, "forwarded removal of the last owner", f2.RemoveTeamMember(ctx, "acme", hubmesh.OwnersTeam, "user1"), hubmesh.ErrInvalid)
	if err := f1.CreateRepository(ctx, hubmesh.Repository{Name: "acme/api", IsPrivate: true, Created: t0}); err != nil {
		t.Fatal(err)
	}
	if r, err := f2.Repository(ctx, "acme/api"); err != nil || !r.IsPrivate {
		t.Fatalf("repository through the other follower = %+v, %v", r, err)
	}
	desc := "the API"
	r, err := f2.UpdateRepository(ctx, "acme/api", hubmesh.RepositoryUpdate{Description: &desc, At: t0.Add(time.Hour)})
	if err != nil || r.Description != desc || !r.IsPrivate || r.Name != "acme/api" {
		t.Fatalf("forwarded repository update = %+v, %v", r, err)
	}
	if _, err := f1.UpdateRepository(ctx, "acme/none", hubmesh.RepositoryUpdate{Description: &desc}); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Fatalf("forwarded update of an unknown repository: %v", err)
	}
	if err := f1.CreateToken(ctx, testToken("tok1", "user0", t0)); err != nil {
		t.Fatal(err)
	}
	if tok, err := f2.Token(ctx, "tok1"); err != nil || tok.User != "user0" {
		t.Fatalf("token through the other follower = %+v, %v", tok, err)
	}
	if toks, err := f2.Tokens(ctx, "user0"); err != nil || len(toks) != 1 {
		t.Fatalf("tokens through the other follower = %+v, %v", toks, err)
	}
	if err := f2.DeleteRepository(ctx, "acme/api"); err != nil {
		t.Fatal(err)
	}
	// A delete reaches the others by replication: a local hit does not
	// wait for a barrier (as with manifests).
	if err := f1.WaitApplied(ctx, leader.Stats().AppliedIndex); err != nil {
		t.Fatal(err)
	}
	if _, err := f1.Repository(ctx, "acme/api"); !errors.Is(err, hubmesh.ErrRepoUnknown) {
		t.Fatalf("deleted repository through the other follower: %v", err)
	}
	// A real miss stays a miss (after one barrier), and names nobody has
	// are not errors.
	if ns, err := f1.Namespace(ctx, "nobody"); err != nil || ns.Kind != "" {
		t.Fatalf("namespace nobody = %+v, %v", ns, err)
	}
	if facts, err := f1.AccessFacts(ctx, "ghost", "ghost/app"); err != nil || facts.UserExists || facts.RepoExists {
		t.Fatalf("facts of a ghost = %+v, %v", facts, err)
	}
}
