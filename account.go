package hubmesh

import (
	"fmt"
	"strings"
	"time"
)

// Permission is a level of access to a repository, in increasing order:
// each level includes the ones below it. Docker Hub's team permissions are
// read (pull), write (pull and push) and admin (also delete and settings).
type Permission uint8

// Permission levels.
const (
	PermNone Permission = iota
	PermRead
	PermWrite
	PermAdmin
)

var permissionNames = [...]string{"none", "read", "write", "admin"}

// String returns the permission as the API spells it.
func (p Permission) String() string {
	if int(p) < len(permissionNames) {
		return permissionNames[p]
	}
	return fmt.Sprintf("Permission(%d)", p)
}

// ParsePermission reads "read", "write" or "admin" (and "none").
func ParsePermission(s string) (Permission, error) {
	for i, n := range permissionNames {
		if strings.EqualFold(s, n) {
			return Permission(i), nil
		}
	}
	return PermNone, fmt.Errorf("permission %q: %w: want read, write or admin", s, ErrInvalid)
}

// MarshalText writes the name, so JSON carries "read" and not 1.
func (p Permission) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a name written by MarshalText.
func (p *Permission) UnmarshalText(b []byte) error {
	v, err := ParsePermission(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Token scopes of personal access tokens, as Docker Hub names them. A token
// never grants more than its user holds; its scope caps what it grants.
const (
	ScopeRead   = "read"   // pull
	ScopeWrite  = "write"  // pull, push
	ScopeDelete = "delete" // pull, push, delete
	ScopeAdmin  = "admin"  // everything the user may do, API management included
)

// User is an account. User and organization names share one namespace: a
// name is either a user or an organization, never both.
type User struct {
	Name  string `json:"username"`
	Email string `json:"email,omitempty"`
	// PasswordHash is a PHC string (argon2id). It never leaves the node:
	// the API never writes it.
	PasswordHash string `json:"password_hash"`
	// Admin marks a site administrator: full access to everything.
	Admin    bool `json:"is_admin"`
	Disabled bool `json:"disabled"`
	// Created and PasswordChanged are set by the proposer. A refresh token
	// issued before PasswordChanged is no longer accepted.
	Created         time.Time `json:"date_joined"`
	PasswordChanged time.Time `json:"password_changed"`
}

// UserUpdate changes some fields of a user; nil fields stay as they are.
type UserUpdate struct {
	Email        *string `json:"email,omitempty"`
	PasswordHash *string `json:"password_hash,omitempty"`
	Admin        *bool   `json:"is_admin,omitempty"`
	Disabled     *bool   `json:"disabled,omitempty"`
	// At is when the change was made (sets PasswordChanged on a new hash).
	At time.Time `json:"at"`
}

// AccessToken is a personal access token. The secret itself is never
// stored: Hash is the hex SHA-256 of it.
type AccessToken struct {
	ID       string    `json:"uuid"`
	User     string    `json:"username"`
	Label    string    `json:"token_label"`
	Hash     string    `json:"hash"`
	Scopes   []string  `json:"scopes"`
	Created  time.Time `json:"created_at"`
	Expires  time.Time `json:"expires_at,omitzero"` // zero: never
	LastUsed time.Time `json:"last_used,omitzero"`
}

// OwnersTeam is the team every organization has; its members administer
// the organization and every repository in it.
const OwnersTeam = "owners"

// Org is an organization.
type Org struct {
	Name    string    `json:"orgname"`
	Created time.Time `json:"date_joined"`
	// Owner is the user who created it: the first member of its owners team.
	Owner string `json:"owner,omitempty"`
}

// Team is a group of users of an organization.
type Team struct {
	Org         string   `json:"org"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Members     []string `json:"members"` // user names, sorted
}

// Repository holds the settings of one repository. Its Name is the full
// name ("acme/api"); Namespace is the part before the first slash, or ""
// for a name without one (such repositories belong to the site admins).
type Repository struct {
	Namespace       string    `json:"namespace"`
	Name            string    `json:"name"`
	IsPrivate       bool      `json:"is_private"`
	Description     string    `json:"description"`
	FullDescription string    `json:"full_description"`
	Created         time.Time `json:"date_registered"`
	Updated         time.Time `json:"last_updated"`
	// IsOfficial is set by site administrators, on the repository or on
	// its whole namespace (e.g. "library"); search ranks official
	// repositories first among equals.
	IsOfficial bool `json:"is_official"`
	// IsAutomated marks a repository built by the cluster's automated
	// builds (issue 7); false until then.
	IsAutomated bool `json:"is_automated"`
	// StarCount is the number of users who starred the repository.
	StarCount int64 `json:"star_count"`
	// PullCount counts manifest GETs, aggregated per node and flushed in
	// batches: close to right across the cluster, never exact.
	PullCount int64 `json:"pull_count"`
	// Source names where the content comes from when the node fills the
	// repository itself: "upstream:NAME" (pull-through cache) or
	// "federation:NAME" (another mesh). Empty for repositories pushed to.
	// Only CreateRepository sets it; settings changes keep it.
	Source string `json:"source,omitempty"`
}

// Repository sources: the prefix of Repository.Source and what follows it.
const (
	SourceUpstream   = "upstream:"
	SourceFederation = "federation:"
)

// RepositoryUpdate changes some settings of a repository; nil fields stay.
type RepositoryUpdate struct {
	IsPrivate       *bool     `json:"is_private,omitempty"`
	Description     *string   `json:"description,omitempty"`
	FullDescription *string   `json:"full_description,omitempty"`
	At              time.Time `json:"at"`
}

// Namespace is the owner part of repository names: a user or an org.
type Namespace struct {
	Name string `json:"name"`
	// Kind is "user" or "org"; "" when nobody owns the name.
	Kind string `json:"kind"`
	// DefaultPrivate is the visibility of repositories created in it.
	DefaultPrivate bool `json:"default_private"`
}

// RepoOf splits a repository name into its namespace ("" if none).
func RepoOf(repo string) (namespace string) {
	if i := strings.IndexByte(repo, '/'); i > 0 {
		return repo[:i]
	}
	return ""
}

// AccessFacts is what the metadata plane knows about one user and one
// repository, read at once; the access policy decides from it.
type AccessFacts struct {
	// User is "" for an anonymous request.
	User         string
	UserExists   bool
	UserDisabled bool
	SiteAdmin    bool
	// Namespace facts.
	Namespace     Namespace
	NamespaceUser bool // the namespace is the user's own
	OrgOwner      bool // the user is in the owners team of the namespace org
	// TeamPermission is the highest permission any of the user's teams has
	// on the repository.
	TeamPermission Permission
	// Repository facts: Exists is false before the first push.
	RepoExists  bool
	RepoPrivate bool
}

// SigningKey is a token signing key of the cluster. Tokens are signed with
// the newest key that is not retired; a retired key still verifies until
// the tokens it signed have expired, and is then dropped.
type SigningKey struct {
	ID string `json:"kid"`
	// PrivateKey is the PKCS #8 DER of an ECDSA P-256 key.
	PrivateKey []byte    `json:"private_key"`
	Created    time.Time `json:"created"`
	Retired    time.Time `json:"retired,omitzero"`
}

// Settings are cluster-wide account settings.
type Settings struct {
	// OpenSignup lets anyone create an account; otherwise only admins can.
	OpenSignup bool `json:"open_signup"`
}

// AuditEvent is one security event, as the audit log keeps it.
type AuditEvent struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Action string    `json:"action"` // e.g. "login", "login.failed", "token.create"
	Actor  string    `json:"actor,omitempty"`
	Target string    `json:"target,omitempty"`
	Client string    `json:"client,omitempty"` // client address
	Node   string    `json:"node,omitempty"`
	Detail string    `json:"detail,omitempty"`
}
