package registryapi

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
)

// fakeAccounts is a small real implementation of Accounts: maps under one
// lock, with the same rules as the consensus package where the API
// depends on them (names shared by users and orgs, owners team, last
// owner, grants within the org's namespace).
type fakeAccounts struct {
	mu       sync.Mutex
	users    map[string]hubmesh.User
	tokens   map[string]hubmesh.AccessToken
	orgs     map[string]hubmesh.Org
	teams    map[string]*hubmesh.Team                 // "org/team"
	grants   map[string]map[string]hubmesh.Permission // "org/team" -> repo -> p
	repos    map[string]hubmesh.Repository
	nsPriv   map[string]bool
	keys     []hubmesh.SigningKey
	settings hubmesh.Settings
	audit    []hubmesh.AuditEvent
	keyReads int
	// oci reports whether the OCI store holds repo: a push creates the
	// repository record in the product (PutManifest), so it exists here too.
	oci func(repo string) bool
}

func newFakeAccounts() *fakeAccounts {
	return &fakeAccounts{
		users: map[string]hubmesh.User{}, tokens: map[string]hubmesh.AccessToken{},
		orgs: map[string]hubmesh.Org{}, teams: map[string]*hubmesh.Team{},
		grants: map[string]map[string]hubmesh.Permission{}, repos: map[string]hubmesh.Repository{},
		nsPriv: map[string]bool{},
	}
}

func notFoundErr(what, name string) error {
	return fmt.Errorf("%s %q: %w", what, name, hubmesh.ErrNotFound)
}

func (f *fakeAccounts) User(_ context.Context, name string) (hubmesh.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[name]
	if !ok {
		return u, notFoundErr("user", name)
	}
	return u, nil
}

func (f *fakeAccounts) Token(_ context.Context, id string) (hubmesh.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tokens[id]
	if !ok {
		return t, notFoundErr("token", id)
	}
	return t, nil
}

func (f *fakeAccounts) namespaceLocked(name string) hubmesh.Namespace {
	ns := hubmesh.Namespace{Name: name, DefaultPrivate: f.nsPriv[name]}
	if _, ok := f.users[name]; ok {
		ns.Kind = "user"
	} else if _, ok := f.orgs[name]; ok {
		ns.Kind = "org"
	}
	return ns
}

func (f *fakeAccounts) AccessFacts(_ context.Context, user, repo string) (hubmesh.AccessFacts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fa := hubmesh.AccessFacts{User: user}
	if u, ok := f.users[user]; ok && user != "" {
		fa.UserExists, fa.UserDisabled, fa.SiteAdmin = true, u.Disabled, u.Admin
	}
	ns := hubmesh.RepoOf(repo)
	fa.Namespace = f.namespaceLocked(ns)
	fa.NamespaceUser = fa.Namespace.Kind == "user" && ns == user && user != ""
	if fa.Namespace.Kind == "org" {
		for key, t := range f.teams {
			if t.Org != ns || !slices.Contains(t.Members, user) {
				continue
			}
			if t.Name == hubmesh.OwnersTeam {
				fa.OrgOwner = true
			}
			fa.TeamPermission = max(fa.TeamPermission, f.grants[key][repo])
		}
	}
	if r, ok := f.repos[repo]; ok {
		fa.RepoExists, fa.RepoPrivate = true, r.IsPrivate
	} else if f.oci != nil && f.oci(repo) {
		fa.RepoExists, fa.RepoPrivate = true, f.nsPriv[ns]
	}
	return fa, nil
}

func (f *fakeAccounts) SigningKeys(context.Context) ([]hubmesh.SigningKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keyReads++
	return slices.Clone(f.keys), nil
}

func (f *fakeAccounts) CreateUser(_ context.Context, u hubmesh.User) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[u.Name]; ok {
		return fmt.Errorf("user %s: %w", u.Name, hubmesh.ErrExists)
	}
	if _, ok := f.orgs[u.Name]; ok {
		return fmt.Errorf("user %s: %w", u.Name, hubmesh.ErrExists)
	}
	f.users[u.Name] = u
	return nil
}

func (f *fakeAccounts) UpdateUser(_ context.Context, name string, upd hubmesh.UserUpdate) (hubmesh.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[name]
	if !ok {
		return u, notFoundErr("user", name)
	}
	if upd.Email != nil {
		u.Email = *upd.Email
	}
	if upd.PasswordHash != nil {
		u.PasswordHash, u.PasswordChanged = *upd.PasswordHash, upd.At
	}
	if upd.Admin != nil {
		u.Admin = *upd.Admin
	}
	if upd.Disabled != nil {
		u.Disabled = *upd.Disabled
	}
	f.users[name] = u
	return u, nil
}

func (f *fakeAccounts) DeleteUser(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[name]; !ok {
		return notFoundErr("user", name)
	}
	delete(f.users, name)
	for id, t := range f.tokens {
		if t.User == name {
			delete(f.tokens, id)
		}
	}
	for _, t := range f.teams {
		t.Members = slices.DeleteFunc(t.Members, func(m string) bool { return m == name })
	}
	for r := range f.repos {
		if hubmesh.RepoOf(r) == name {
			delete(f.repos, r)
		}
	}
	return nil
}

