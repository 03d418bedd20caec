package consensus

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hubmesh/hubmesh"
)

// The account API of a Node. Writes are commands proposed through Apply
// (forwarded to the leader from a follower). Reads are served from the
// local FSM; reads of one named thing (User, Token, Org, Team, Repository,
// ...) that miss on a follower wait for a read barrier and read again
// (readFresh), so that a write acknowledged through another node is
// visible on the next request. Listings answer from the local state.

// Bootstrap creates the first site administrator (Admin forced on) and the
// first token signing key in one command. It fails with an error wrapping
// hubmesh.ErrExists when the cluster already has a signing key (it was
// bootstrapped before) or admin's name is taken.
func (n *Node) Bootstrap(ctx context.Context, admin hubmesh.User, key hubmesh.SigningKey) error {
	return n.propose(ctx, &Bootstrap{Admin: admin, Key: key})
}

// CreateUser creates u. It fails with an error wrapping hubmesh.ErrExists
// when a user or an organization has the name, and hubmesh.ErrInvalid on a
// malformed name or oversized field.
func (n *Node) CreateUser(ctx context.Context, u hubmesh.User) error {
	return n.propose(ctx, &CreateUser{User: u})
}

// UpdateUser changes the fields of user name that upd sets and returns the
// user as updated; an unknown user wraps hubmesh.ErrNotFound. A new
// password hash needs upd.At, which becomes PasswordChanged.
func (n *Node) UpdateUser(ctx context.Context, name string, upd hubmesh.UserUpdate) (hubmesh.User, error) {
	return applyAs[hubmesh.User](ctx, n, &UpdateUser{Name: name, Update: upd})
}

// DeleteUser removes user name with its access tokens, team memberships,
// namespace settings and every repository of its namespace. It fails with
// an error wrapping hubmesh.ErrInvalid while the user is the last owner of
// an organization, and hubmesh.ErrNotFound for an unknown user.
func (n *Node) DeleteUser(ctx context.Context, name string) error {
	return n.propose(ctx, &DeleteUser{Name: name})
}

// User returns the user name, or an error wrapping hubmesh.ErrNotFound.
func (n *Node) User(ctx context.Context, name string) (hubmesh.User, error) {
	return readFresh(ctx, n, func() (hubmesh.User, error) { return n.fsm.user(name) }, notFound)
}

// Users lists users in name order, page p of them.
func (n *Node) Users(ctx context.Context, p hubmesh.Page) ([]hubmesh.User, error) {
	return listPage[hubmesh.User](n.fsm, prefixUser, p)
}

// CreateToken stores t, an access token of an existing user (else
// hubmesh.ErrNotFound). A user holds at most 1000 tokens.
func (n *Node) CreateToken(ctx context.Context, t hubmesh.AccessToken) error {
	return n.propose(ctx, &CreateToken{Token: t})
}

// Token returns the access token id, or an error wrapping
// hubmesh.ErrNotFound.
func (n *Node) Token(ctx context.Context, id string) (hubmesh.AccessToken, error) {
	return readFresh(ctx, n, func() (hubmesh.AccessToken, error) { return n.fsm.token(id) }, notFound)
}

// Tokens lists the access tokens of user, oldest first. A user without
// tokens (or an unknown user) has none; a follower checks with the leader
// before saying so.
func (n *Node) Tokens(ctx context.Context, user string) ([]hubmesh.AccessToken, error) {
	return readFresh(ctx, n, func() ([]hubmesh.AccessToken, error) { return n.fsm.tokens(user) }, emptyList)
}

// DeleteToken removes the access token id; an unknown one wraps
// hubmesh.ErrNotFound.
func (n *Node) DeleteToken(ctx context.Context, id string) error {
	return n.propose(ctx, &DeleteToken{ID: id})
}

// TouchTokens raises the LastUsed time of each token in used (it never goes
// back); unknown ids are ignored. It proposes one command per
// MaxTouchTokens tokens, none for an empty map.
func (n *Node) TouchTokens(ctx context.Context, used map[string]time.Time) error {
	return applyInBatches(ctx, n, used, MaxTouchTokens, func(b map[string]time.Time) Command { return &TouchTokens{Used: b} })
}

// CreateOrg creates the organization o with its owners team, whose only
// member is o.Owner (an existing user, else hubmesh.ErrNotFound). It fails
// with an error wrapping hubmesh.ErrExists when a user or an organization
// has the name.
func (n *Node) CreateOrg(ctx context.Context, o hubmesh.Org) error {
	return n.propose(ctx, &CreateOrg{Org: o})
}

