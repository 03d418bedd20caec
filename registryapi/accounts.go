package registryapi

import (
	"context"
	"time"

	"github.com/hubmesh/hubmesh"
)

// The interfaces below are what the access control and the /api/v1 REST
// API consume of the replicated account state. Their method sets are
// exactly methods of *consensus.Node, so the node passes it as is. Reads
// are local; writes go through Raft.

// Identities is what authentication and authorization read on every
// request.
type Identities interface {
	// User returns the account name, or an error wrapping ErrNotFound.
	User(ctx context.Context, name string) (hubmesh.User, error)
	// Token returns the access token with that id, or ErrNotFound.
	Token(ctx context.Context, id string) (hubmesh.AccessToken, error)
	// AccessFacts reads what the policy needs about user and repo at once.
	AccessFacts(ctx context.Context, user, repo string) (hubmesh.AccessFacts, error)
	// SigningKeys lists the token signing keys, oldest first.
	SigningKeys(ctx context.Context) ([]hubmesh.SigningKey, error)
}

// UserStore manages accounts.
type UserStore interface {
	// CreateUser fails with ErrExists when a user or an org has the name.
	CreateUser(ctx context.Context, u hubmesh.User) error
	UpdateUser(ctx context.Context, name string, upd hubmesh.UserUpdate) (hubmesh.User, error)
	// DeleteUser also deletes the user's tokens, memberships and namespace.
	DeleteUser(ctx context.Context, name string) error
	Users(ctx context.Context, p hubmesh.Page) ([]hubmesh.User, error)
}

// TokenStore manages personal access tokens (secrets stored hashed).
type TokenStore interface {
	CreateToken(ctx context.Context, t hubmesh.AccessToken) error
	Tokens(ctx context.Context, user string) ([]hubmesh.AccessToken, error)
	DeleteToken(ctx context.Context, id string) error
}

// OrgStore manages organizations.
type OrgStore interface {
	// CreateOrg also creates its owners team with o.Owner in it.
	CreateOrg(ctx context.Context, o hubmesh.Org) error
	DeleteOrg(ctx context.Context, name string) error
	Org(ctx context.Context, name string) (hubmesh.Org, error)
	Orgs(ctx context.Context, p hubmesh.Page) ([]hubmesh.Org, error)
	// OrgsOf lists the orgs in which user is a member of any team.
	OrgsOf(ctx context.Context, user string) ([]string, error)
}

// TeamStore manages the teams of organizations, their members and their
// per-repository permissions.
type TeamStore interface {
	CreateTeam(ctx context.Context, t hubmesh.Team) error
	DeleteTeam(ctx context.Context, org, team string) error
	Team(ctx context.Context, org, team string) (hubmesh.Team, error)
	Teams(ctx context.Context, org string) ([]hubmesh.Team, error)
	AddTeamMember(ctx context.Context, org, team, user string) error
	RemoveTeamMember(ctx context.Context, org, team, user string) error
}

// TeamGrants manages what teams may do on repositories.
type TeamGrants interface {
	// SetTeamPermission grants p on repo; PermNone removes the grant.
	SetTeamPermission(ctx context.Context, org, team, repo string, p hubmesh.Permission) error
	TeamPermissions(ctx context.Context, org, team string) (map[string]hubmesh.Permission, error)
}

// RepositoryStore manages repository records and namespace settings.
type RepositoryStore interface {
	CreateRepository(ctx context.Context, r hubmesh.Repository) error
	UpdateRepository(ctx context.Context, name string, upd hubmesh.RepositoryUpdate) (hubmesh.Repository, error)
	// DeleteRepository removes its manifests, tags, links and grants too.
	DeleteRepository(ctx context.Context, name string) error
	// Repository fails with an error wrapping ErrRepoUnknown.
	Repository(ctx context.Context, name string) (hubmesh.Repository, error)
	SetNamespace(ctx context.Context, ns hubmesh.Namespace) error
	// Namespace reports Kind "" (and no error) when nobody owns the name.
	Namespace(ctx context.Context, name string) (hubmesh.Namespace, error)
}

// SiteStore holds the cluster-wide settings, keys and audit log.
type SiteStore interface {
	// AddSigningKey adds k as the active key and retires the others at at.
	AddSigningKey(ctx context.Context, k hubmesh.SigningKey, at time.Time) error
	SetSettings(ctx context.Context, s hubmesh.Settings) error
	Settings(ctx context.Context) (hubmesh.Settings, error)
	// Audit lists audit events ascending by ID, after p.Last.
	Audit(ctx context.Context, p hubmesh.Page) ([]hubmesh.AuditEvent, error)
}

// Accounts is all of the account state the REST API uses; *consensus.Node
// implements it.
type Accounts interface {
	Identities
	UserStore
	TokenStore
	OrgStore
	TeamStore
	TeamGrants
	RepositoryStore
	SiteStore
}

// Events receives what the API plane observes for the node to persist in
// batches. Both methods must return at once (buffer, never block on Raft).
type Events interface {
	// Audit records a security event. ID and Node are left to the node.
	Audit(ev hubmesh.AuditEvent)
	// TokenUsed notes that access token id authenticated a request at at.
	TokenUsed(id string, at time.Time)
}

// discardEvents is the Events of an Auth configured without one.
type discardEvents struct{}

func (discardEvents) Audit(hubmesh.AuditEvent)    {}
func (discardEvents) TokenUsed(string, time.Time) {}