func (f *fakeAccounts) Users(_ context.Context, p hubmesh.Page) ([]hubmesh.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hubmesh.User
	for _, n := range slices.Sorted(maps.Keys(f.users)) {
		if n > p.Last && (p.N <= 0 || len(out) < p.N) {
			out = append(out, f.users[n])
		}
	}
	return out, nil
}

func (f *fakeAccounts) CreateToken(_ context.Context, t hubmesh.AccessToken) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[t.User]; !ok {
		return notFoundErr("user", t.User)
	}
	f.tokens[t.ID] = t
	return nil
}

func (f *fakeAccounts) Tokens(_ context.Context, user string) ([]hubmesh.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hubmesh.AccessToken
	for _, t := range f.tokens {
		if t.User == user {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeAccounts) DeleteToken(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tokens[id]; !ok {
		return notFoundErr("token", id)
	}
	delete(f.tokens, id)
	return nil
}

func (f *fakeAccounts) CreateOrg(_ context.Context, o hubmesh.Org) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, u := f.users[o.Name]
	if _, ok := f.orgs[o.Name]; ok || u {
		return fmt.Errorf("org %s: %w", o.Name, hubmesh.ErrExists)
	}
	f.orgs[o.Name] = o
	f.teams[o.Name+"/"+hubmesh.OwnersTeam] = &hubmesh.Team{Org: o.Name, Name: hubmesh.OwnersTeam, Members: []string{o.Owner}}
	return nil
}

func (f *fakeAccounts) DeleteOrg(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.orgs[name]; !ok {
		return notFoundErr("org", name)
	}
	delete(f.orgs, name)
	for k := range f.teams {
		if strings.HasPrefix(k, name+"/") {
			delete(f.teams, k)
			delete(f.grants, k)
		}
	}
	return nil
}

func (f *fakeAccounts) Org(_ context.Context, name string) (hubmesh.Org, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orgs[name]
	if !ok {
		return o, notFoundErr("org", name)
	}
	return o, nil
}

func (f *fakeAccounts) Orgs(_ context.Context, p hubmesh.Page) ([]hubmesh.Org, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hubmesh.Org
	for _, n := range slices.Sorted(maps.Keys(f.orgs)) {
		if n > p.Last && (p.N <= 0 || len(out) < p.N) {
			out = append(out, f.orgs[n])
		}
	}
	return out, nil
}

func (f *fakeAccounts) OrgsOf(_ context.Context, user string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, t := range f.teams {
		if slices.Contains(t.Members, user) && !slices.Contains(out, t.Org) {
			out = append(out, t.Org)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (f *fakeAccounts) CreateTeam(_ context.Context, t hubmesh.Team) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.orgs[t.Org]; !ok {
		return notFoundErr("org", t.Org)
	}
	key := t.Org + "/" + t.Name
	if _, ok := f.teams[key]; ok {
		return fmt.Errorf("team %s: %w", key, hubmesh.ErrExists)
	}
	t.Members = nil
	f.teams[key] = &t
	return nil
}

func (f *fakeAccounts) DeleteTeam(_ context.Context, org, team string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if team == hubmesh.OwnersTeam {
		return fmt.Errorf("owners team: %w", hubmesh.ErrInvalid)
	}
	key := org + "/" + team
	if _, ok := f.teams[key]; !ok {
		return notFoundErr("team", key)
	}
	delete(f.teams, key)
	delete(f.grants, key)
	return nil
}

func (f *fakeAccounts) Team(_ context.Context, org, team string) (hubmesh.Team, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.teams[org+"/"+team]
	if !ok {
		return hubmesh.Team{}, notFoundErr("team", org+"/"+team)
	}
	c := *t
	c.Members = slices.Clone(t.Members)
	return c, nil
}

func (f *fakeAccounts) Teams(_ context.Context, org string) ([]hubmesh.Team, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.orgs[org]; !ok {
		return nil, notFoundErr("org", org)
	}
	var out []hubmesh.Team
	for _, k := range slices.Sorted(maps.Keys(f.teams)) {
		if t := f.teams[k]; t.Org == org {
			c := *t
			c.Members = slices.Clone(t.Members)
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeAccounts) AddTeamMember(_ context.Context, org, team, user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.teams[org+"/"+team]
	if !ok {
		return notFoundErr("team", org+"/"+team)
	}
	if _, ok := f.users[user]; !ok {
		return notFoundErr("user", user)
	}
	if !slices.Contains(t.Members, user) {
		t.Members = append(t.Members, user)
		slices.Sort(t.Members)
	}
	return nil
}

func (f *fakeAccounts) RemoveTeamMember(_ context.Context, org, team, user string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.teams[org+"/"+team]
	if !ok {
		return notFoundErr("team", org+"/"+team)
	}
	if !slices.Contains(t.Members, user) {
		return notFoundErr("member", user)
	}
	if team == hubmesh.OwnersTeam && len(t.Members) == 1 {
		return fmt.Errorf("last owner: %w", hubmesh.ErrInvalid)
	}
	t.Members = slices.DeleteFunc(t.Members, func(m string) bool { return m == user })
	return nil
}

func (f *fakeAccounts) SetTeamPermission(_ context.Context, org, team, repo string, p hubmesh.Permission) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := org + "/" + team
	if _, ok := f.teams[key]; !ok {
		return notFoundErr("team", key)
	}
	if hubmesh.RepoOf(repo) != org {
		return fmt.Errorf("repo %s not in %s: %w", repo, org, hubmesh.ErrInvalid)
	}
	if f.grants[key] == nil {
		f.grants[key] = map[string]hubmesh.Permission{}
	}
	if p == hubmesh.PermNone {
		delete(f.grants[key], repo)
	} else {
		f.grants[key][repo] = p
	}
	return nil
}

func (f *fakeAccounts) TeamPermissions(_ context.Context, org, team string) (map[string]hubmesh.Permission, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := org + "/" + team
	if _, ok := f.teams[key]; !ok {
		return nil, notFoundErr("team", key)
	}
	return maps.Clone(f.grants[key]), nil
}

func (f *fakeAccounts) CreateRepository(_ context.Context, r hubmesh.Repository) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.repos[r.Name]; ok {
		return fmt.Errorf("repo %s: %w", r.Name, hubmesh.ErrExists)
	}
	f.repos[r.Name] = r
	return nil
}

func (f *fakeAccounts) UpdateRepository(_ context.Context, name string, upd hubmesh.RepositoryUpdate) (hubmesh.Repository, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.repos[name]
	if !ok {
		return r, fmt.Errorf("repo %s: %w", name, hubmesh.ErrRepoUnknown)
	}
	if upd.IsPrivate != nil {
		r.IsPrivate = *upd.IsPrivate
	}
	if upd.Description != nil {
		r.Description = *upd.Description
	}
	if upd.FullDescription != nil {
		r.FullDescription = *upd.FullDescription
	}
	r.Updated = upd.At
	f.repos[name] = r
	return r, nil
}

func (f *fakeAccounts) DeleteRepository(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.repos[name]; !ok {
		return fmt.Errorf("repo %s: %w", name, hubmesh.ErrRepoUnknown)
	}
	delete(f.repos, name)
	return nil
}

func (f *fakeAccounts) Repository(_ context.Context, name string) (hubmesh.Repository, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.repos[name]
	if !ok {
		return r, fmt.Errorf("repo %s: %w", name, hubmesh.ErrRepoUnknown)
	}
	return r, nil
}

func (f *fakeAccounts) SetNamespace(_ context.Context, ns hubmesh.Namespace) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.namespaceLocked(ns.Name).Kind == "" {
		return notFoundErr("namespace", ns.Name)
	}
	f.nsPriv[ns.Name] = ns.DefaultPrivate
	return nil
}

func (f *fakeAccounts) Namespace(_ context.Context, name string) (hubmesh.Namespace, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.namespaceLocked(name), nil
}

func (f *fakeAccounts) AddSigningKey(_ context.Context, k hubmesh.SigningKey, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.keys {
		if f.keys[i].Retired.IsZero() {
			f.keys[i].Retired = at
		}
	}
	f.keys = append(f.keys, k)
	return nil
}

func (f *fakeAccounts) SetSettings(_ context.Context, s hubmesh.Settings) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settings = s
	return nil
}

func (f *fakeAccounts) Settings(context.Context) (hubmesh.Settings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings, nil
}

func (f *fakeAccounts) Audit(_ context.Context, p hubmesh.Page) ([]hubmesh.AuditEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hubmesh.AuditEvent
	for _, ev := range f.audit {
		if ev.ID > p.Last && (p.N <= 0 || len(out) < p.N) {
			out = append(out, ev)
		}
	}
	return out, nil
}

var _ Accounts = (*fakeAccounts)(nil)

// fakeEvents appends audit events to the fake accounts at once (the node
// batches them) and records token use.
type fakeEvents struct {
	mu   sync.Mutex
	acc  *fakeAccounts
	next int
	used map[string]time.Time
}

func (e *fakeEvents) Audit(ev hubmesh.AuditEvent) {
	e.mu.Lock()
	e.next++
	ev.ID = fmt.Sprintf("%016d", e.next)
	e.mu.Unlock()
	e.acc.mu.Lock()
	defer e.acc.mu.Unlock()
	e.acc.audit = append(e.acc.audit, ev)
}

func (e *fakeEvents) TokenUsed(id string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.used == nil {
		e.used = map[string]time.Time{}
	}
	e.used[id] = at
}

func (e *fakeEvents) lastUsed(id string) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.used[id]
}

// actions lists the audit actions recorded so far, in order.
func (f *fakeAccounts) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ev := range f.audit {
		out = append(out, ev.Action)
	}
	return out
}