// DeleteOrg removes the organization name with its teams, their grants,
// its namespace settings and every repository of its namespace.
func (n *Node) DeleteOrg(ctx context.Context, name string) error {
	return n.propose(ctx, &DeleteOrg{Name: name})
}

// Org returns the organization name, or an error wrapping
// hubmesh.ErrNotFound.
func (n *Node) Org(ctx context.Context, name string) (hubmesh.Org, error) {
	return readFresh(ctx, n, func() (hubmesh.Org, error) { return n.fsm.org(name) }, notFound)
}

// Orgs lists organizations in name order, page p of them.
func (n *Node) Orgs(ctx context.Context, p hubmesh.Page) ([]hubmesh.Org, error) {
	return listPage[hubmesh.Org](n.fsm, prefixOrg, p)
}

// OrgsOf lists, in name order, the organizations in which user is a member
// of any team.
func (n *Node) OrgsOf(ctx context.Context, user string) ([]string, error) {
	return n.fsm.orgsOf(user)
}

// CreateTeam creates team t.Name in the existing organization t.Org (else
// hubmesh.ErrNotFound); t.Members is ignored. An existing team wraps
// hubmesh.ErrExists.
func (n *Node) CreateTeam(ctx context.Context, t hubmesh.Team) error {
	t.Members = nil
	return n.propose(ctx, &CreateTeam{Team: t})
}

// DeleteTeam removes a team with its memberships and grants. The owners
// team cannot be deleted (hubmesh.ErrInvalid).
func (n *Node) DeleteTeam(ctx context.Context, org, team string) error {
	return n.propose(ctx, &DeleteTeam{Org: org, Team: team})
}

// Team returns a team with its members (sorted), or an error wrapping
// hubmesh.ErrNotFound.
func (n *Node) Team(ctx context.Context, org, team string) (hubmesh.Team, error) {
	return readFresh(ctx, n, func() (hubmesh.Team, error) { return n.fsm.team(org, team) }, notFound)
}

// Teams lists the teams of org in name order, with their members; an
// unknown organization wraps hubmesh.ErrNotFound.
func (n *Node) Teams(ctx context.Context, org string) ([]hubmesh.Team, error) {
	return readFresh(ctx, n, func() ([]hubmesh.Team, error) { return n.fsm.teams(org) }, notFound)
}

// AddTeamMember adds the existing user to a team (idempotent).
func (n *Node) AddTeamMember(ctx context.Context, org, team, user string) error {
	return n.propose(ctx, &AddTeamMember{Org: org, Team: team, User: user})
}

// RemoveTeamMember removes user from a team. Removing the last owner of an
// organization fails with an error wrapping hubmesh.ErrInvalid; a user who
// is not a member, hubmesh.ErrNotFound.
func (n *Node) RemoveTeamMember(ctx context.Context, org, team, user string) error {
	return n.propose(ctx, &RemoveTeamMember{Org: org, Team: team, User: user})
}

// SetTeamPermission grants team p on repo, which must be in org's
// namespace (it need not exist yet); hubmesh.PermNone removes the grant.
func (n *Node) SetTeamPermission(ctx context.Context, org, team, repo string, p hubmesh.Permission) error {
	return n.propose(ctx, &SetTeamPermission{Org: org, Team: team, Repo: repo, Permission: p})
}

// TeamPermissions returns the grants of a team by repository; an unknown
// team wraps hubmesh.ErrNotFound.
func (n *Node) TeamPermissions(ctx context.Context, org, team string) (map[string]hubmesh.Permission, error) {
	return readFresh(ctx, n, func() (map[string]hubmesh.Permission, error) { return n.fsm.teamPermissions(org, team) }, notFound)
}

// CreateRepository creates the record of r before its first push. An
// empty r.Namespace is taken from r.Name; an empty r.Updated is r.Created.
// An existing repository wraps hubmesh.ErrExists.
func (n *Node) CreateRepository(ctx context.Context, r hubmesh.Repository) error {
	if r.Namespace == "" {
		r.Namespace = hubmesh.RepoOf(r.Name)
	}
	if r.Updated.IsZero() {
		r.Updated = r.Created
	}
	return n.propose(ctx, &CreateRepository{Repository: r, Actor: actorOf(ctx)})
}

// UpdateRepository changes the settings of repository name that upd sets
// and returns the repository as updated; an unknown repository wraps
// hubmesh.ErrRepoUnknown.
func (n *Node) UpdateRepository(ctx context.Context, name string, upd hubmesh.RepositoryUpdate) (hubmesh.Repository, error) {
	return applyAs[hubmesh.Repository](ctx, n, &UpdateRepository{Name: name, Update: upd})
}

// DeleteRepository removes repository name with its manifests, tags,
// referrers, blob links and team grants; blob records stay. An unknown
// repository wraps hubmesh.ErrRepoUnknown.
func (n *Node) DeleteRepository(ctx context.Context, name string) error {
	return n.propose(ctx, &DeleteRepository{Name: name, At: time.Now().UTC(), Actor: actorOf(ctx)})
}

// Repository returns the settings of repository name, or an error wrapping
// hubmesh.ErrRepoUnknown.
func (n *Node) Repository(ctx context.Context, name string) (hubmesh.Repository, error) {
	return readFresh(ctx, n, func() (hubmesh.Repository, error) { return n.fsm.repository(name) }, notFound)
}

// SetNamespace sets the settings (DefaultPrivate) of the namespace of a
// user or organization; ns.Kind is ignored. A name nobody owns wraps
// hubmesh.ErrNotFound.
func (n *Node) SetNamespace(ctx context.Context, ns hubmesh.Namespace) error {
	return n.propose(ctx, &SetNamespace{Namespace: ns})
}

// Namespace describes the namespace name. A name that no user or
// organization has is not an error: its Kind is "".
func (n *Node) Namespace(ctx context.Context, name string) (hubmesh.Namespace, error) {
	return readFresh(ctx, n, func() (hubmesh.Namespace, error) { return n.fsm.namespace(name) },
		func(ns hubmesh.Namespace, err error) bool { return err == nil && ns.Kind == "" && validName(name) })
}

// AccessFacts reads what the access policy needs about user ("" for
// anonymous) and repo, from one consistent snapshot of the local state.
// A malformed repository name wraps hubmesh.ErrInvalid; a malformed user
// name is a user that does not exist.
//
// It runs on every registry request. It waits for a read barrier when
// the named user or the repository is missing locally (a user or a private
// repository just created through another node must be seen at once); on
// the leader it never waits. The cost falls on followers: the requests of
// a first push through a follower, and requests for absent repositories
// (whose manifest reads wait for a barrier anyway), each take one leader
// round trip.
func (n *Node) AccessFacts(ctx context.Context, user, repo string) (hubmesh.AccessFacts, error) {
	return readFresh(ctx, n, func() (hubmesh.AccessFacts, error) { return n.fsm.accessFacts(user, repo) },
		func(f hubmesh.AccessFacts, err error) bool {
			// A repository missing here may just have been created (private)
			// through another node: deciding from the namespace default
			// could show its content, which the manifest read would then
			// find after its own barrier. So a miss checks with the leader,
			// like a miss of a named user does. The leader never waits.
			return err == nil && (!f.RepoExists || (user != "" && !f.UserExists && validName(user)))
		})
}

// AddSigningKey adds k as the active token signing key: every other active
// key is retired at at, and keys retired before at-SigningKeyRetention are
// deleted. An existing key id wraps hubmesh.ErrExists.
func (n *Node) AddSigningKey(ctx context.Context, k hubmesh.SigningKey, at time.Time) error {
	return n.propose(ctx, &AddSigningKey{Key: k, At: at})
}

// SigningKeys lists the token signing keys, oldest (by Created) first.
// None before Bootstrap; a follower checks with the leader before saying so.
func (n *Node) SigningKeys(ctx context.Context) ([]hubmesh.SigningKey, error) {
	return readFresh(ctx, n, n.fsm.signingKeys, emptyList)
}

// SetSettings replaces the cluster-wide account settings.
func (n *Node) SetSettings(ctx context.Context, s hubmesh.Settings) error {
	return n.propose(ctx, &SetSettings{Settings: s})
}

// Settings returns the cluster-wide account settings (zero until set).
func (n *Node) Settings(ctx context.Context) (hubmesh.Settings, error) {
	return n.fsm.settings()
}

// AppendAudit appends audit events, in as few commands as the limits of
// one command allow (MaxAuditBatch events, and a bound on their bytes).
// Ids (time-ordered) are set by the caller; an id already present is
// skipped, so a retry is safe. The state keeps the newest MaxAuditEvents
// events.
func (n *Node) AppendAudit(ctx context.Context, evs []hubmesh.AuditEvent) error {
	for len(evs) > 0 {
		end, size := 0, 0
		for end < len(evs) && end < MaxAuditBatch {
			size += auditSize(&evs[end])
			if size > maxAuditBatchBytes && end > 0 {
				break
			}
			end++
		}
		if err := n.propose(ctx, &AppendAudit{Events: evs[:end]}); err != nil {
			return err
		}
		evs = evs[end:]
	}
	return nil
}

// Audit lists audit events in id (time) order: at most p.N after the id
// p.Last.
func (n *Node) Audit(ctx context.Context, p hubmesh.Page) ([]hubmesh.AuditEvent, error) {
	return listPage[hubmesh.AuditEvent](n.fsm, prefixAudit, p)
}

// resultAs converts the result of an applied command to T.
func resultAs[T any](t Type, res any) (T, error) {
	v, ok := res.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("apply %v: %w: unexpected result %T", t, hubmesh.ErrUnavailable, res)
	}
	return v, nil
}

// propose applies c and keeps only its error: for commands whose result
// is nil.
func (n *Node) propose(ctx context.Context, c Command) error {
	_, err := n.Apply(ctx, c)
	return err
}

// applyAs applies c and converts its result to T.
func applyAs[T any](ctx context.Context, n *Node, c Command) (T, error) {
	res, err := n.Apply(ctx, c)
	if err != nil {
		var zero T
		return zero, err
	}
	return resultAs[T](c.Type(), res)
}

// applyInBatches proposes the entries of m in commands of at most max
// entries, which cmd makes of each batch; none for an empty map.
func applyInBatches[V any](ctx context.Context, n *Node, m map[string]V, size int, cmd func(batch map[string]V) Command) error {
	batch := make(map[string]V, min(len(m), size))
	for k, v := range m {
		batch[k] = v
		if len(batch) == size {
			if err := n.propose(ctx, cmd(batch)); err != nil {
				return err
			}
			batch = make(map[string]V, size)
		}
	}
	if len(batch) == 0 {
		return nil
	}
	return n.propose(ctx, cmd(batch))
}

// emptyList is the miss test of listings that are empty when nothing is
// known yet.
func emptyList[T any](v []T, err error) bool { return err == nil && len(v) == 0 }

// readJSON decodes the value of k into v and reports whether it exists.
func readJSON(r reader, k []byte, v any) (bool, error) {
	raw, ok, err := getValue(r, k)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("corrupt value of %q: %w", k, err)
	}
	return true, nil
}

// has reports whether k exists.
func has(r reader, k []byte) (bool, error) {
	_, ok, err := getValue(r, k)
	return ok, err
}

// mustHave fails with notFound when k does not exist.
func mustHave(r reader, k []byte, notFound error) error {
	ok, err := has(r, k)
	if err == nil && !ok {
		err = notFound
	}
	return err
}

// suffixes lists the key suffixes under pre in key order: page p of them,
// p.Last being the suffix of the last one of the previous page (the zero
// Page: all of them).
func suffixes(r reader, pre []byte, p hubmesh.Page) ([]string, error) {
	out := []string{}
	var from []byte
	if p.Last != "" {
		from = after(append(bytes.Clone(pre), p.Last...))
	}
	err := scan(r, pre, from, p.N, func(k, _ []byte) error {
		out = append(out, string(k[len(pre):]))
		return nil
	})
	return out, err
}

// readSuffixes lists the key suffixes under pre in the current state, as
// suffixes does.
func (f *stateMachine) readSuffixes(pre []byte, p hubmesh.Page) ([]string, error) {
	var out []string
	err := f.read(func(r reader) (err error) {
		out, err = suffixes(r, pre, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readFound runs read on one snapshot, failing with notFound when what it
// reads is absent.
func readFound[T any](f *stateMachine, read func(r reader) (T, bool, error), notFound error) (T, error) {
	var v T
	err := f.readSnapshot(func(r reader) error {
		var ok bool
		var err error
		v, ok, err = read(r)
		if err == nil && !ok {
			err = notFound
		}
		return err
	})
	return v, err
}

// readSnapshot runs fn against one pebble snapshot, so that its reads are
// consistent with each other.
func (f *stateMachine) readSnapshot(fn func(r reader) error) error {
	return f.read(func(_ reader) error {
		s := f.db.NewSnapshot()
		defer s.Close()
		return fn(s)
	})
}

// getOne reads one JSON record, failing with notFound when it is absent.
func getOne[T any](f *stateMachine, k []byte, notFound error) (T, error) {
	var v T
	err := f.read(func(r reader) error {
		ok, err := readJSON(r, k, &v)
		if err == nil && !ok {
			err = notFound
		}
		return err
	})
	return v, err
}

// listPage decodes the JSON values under prefix, page p of them, where
// p.Last is the key suffix of the last entry of the previous page.
func listPage[T any](f *stateMachine, prefix []byte, p hubmesh.Page) ([]T, error) {
	out := []T{}
	err := f.read(func(r reader) error {
		var from []byte
		if p.Last != "" {
			from = after(key(prefix, p.Last))
		}
		return scan(r, prefix, from, p.N, func(k, v []byte) error {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return fmt.Errorf("corrupt value of %q: %w", k, err)
			}
			out = append(out, x)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (f *stateMachine) user(name string) (hubmesh.User, error) {
	if err := checkName("user", name); err != nil {
		return hubmesh.User{}, err
	}
	return getOne[hubmesh.User](f, userKey(name), fmt.Errorf("user %s: %w", name, hubmesh.ErrNotFound))
}

func (f *stateMachine) token(id string) (hubmesh.AccessToken, error) {
	if err := checkTokenID(id); err != nil {
		return hubmesh.AccessToken{}, err
	}
	return getOne[hubmesh.AccessToken](f, accessTokenKey(id), fmt.Errorf("token %s: %w", id, hubmesh.ErrNotFound))
}

func (f *stateMachine) tokens(user string) ([]hubmesh.AccessToken, error) {
	if err := checkName("user", user); err != nil {
		return nil, err
	}
	out := []hubmesh.AccessToken{}
	err := f.readSnapshot(func(r reader) error {
		ids, err := suffixes(r, scope(prefixUserToken, user), hubmesh.Page{})
		if err != nil {
			return err
		}
		for _, id := range ids {
			var t hubmesh.AccessToken
			ok, err := readJSON(r, accessTokenKey(id), &t)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, t)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b hubmesh.AccessToken) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func (f *stateMachine) org(name string) (hubmesh.Org, error) {
	if err := checkName("organization", name); err != nil {
		return hubmesh.Org{}, err
	}
	return getOne[hubmesh.Org](f, orgKey(name), fmt.Errorf("organization %s: %w", name, hubmesh.ErrNotFound))
}

func (f *stateMachine) orgsOf(user string) ([]string, error) {
	if err := checkName("user", user); err != nil {
		return nil, err
	}
	out := []string{}
	err := f.read(func(r reader) error {
		pre := scope(prefixUserTeam, user)
		return scan(r, pre, nil, 0, func(k, _ []byte) error {
			org, _ := split2(string(k[len(pre):]))
			if len(out) == 0 || out[len(out)-1] != org {
				out = append(out, org)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readTeam reads a team with its members; ok is false when it is absent.
func readTeam(r reader, org, team string) (hubmesh.Team, bool, error) {
	var rec teamRecord
	ok, err := readJSON(r, teamKey(org, team), &rec)
	if err != nil || !ok {
		return hubmesh.Team{}, false, err
	}
	t := hubmesh.Team{Org: org, Name: team, Description: rec.Description}
	t.Members, err = suffixes(r, scope(prefixTeamMember, org, team), hubmesh.Page{})
	return t, true, err
}

func (f *stateMachine) team(org, team string) (hubmesh.Team, error) {
	if err := checkTeamRef(org, team); err != nil {
		return hubmesh.Team{}, err
	}
	return readFound(f, func(r reader) (hubmesh.Team, bool, error) { return readTeam(r, org, team) },
		fmt.Errorf("team %s/%s: %w", org, team, hubmesh.ErrNotFound))
}

func (f *stateMachine) teams(org string) ([]hubmesh.Team, error) {
	if err := checkName("organization", org); err != nil {
		return nil, err
	}
	out := []hubmesh.Team{}
	err := f.readSnapshot(func(r reader) error {
		if err := mustHave(r, orgKey(org), fmt.Errorf("organization %s: %w", org, hubmesh.ErrNotFound)); err != nil {
			return err
		}
		names, err := suffixes(r, scope(prefixTeam, org), hubmesh.Page{})
		if err != nil {
			return err
		}
		for _, name := range names {
			t, ok, err := readTeam(r, org, name)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, t)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (f *stateMachine) teamPermissions(org, team string) (map[string]hubmesh.Permission, error) {
	if err := checkTeamRef(org, team); err != nil {
		return nil, err
	}
	out := map[string]hubmesh.Permission{}
	err := f.readSnapshot(func(r reader) error {
		if err := mustHave(r, teamKey(org, team), fmt.Errorf("team %s/%s: %w", org, team, hubmesh.ErrNotFound)); err != nil {
			return err
		}
		pre := scope(prefixGrant, org, team)
		return scan(r, pre, nil, 0, func(k, v []byte) error {
			p, err := hubmesh.ParsePermission(string(v))
			if err != nil {
				return fmt.Errorf("corrupt grant %q: %w", k, err)
			}
			out[string(k[len(pre):])] = p
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (f *stateMachine) repository(name string) (hubmesh.Repository, error) {
	if err := checkRepo(name); err != nil {
		return hubmesh.Repository{}, err
	}
	return readFound(f, func(r reader) (hubmesh.Repository, bool, error) { return readRepository(r, name) },
		fmt.Errorf("repository %s: %w", name, hubmesh.ErrRepoUnknown))
}

// readNamespace fills the kind and settings of namespace ns.
func readNamespace(r reader, ns string) (hubmesh.Namespace, error) {
	out := hubmesh.Namespace{Name: ns}
	if !validName(ns) {
		return out, nil // nobody can own it
	}
	if ok, err := has(r, userKey(ns)); err != nil {
		return out, err
	} else if ok {
		out.Kind = KindUser
	} else if ok, err := has(r, orgKey(ns)); err != nil {
		return out, err
	} else if ok {
		out.Kind = KindOrg
	}
	var rec nsRecord
	if _, err := readJSON(r, nsKey(ns), &rec); err != nil {
		return out, err
	}
	out.DefaultPrivate = rec.DefaultPrivate
	return out, nil
}

func (f *stateMachine) namespace(name string) (hubmesh.Namespace, error) {
	var ns hubmesh.Namespace
	err := f.readSnapshot(func(r reader) error {
		var err error
		ns, err = readNamespace(r, name)
		return err
	})
	return ns, err
}

func (f *stateMachine) accessFacts(user, repo string) (hubmesh.AccessFacts, error) {
	if err := checkRepo(repo); err != nil {
		return hubmesh.AccessFacts{}, err
	}
	facts := hubmesh.AccessFacts{User: user}
	err := f.readSnapshot(func(r reader) error {
		if user != "" && validName(user) {
			var u hubmesh.User
			ok, err := readJSON(r, userKey(user), &u)
			if err != nil {
				return err
			}
			facts.UserExists, facts.UserDisabled, facts.SiteAdmin = ok, u.Disabled, u.Admin
		}
		ns, err := readNamespace(r, hubmesh.RepoOf(repo))
		if err != nil {
			return err
		}
		facts.Namespace = ns
		facts.NamespaceUser = facts.UserExists && ns.Kind == KindUser && ns.Name == user
		if facts.UserExists && ns.Kind == KindOrg {
			if facts.OrgOwner, err = has(r, teamMemberKey(ns.Name, hubmesh.OwnersTeam, user)); err != nil {
				return err
			}
			// The user's teams in this organization, and their grants on repo.
			teams, err := suffixes(r, scope(prefixUserTeam, user, ns.Name), hubmesh.Page{})
			if err != nil {
				return err
			}
			for _, team := range teams {
				v, ok, err := getValue(r, grantKey(ns.Name, team, repo))
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				p, err := hubmesh.ParsePermission(string(v))
				if err != nil {
					return fmt.Errorf("corrupt grant of %s/%s on %s: %w", ns.Name, team, repo, err)
				}
				facts.TeamPermission = max(facts.TeamPermission, p)
			}
		}
		var rec repoRecord
		ok, err := readJSON(r, repoKey(repo), &rec)
		if err != nil {
			return err
		}
		facts.RepoExists, facts.RepoPrivate = ok, rec.IsPrivate
		return nil
	})
	if err != nil {
		return hubmesh.AccessFacts{}, err
	}
	return facts, nil
}

func (f *stateMachine) signingKeys() ([]hubmesh.SigningKey, error) {
	keys, err := listPage[hubmesh.SigningKey](f, prefixSigningKey, hubmesh.Page{})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(keys, func(a, b hubmesh.SigningKey) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return keys, nil
}

func (f *stateMachine) settings() (hubmesh.Settings, error) {
	return getOne[hubmesh.Settings](f, keySettings, nil)
}
