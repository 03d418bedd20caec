package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/pebble"

	"github.com/hubmesh/hubmesh"
)

// Account commands: users, access tokens, organizations, teams, team
// grants, repository settings, namespace settings, token signing keys,
// cluster settings and the audit log. Their keys are laid out in keys.go.
//
// Every command carries its own ids and times (the proposer sets them), so
// apply reads no clock. A command that fails writes nothing. Commands that
// create something fail with hubmesh.ErrExists when it exists already;
// membership changes, grants and touches are idempotent.

// Limits of the account state. Names are bounded by their patterns; these
// bound everything else a client can put into the replicated state.
const (
	maxEmailLen        = 254
	maxPasswordHashLen = 1024
	maxTokenHashLen    = 128
	maxTokenLabelLen   = 256
	maxTokenScopes     = 4
	maxTokensPerUser   = 1000
	maxTeamDescLen     = 1024
	maxRepoDescLen     = 1024
	maxRepoFullDescLen = 64 << 10
	maxKeyIDLen        = 128
	maxPrivateKeyLen   = 8 << 10
	maxAuditIDLen      = 128
	maxAuditFieldLen   = 512
	maxAuditDetailLen  = 4 << 10
	maxAuditActionLen  = 64
	// maxAuditBatchBytes bounds the text of one AppendAudit, so that the
	// command stays far below maxRPCRequest when forwarded even if JSON
	// escapes every byte (6x) and the envelope is base64 (4/3x).
	maxAuditBatchBytes = 512 << 10
)

// Exported limits, for the callers that batch.
const (
	// MaxAuditBatch is the most events one AppendAudit carries.
	MaxAuditBatch = 1000
	// MaxAuditEvents is how many audit events the state keeps; appending
	// beyond it deletes the oldest.
	MaxAuditEvents = 100000
	// MaxTouchTokens is the most tokens one TouchTokens carries.
	MaxTouchTokens = 10000
	// SigningKeyRetention is how long a retired signing key is kept: as long
	// as the longest-lived token it may have signed (auth.MaxTokenTTL, the
	// refresh token lifetime, 30 days). consensus does not import auth, so
	// the two constants must be kept equal by hand.
	SigningKeyRetention = 30 * 24 * time.Hour
)

// Namespace kinds, as hubmesh.Namespace.Kind spells them.
const (
	KindUser = "user"
	KindOrg  = "org"
)

var (
	// nameRe is the pattern of user and organization names: 2 to 30
	// characters (Docker Hub asks for 4 to 30).
	nameRe     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,28}[a-z0-9]$`)
	teamRe     = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,30}$`)
	tokenIDRe  = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
	tokenScope = []string{hubmesh.ScopeRead, hubmesh.ScopeWrite, hubmesh.ScopeDelete, hubmesh.ScopeAdmin}
)

// validName reports whether s is a valid user or organization name. A name
// must also be a valid first component of a repository name, so that the
// namespace can hold repositories ("a-_b" matches the pattern but is not).
func validName(s string) bool {
	return nameRe.MatchString(s) && repoRe.MatchString(s)
}

func checkName(what, s string) error {
	if !validName(s) {
		return fmt.Errorf("%w: %s name %q: want 2 to 30 of a-z, 0-9, '_' and '-', starting and ending with a letter or digit", hubmesh.ErrInvalid, what, s)
	}
	return nil
}

func checkTeamName(s string) error {
	if !teamRe.MatchString(s) {
		return fmt.Errorf("%w: team name %q: want 1 to 30 of a-z, A-Z, 0-9, '_' and '-'", hubmesh.ErrInvalid, s)
	}
	return nil
}

// checkText bounds a free-text field and keeps NUL and invalid UTF-8 out.
func checkText(what, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s of %d bytes, at most %d", hubmesh.ErrInvalid, what, len(s), maxLen)
	}
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%w: %s is not valid text", hubmesh.ErrInvalid, what)
	}
	return nil
}

// checkID checks a required identifier that ends a key.
func checkID(what, s string, maxLen int) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", hubmesh.ErrInvalid, what)
	}
	return checkText(what, s, maxLen)
}

func checkUser(u *hubmesh.User) error {
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	if err := checkText("email", u.Email, maxEmailLen); err != nil {
		return err
	}
	return checkText("password hash", u.PasswordHash, maxPasswordHashLen)
}

func checkTokenID(id string) error {
	if !tokenIDRe.MatchString(id) {
		return fmt.Errorf("%w: access token id %q", hubmesh.ErrInvalid, id)
	}
	return nil
}

func checkSigningKey(k *hubmesh.SigningKey) error {
	if err := checkID("signing key id", k.ID, maxKeyIDLen); err != nil {
		return err
	}
	if len(k.PrivateKey) == 0 || len(k.PrivateKey) > maxPrivateKeyLen {
		return fmt.Errorf("%w: signing key %s: private key of %d bytes", hubmesh.ErrInvalid, k.ID, len(k.PrivateKey))
	}
	if k.Created.IsZero() {
		return fmt.Errorf("%w: signing key %s: no creation time", hubmesh.ErrInvalid, k.ID)
	}
	if !k.Retired.IsZero() {
		return fmt.Errorf("%w: signing key %s: a new key cannot be retired", hubmesh.ErrInvalid, k.ID)
	}
	return nil
}

func checkPermission(p hubmesh.Permission) error {
	if p > hubmesh.PermAdmin {
		return fmt.Errorf("%w: permission %d", hubmesh.ErrInvalid, p)
	}
	return nil
}

// Bootstrap creates the first site administrator (Admin is forced on) and
// the first token signing key of a cluster, at once. It is rejected with an
// error wrapping hubmesh.ErrExists once any signing key exists, or when the
// admin's name is taken.
type Bootstrap struct {
	Admin hubmesh.User       `json:"admin"`
	Key   hubmesh.SigningKey `json:"key"`
}

// CreateUser creates a user. User and organization names share one
// namespace: it fails with hubmesh.ErrExists when either has the name.
type CreateUser struct {
	User hubmesh.User `json:"user"`
}

// UpdateUser changes the fields of Name that Update sets; a new password
// hash sets PasswordChanged to Update.At. Its result is the updated
// hubmesh.User.
type UpdateUser struct {
	Name   string             `json:"name"`
	Update hubmesh.UserUpdate `json:"update"`
}

// DeleteUser removes a user with its access tokens, team memberships,
// namespace settings and every repository in its namespace. It is refused
// (hubmesh.ErrInvalid) while the user is the last owner of an organization.
type DeleteUser struct {
	Name string `json:"name"`
}

// CreateToken stores an access token of an existing user.
type CreateToken struct {
	Token hubmesh.AccessToken `json:"token"`
}

// DeleteToken removes an access token.
type DeleteToken struct {
	ID string `json:"id"`
}

// TouchTokens raises the LastUsed time of tokens to the given times (a
// token's LastUsed never goes back). Unknown ids are ignored: the token may
// have been deleted since it was used.
type TouchTokens struct {
	Used map[string]time.Time `json:"used"`
}

// CreateOrg creates an organization and its owners team, whose first
// member is Org.Owner (an existing user).
type CreateOrg struct {
	Org hubmesh.Org `json:"org"`
}

// DeleteOrg removes an organization with its teams, their grants, its
// namespace settings and every repository in its namespace.
type DeleteOrg struct {
	Name string `json:"name"`
}

// CreateTeam creates a team in an existing organization. Team.Members is
// ignored: members are added with AddTeamMember.
type CreateTeam struct {
	Team hubmesh.Team `json:"team"`
}

// DeleteTeam removes a team, its memberships and its grants. The owners
// team cannot be deleted.
type DeleteTeam struct {
	Org  string `json:"org"`
	Team string `json:"team"`
}

// AddTeamMember adds an existing user to a team; adding a member again
// changes nothing.
type AddTeamMember struct {
	Org  string `json:"org"`
	Team string `json:"team"`
	User string `json:"user"`
}

// RemoveTeamMember removes a user from a team. The last owner of an
// organization cannot be removed.
type RemoveTeamMember struct {
	Org  string `json:"org"`
	Team string `json:"team"`
	User string `json:"user"`
}

// SetTeamPermission grants a team a permission on a repository of its
// organization's namespace (the repository need not exist yet);
// hubmesh.PermNone removes the grant.
type SetTeamPermission struct {
	Org        string             `json:"org"`
	Team       string             `json:"team"`
	Repo       string             `json:"repo"`
	Permission hubmesh.Permission `json:"permission"`
}

// CreateRepository creates a repository record (before its first push).
type CreateRepository struct {
	Repository hubmesh.Repository `json:"repository"`
	// Actor is who created it (for webhook events).
	Actor string `json:"actor,omitempty"`
}

// UpdateRepository changes the settings of a repository that Update sets
// and moves Updated forward to Update.At. Its result is the updated
// hubmesh.Repository.
type UpdateRepository struct {
	Name   string                   `json:"name"`
	Update hubmesh.RepositoryUpdate `json:"update"`
}

// DeleteRepository removes a repository: its record, manifests, tags,
// referrers, blob links, team grants, build settings and builds. Blob
// records stay: they describe content, which garbage collection handles.
type DeleteRepository struct {
	Name string `json:"name"`
	// At and Actor say when and by whom (for webhook events).
	At    time.Time `json:"at,omitzero"`
	Actor string    `json:"actor,omitempty"`
}

// SetNamespace sets the settings of a user's or organization's namespace.
// Namespace.Kind is ignored.
type SetNamespace struct {
	Namespace hubmesh.Namespace `json:"namespace"`
}

// AddSigningKey adds a new active token signing key. Every other active key
// is retired at At, and retired keys whose Retired is more than
// SigningKeyRetention before At are deleted.
type AddSigningKey struct {
	Key hubmesh.SigningKey `json:"key"`
	At  time.Time          `json:"at"`
}

// SetSettings replaces the cluster-wide account settings.
type SetSettings struct {
	Settings hubmesh.Settings `json:"settings"`
}

// AppendAudit adds audit events. Their ids are set by the proposer and sort
// by time; an id already present is skipped, so the command is safe to
// retry. Only the newest MaxAuditEvents events (by id) are kept.
type AppendAudit struct {
	Events []hubmesh.AuditEvent `json:"events"`
}

// Type implements Command.
func (*Bootstrap) Type() Type { return TypeBootstrap }

// Type implements Command.
func (*CreateUser) Type() Type { return TypeCreateUser }

// Type implements Command.
func (*UpdateUser) Type() Type { return TypeUpdateUser }

// Type implements Command.
func (*DeleteUser) Type() Type { return TypeDeleteUser }

// Type implements Command.
func (*CreateToken) Type() Type { return TypeCreateToken }

// Type implements Command.
func (*DeleteToken) Type() Type { return TypeDeleteToken }

// Type implements Command.
func (*TouchTokens) Type() Type { return TypeTouchTokens }

// Type implements Command.
func (*CreateOrg) Type() Type { return TypeCreateOrg }

// Type implements Command.
func (*DeleteOrg) Type() Type { return TypeDeleteOrg }

// Type implements Command.
func (*CreateTeam) Type() Type { return TypeCreateTeam }

// Type implements Command.
func (*DeleteTeam) Type() Type { return TypeDeleteTeam }

// Type implements Command.
func (*AddTeamMember) Type() Type { return TypeAddTeamMember }

// Type implements Command.
func (*RemoveTeamMember) Type() Type { return TypeRemoveTeamMember }

// Type implements Command.
func (*SetTeamPermission) Type() Type { return TypeSetTeamPermission }

// Type implements Command.
func (*CreateRepository) Type() Type { return TypeCreateRepository }

// Type implements Command.
func (*UpdateRepository) Type() Type { return TypeUpdateRepository }

// Type implements Command.
func (*DeleteRepository) Type() Type { return TypeDeleteRepository }

// Type implements Command.
func (*SetNamespace) Type() Type { return TypeSetNamespace }

// Type implements Command.
func (*AddSigningKey) Type() Type { return TypeAddSigningKey }

// Type implements Command.
func (*SetSettings) Type() Type { return TypeSetSettings }

// Type implements Command.
func (*AppendAudit) Type() Type { return TypeAppendAudit }

// ---- validate: stateless checks ----

func (c *Bootstrap) validate() error {
	if err := checkUser(&c.Admin); err != nil {
		return err
	}
	return checkSigningKey(&c.Key)
}

func (c *CreateUser) validate() error { return checkUser(&c.User) }

func (c *UpdateUser) validate() error {
	if err := checkName("user", c.Name); err != nil {
		return err
	}
	u := &c.Update
	if u.Email != nil {
		if err := checkText("email", *u.Email, maxEmailLen); err != nil {
			return err
		}
	}
	if u.PasswordHash != nil {
		if err := checkText("password hash", *u.PasswordHash, maxPasswordHashLen); err != nil {
			return err
		}
		if u.At.IsZero() {
			// PasswordChanged would be zero: older refresh tokens would
			// stay valid.
			return fmt.Errorf("%w: user %s: a password change needs its time", hubmesh.ErrInvalid, c.Name)
		}
	}
	return nil
}

func (c *DeleteUser) validate() error { return checkName("user", c.Name) }

func (c *CreateToken) validate() error {
	t := &c.Token
	if err := checkTokenID(t.ID); err != nil {
		return err
	}
	if err := checkName("user", t.User); err != nil {
		return err
	}
	if err := checkText("token label", t.Label, maxTokenLabelLen); err != nil {
		return err
	}
	if err := checkID("token hash", t.Hash, maxTokenHashLen); err != nil {
		return err
	}
	if len(t.Scopes) > maxTokenScopes {
		return fmt.Errorf("%w: token %s: %d scopes, at most %d", hubmesh.ErrInvalid, t.ID, len(t.Scopes), maxTokenScopes)
	}
	for _, s := range t.Scopes {
		if !slices.Contains(tokenScope, s) {
			return fmt.Errorf("%w: token %s: scope %q: want one of %s", hubmesh.ErrInvalid, t.ID, s, strings.Join(tokenScope, ", "))
		}
	}
	return nil
}

func (c *DeleteToken) validate() error { return checkTokenID(c.ID) }

func (c *TouchTokens) validate() error {
	if len(c.Used) > MaxTouchTokens {
		return fmt.Errorf("%w: %d tokens touched, at most %d", hubmesh.ErrInvalid, len(c.Used), MaxTouchTokens)
	}
	for id := range c.Used {
		if err := checkTokenID(id); err != nil {
			return err
		}
	}
	return nil
}

func (c *CreateOrg) validate() error {
	if err := checkName("organization", c.Org.Name); err != nil {
		return err
	}
	return checkName("owner", c.Org.Owner)
}

func (c *DeleteOrg) validate() error { return checkName("organization", c.Name) }

func (c *CreateTeam) validate() error {
	if err := checkName("organization", c.Team.Org); err != nil {
		return err
	}
	if err := checkTeamName(c.Team.Name); err != nil {
		return err
	}
	return checkText("team description", c.Team.Description, maxTeamDescLen)
}

func checkTeamRef(org, team string) error {
	if err := checkName("organization", org); err != nil {
		return err
	}
	return checkTeamName(team)
}

func (c *DeleteTeam) validate() error {
	if err := checkTeamRef(c.Org, c.Team); err != nil {
		return err
	}
	if c.Team == hubmesh.OwnersTeam {
		return fmt.Errorf("%w: the %s team of %s cannot be deleted", hubmesh.ErrInvalid, hubmesh.OwnersTeam, c.Org)
	}
	return nil
}

func (c *AddTeamMember) validate() error {
	if err := checkTeamRef(c.Org, c.Team); err != nil {
		return err
	}
	return checkName("user", c.User)
}

func (c *RemoveTeamMember) validate() error {
	if err := checkTeamRef(c.Org, c.Team); err != nil {
		return err
	}
	return checkName("user", c.User)
}

func (c *SetTeamPermission) validate() error {
	if err := checkTeamRef(c.Org, c.Team); err != nil {
		return err
	}
	if err := checkRepo(c.Repo); err != nil {
		return err
	}
	if ns := hubmesh.RepoOf(c.Repo); ns != c.Org {
		return fmt.Errorf("%w: repository %s is not in the namespace of %s", hubmesh.ErrInvalid, c.Repo, c.Org)
	}
	return checkPermission(c.Permission)
}

func checkRepoSettings(name string, desc, full *string) error {
	if desc != nil {
		if err := checkText("description of "+name, *desc, maxRepoDescLen); err != nil {
			return err
		}
	}
	if full != nil {
		if err := checkText("full description of "+name, *full, maxRepoFullDescLen); err != nil {
			return err
		}
	}
	return nil
}

func (c *CreateRepository) validate() error {
	r := &c.Repository
	if err := checkRepo(r.Name); err != nil {
		return err
	}
	if r.Namespace != hubmesh.RepoOf(r.Name) {
		return fmt.Errorf("%w: repository %s: namespace %q, want %q", hubmesh.ErrInvalid, r.Name, r.Namespace, hubmesh.RepoOf(r.Name))
	}
	return checkRepoSettings(r.Name, &r.Description, &r.FullDescription)
}

func (c *UpdateRepository) validate() error {
	if err := checkRepo(c.Name); err != nil {
		return err
	}
	return checkRepoSettings(c.Name, c.Update.Description, c.Update.FullDescription)
}

func (c *DeleteRepository) validate() error { return checkRepo(c.Name) }

func (c *SetNamespace) validate() error { return checkName("namespace", c.Namespace.Name) }

func (c *AddSigningKey) validate() error {
	if err := checkSigningKey(&c.Key); err != nil {
		return err
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: signing key %s: no rotation time", hubmesh.ErrInvalid, c.Key.ID)
	}
	return nil
}

func (c *SetSettings) validate() error { return nil }

// auditSize is the text size of an event, as maxAuditBatchBytes counts it.
func auditSize(e *hubmesh.AuditEvent) int {
	return 64 + len(e.ID) + len(e.Action) + len(e.Actor) + len(e.Target) + len(e.Client) + len(e.Node) + len(e.Detail)
}

func (c *AppendAudit) validate() error {
	if len(c.Events) == 0 || len(c.Events) > MaxAuditBatch {
		return fmt.Errorf("%w: %d audit events, want 1 to %d", hubmesh.ErrInvalid, len(c.Events), MaxAuditBatch)
	}
	size := 0
	for i := range c.Events {
		e := &c.Events[i]
		if size += auditSize(e); size > maxAuditBatchBytes {
			return fmt.Errorf("%w: audit events of more than %d bytes in one command", hubmesh.ErrInvalid, maxAuditBatchBytes)
		}
		for _, f := range []struct {
			what string
			v    string
			max  int
		}{
			{"audit event id", e.ID, maxAuditIDLen}, {"audit action", e.Action, maxAuditActionLen},
		} {
			if err := checkID(f.what, f.v, f.max); err != nil {
				return err
			}
		}
		for _, f := range []struct {
			what string
			v    string
			max  int
		}{
			{"audit actor", e.Actor, maxAuditFieldLen}, {"audit target", e.Target, maxAuditFieldLen},
			{"audit client", e.Client, maxAuditFieldLen}, {"audit node", e.Node, maxAuditFieldLen},
			{"audit detail", e.Detail, maxAuditDetailLen},
		} {
			if err := checkText(f.what, f.v, f.max); err != nil {
				return fmt.Errorf("event %s: %w", e.ID, err)
			}
		}
	}
	return nil
}

// ---- apply: checks against the state, then writes ----

// teamRecord is the value of team/<org>\x00<team>; the members are keys.
type teamRecord struct {
	Description string `json:"description,omitempty"`
}

// nsRecord is the value of ns/<name>.
type nsRecord struct {
	DefaultPrivate bool `json:"default_private"`
}

// nameFree fails with ErrExists when a user or an organization has name,
// or when namespace name already holds repositories (cache repositories
// such as library/alpine, federated ones such as acme/api): whoever
// registered the name would otherwise become the admin of repositories
// that others pull.
func (tx *txn) nameFree(name string) error {
	if tx.has(userKey(name)) {
		return fmt.Errorf("name %s: %w: a user has it", name, hubmesh.ErrExists)
	}
	if tx.has(orgKey(name)) {
		return fmt.Errorf("name %s: %w: an organization has it", name, hubmesh.ErrExists)
	}
	if tx.hasPrefix(namespaceRepoPrefix(name)) {
		return fmt.Errorf("name %s: %w: namespace %s holds repositories", name, hubmesh.ErrExists, name)
	}
	return nil
}

// namespaceRepoPrefix is the prefix of the repo/ keys of the repositories
// of namespace ns: "repo/<ns>/".
func namespaceRepoPrefix(ns string) []byte {
	k := make([]byte, 0, len(prefixRepo)+len(ns)+1)
	k = append(k, prefixRepo...)
	k = append(k, ns...)
	return append(k, '/')
}

// hasPrefix reports whether some key starts with prefix.
func (tx *txn) hasPrefix(prefix []byte) bool {
	found := false
	err := scan(tx.b, prefix, nil, 1, func(_, _ []byte) error {
		found = true
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan %q: %v", prefix, err))
	}
	return found
}

// suffixes returns the rest of each key under prefix.
func (tx *txn) suffixes(prefix []byte) []string {
	ks := tx.keys(prefix)
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k[len(prefix):])
	}
	return out
}

// split2 splits "a\x00b" into a and b.
func split2(s string) (string, string) {
	a, b, _ := strings.Cut(s, string(rune(sep)))
	return a, b
}

func (c *Bootstrap) apply(tx *txn) (any, error) {
	if tx.hasPrefix(prefixSigningKey) {
		return nil, fmt.Errorf("bootstrap: %w: the cluster already has a signing key", hubmesh.ErrExists)
	}
	if err := tx.nameFree(c.Admin.Name); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	admin := c.Admin
	admin.Admin = true
	tx.setJSON(userKey(admin.Name), admin)
	tx.setJSON(signingKeyKey(c.Key.ID), c.Key)
	return nil, nil
}

func (c *CreateUser) apply(tx *txn) (any, error) {
	if err := tx.nameFree(c.User.Name); err != nil {
		return nil, fmt.Errorf("create user: %w", err)
	}
	tx.setJSON(userKey(c.User.Name), c.User)
	return nil, nil
}

func (c *UpdateUser) apply(tx *txn) (any, error) {
	var u hubmesh.User
	if !tx.getJSON(userKey(c.Name), &u) {
		return nil, fmt.Errorf("user %s: %w", c.Name, hubmesh.ErrNotFound)
	}
	upd := &c.Update
	if upd.Email != nil {
		u.Email = *upd.Email
	}
	if upd.PasswordHash != nil {
		u.PasswordHash = *upd.PasswordHash
		u.PasswordChanged = upd.At
	}
	if upd.Admin != nil {
		u.Admin = *upd.Admin
	}
	if upd.Disabled != nil {
		u.Disabled = *upd.Disabled
	}
	tx.setJSON(userKey(c.Name), u)
	return u, nil
}

func (c *DeleteUser) apply(tx *txn) (any, error) {
	if !tx.has(userKey(c.Name)) {
		return nil, fmt.Errorf("user %s: %w", c.Name, hubmesh.ErrNotFound)
	}
	memberships := tx.suffixes(scope(prefixUserTeam, c.Name))
	for _, m := range memberships {
		org, team := split2(m)
		if team == hubmesh.OwnersTeam && len(tx.keys(scope(prefixTeamMember, org, team))) <= 1 {
			return nil, fmt.Errorf("delete user %s: %w: last owner of organization %s", c.Name, hubmesh.ErrInvalid, org)
		}
	}

	for _, m := range memberships {
		org, team := split2(m)
		tx.del(teamMemberKey(org, team, c.Name))
		tx.del(userTeamKey(c.Name, org, team))
	}
	for _, id := range tx.suffixes(scope(prefixUserToken, c.Name)) {
		tx.del(accessTokenKey(id))
		tx.del(userTokenKey(c.Name, id))
	}
	tx.deleteStarsOf(c.Name)
	tx.deleteNamespace(c.Name)
	tx.del(userKey(c.Name))
	return nil, nil
}

// deleteNamespace removes the settings of namespace ns and every repository
// in it.
func (tx *txn) deleteNamespace(ns string) {
	if tx.has(nsKey(ns)) {
		tx.del(nsKey(ns))
	}
	tx.deleteHooksOf(ns)
	tx.deleteRepos(repoSet{ns: ns})
}

// repoSet selects the repositories to delete: one (repo) or every one in a
// namespace (ns).
type repoSet struct{ repo, ns string }

// under is the prefix of the keys of the set below a per-repository prefix
// (manifest/, tag/, ...): "<prefix><repo>\x00" or "<prefix><ns>/".
func (s repoSet) under(prefix []byte) []byte {
	if s.repo != "" {
		return scope(prefix, s.repo)
	}
	return append(bytes.Clone(prefix), s.ns+"/"...)
}

// deleteRepos removes the repositories of s: records, manifests, tags,
// referrers, blob links, team grants, build settings and builds, keeping
// the counters in step. Blob records stay.
func (tx *txn) deleteRepos(s repoSet) {
	tx.deleteRepoSocial(s)
	tx.deleteBuildsOf(s)
	for _, p := range [][]byte{prefixTag, prefixTagRev, prefixReferrer, prefixLink} {
		for _, k := range tx.keys(s.under(p)) {
			tx.del(k)
		}
	}
	if ks := tx.keys(s.under(prefixManifest)); len(ks) > 0 {
		for _, k := range ks {
			tx.del(k)
		}
		tx.addCount(keyCountManifests, -int64(len(ks)))
	}
	for _, k := range tx.keys(s.under(prefixGrantRepo)) {
		// grantrepo/<repo>\x00<org>\x00<team>
		if parts := strings.Split(string(k[len(prefixGrantRepo):]), string(rune(sep))); len(parts) == 3 {
			tx.del(grantKey(parts[1], parts[2], parts[0]))
		}
		tx.del(k)
	}
	var recs [][]byte
	if s.repo != "" {
		if tx.has(repoKey(s.repo)) {
			recs = [][]byte{repoKey(s.repo)}
		}
	} else {
		recs = tx.keys(s.under(prefixRepo))
	}
	for _, k := range recs {
		tx.del(k)
	}
	if len(recs) > 0 {
		tx.addCount(keyCountRepos, -int64(len(recs)))
	}
}

func (c *CreateToken) apply(tx *txn) (any, error) {
	t := &c.Token
	if !tx.has(userKey(t.User)) {
		return nil, fmt.Errorf("create token: user %s: %w", t.User, hubmesh.ErrNotFound)
	}
	if tx.has(accessTokenKey(t.ID)) {
		return nil, fmt.Errorf("token %s: %w", t.ID, hubmesh.ErrExists)
	}
	if n := len(tx.keys(scope(prefixUserToken, t.User))); n >= maxTokensPerUser {
		return nil, fmt.Errorf("create token: %w: user %s has %d tokens, at most %d", hubmesh.ErrInvalid, t.User, n, maxTokensPerUser)
	}
	tx.setJSON(accessTokenKey(t.ID), t)
	tx.set(userTokenKey(t.User, t.ID), nil)
	return nil, nil
}

func (c *DeleteToken) apply(tx *txn) (any, error) {
	var t hubmesh.AccessToken
	if !tx.getJSON(accessTokenKey(c.ID), &t) {
		return nil, fmt.Errorf("token %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	tx.del(accessTokenKey(c.ID))
	tx.del(userTokenKey(t.User, c.ID))
	return nil, nil
}

func (c *TouchTokens) apply(tx *txn) (any, error) {
	// Map order is random; keep the writes in one order.
	for _, id := range slices.Sorted(maps.Keys(c.Used)) {
		var t hubmesh.AccessToken
		if !tx.getJSON(accessTokenKey(id), &t) {
			continue
		}
		if at := c.Used[id]; at.After(t.LastUsed) {
			t.LastUsed = at
			tx.setJSON(accessTokenKey(id), t)
		}
	}
	return nil, nil
}

func (c *CreateOrg) apply(tx *txn) (any, error) {
	o := &c.Org
	if err := tx.nameFree(o.Name); err != nil {
		return nil, fmt.Errorf("create organization: %w", err)
	}
	if !tx.has(userKey(o.Owner)) {
		return nil, fmt.Errorf("create organization %s: owner %s: %w", o.Name, o.Owner, hubmesh.ErrNotFound)
	}
	tx.setJSON(orgKey(o.Name), o)
	tx.setJSON(teamKey(o.Name, hubmesh.OwnersTeam), teamRecord{})
	tx.set(teamMemberKey(o.Name, hubmesh.OwnersTeam, o.Owner), nil)
	tx.set(userTeamKey(o.Owner, o.Name, hubmesh.OwnersTeam), nil)
	return nil, nil
}

// deleteTeam removes a team, its memberships and its grants.
func (tx *txn) deleteTeam(org, team string) {
	for _, user := range tx.suffixes(scope(prefixTeamMember, org, team)) {
		tx.del(teamMemberKey(org, team, user))
		tx.del(userTeamKey(user, org, team))
	}
	for _, repo := range tx.suffixes(scope(prefixGrant, org, team)) {
		tx.del(grantKey(org, team, repo))
		tx.del(grantRepoKey(repo, org, team))
	}
	tx.del(teamKey(org, team))
}

func (c *DeleteOrg) apply(tx *txn) (any, error) {
	if !tx.has(orgKey(c.Name)) {
		return nil, fmt.Errorf("organization %s: %w", c.Name, hubmesh.ErrNotFound)
	}
	for _, team := range tx.suffixes(scope(prefixTeam, c.Name)) {
		tx.deleteTeam(c.Name, team)
	}
	tx.deleteNamespace(c.Name)
	tx.del(orgKey(c.Name))
	return nil, nil
}

func (c *CreateTeam) apply(tx *txn) (any, error) {
	t := &c.Team
	if !tx.has(orgKey(t.Org)) {
		return nil, fmt.Errorf("create team %s: organization %s: %w", t.Name, t.Org, hubmesh.ErrNotFound)
	}
	if tx.has(teamKey(t.Org, t.Name)) {
		return nil, fmt.Errorf("team %s/%s: %w", t.Org, t.Name, hubmesh.ErrExists)
	}
	tx.setJSON(teamKey(t.Org, t.Name), teamRecord{Description: t.Description})
	return nil, nil
}

// needTeam fails with ErrNotFound unless org has team.
func (tx *txn) needTeam(org, team string) error {
	if !tx.has(teamKey(org, team)) {
		return fmt.Errorf("team %s/%s: %w", org, team, hubmesh.ErrNotFound)
	}
	return nil
}

func (c *DeleteTeam) apply(tx *txn) (any, error) {
	if err := tx.needTeam(c.Org, c.Team); err != nil {
		return nil, err
	}
	tx.deleteTeam(c.Org, c.Team)
	return nil, nil
}

func (c *AddTeamMember) apply(tx *txn) (any, error) {
	if err := tx.needTeam(c.Org, c.Team); err != nil {
		return nil, err
	}
	if !tx.has(userKey(c.User)) {
		return nil, fmt.Errorf("add to team %s/%s: user %s: %w", c.Org, c.Team, c.User, hubmesh.ErrNotFound)
	}
	if !tx.has(teamMemberKey(c.Org, c.Team, c.User)) {
		tx.set(teamMemberKey(c.Org, c.Team, c.User), nil)
		tx.set(userTeamKey(c.User, c.Org, c.Team), nil)
	}
	return nil, nil
}

func (c *RemoveTeamMember) apply(tx *txn) (any, error) {
	if err := tx.needTeam(c.Org, c.Team); err != nil {
		return nil, err
	}
	if !tx.has(teamMemberKey(c.Org, c.Team, c.User)) {
		return nil, fmt.Errorf("team %s/%s: member %s: %w", c.Org, c.Team, c.User, hubmesh.ErrNotFound)
	}
	if c.Team == hubmesh.OwnersTeam && len(tx.keys(scope(prefixTeamMember, c.Org, c.Team))) <= 1 {
		return nil, fmt.Errorf("remove %s from %s/%s: %w: the last owner of an organization cannot leave", c.User, c.Org, c.Team, hubmesh.ErrInvalid)
	}
	tx.del(teamMemberKey(c.Org, c.Team, c.User))
	tx.del(userTeamKey(c.User, c.Org, c.Team))
	return nil, nil
}

func (c *SetTeamPermission) apply(tx *txn) (any, error) {
	if err := tx.needTeam(c.Org, c.Team); err != nil {
		return nil, err
	}
	gk := grantKey(c.Org, c.Team, c.Repo)
	if c.Permission == hubmesh.PermNone {
		if tx.has(gk) {
			tx.del(gk)
			tx.del(grantRepoKey(c.Repo, c.Org, c.Team))
		}
		return nil, nil
	}
	tx.set(gk, []byte(c.Permission.String()))
	tx.set(grantRepoKey(c.Repo, c.Org, c.Team), nil)
	return nil, nil
}

func (c *CreateRepository) apply(tx *txn) (any, error) {
	r := &c.Repository
	if tx.has(repoKey(r.Name)) {
		return nil, fmt.Errorf("repository %s: %w", r.Name, hubmesh.ErrExists)
	}
	rec := repoRecord{
		Created: r.Created, Updated: r.Updated, IsPrivate: r.IsPrivate,
		Description: r.Description, FullDescription: r.FullDescription, Source: r.Source,
	}
	tx.setJSON(repoKey(r.Name), rec)
	tx.addCount(keyCountRepos, 1)
	tx.emit(hubmesh.EventRepoCreate, r.Name, "", "", c.Actor, r.Created)
	return nil, nil
}

func (c *UpdateRepository) apply(tx *txn) (any, error) {
	var rec repoRecord
	if !tx.getJSON(repoKey(c.Name), &rec) {
		return nil, fmt.Errorf("repository %s: %w", c.Name, hubmesh.ErrRepoUnknown)
	}
	u := &c.Update
	if u.IsPrivate != nil {
		rec.IsPrivate = *u.IsPrivate
	}
	if u.Description != nil {
		rec.Description = *u.Description
	}
	if u.FullDescription != nil {
		rec.FullDescription = *u.FullDescription
	}
	if u.At.After(rec.updated()) {
		rec.Updated = u.At
	}
	tx.setJSON(repoKey(c.Name), rec)
	return tx.repoView(c.Name, &rec), nil
}

func (c *DeleteRepository) apply(tx *txn) (any, error) {
	if !tx.has(repoKey(c.Name)) {
		return nil, fmt.Errorf("repository %s: %w", c.Name, hubmesh.ErrRepoUnknown)
	}
	tx.emit(hubmesh.EventRepoDelete, c.Name, "", "", c.Actor, c.At)
	tx.deleteRepos(repoSet{repo: c.Name})
	return nil, nil
}

func (c *SetNamespace) apply(tx *txn) (any, error) {
	name := c.Namespace.Name
	if !tx.has(userKey(name)) && !tx.has(orgKey(name)) {
		return nil, fmt.Errorf("namespace %s: %w: no user or organization has the name", name, hubmesh.ErrNotFound)
	}
	tx.setJSON(nsKey(name), nsRecord{DefaultPrivate: c.Namespace.DefaultPrivate})
	return nil, nil
}

// defaultPrivate is the visibility of new repositories in namespace ns.
func (tx *txn) defaultPrivate(ns string) bool {
	var rec nsRecord
	return ns != "" && tx.getJSON(nsKey(ns), &rec) && rec.DefaultPrivate
}

func (c *AddSigningKey) apply(tx *txn) (any, error) {
	if tx.has(signingKeyKey(c.Key.ID)) {
		return nil, fmt.Errorf("signing key %s: %w", c.Key.ID, hubmesh.ErrExists)
	}
	type entry struct {
		k   []byte
		key hubmesh.SigningKey
	}
	var keys []entry
	err := scan(tx.b, prefixSigningKey, nil, 0, func(k, v []byte) error {
		e := entry{k: bytes.Clone(k)}
		if err := json.Unmarshal(v, &e.key); err != nil {
			return fmt.Errorf("corrupt value of %q: %w", k, err)
		}
		keys = append(keys, e)
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan signing keys: %v", err))
	}
	cutoff := c.At.Add(-SigningKeyRetention)
	for _, e := range keys {
		switch {
		case e.key.Retired.IsZero():
			e.key.Retired = c.At
			tx.setJSON(e.k, e.key)
		case e.key.Retired.Before(cutoff):
			tx.del(e.k)
		}
	}
	tx.setJSON(signingKeyKey(c.Key.ID), c.Key)
	return nil, nil
}

func (c *SetSettings) apply(tx *txn) (any, error) {
	tx.setJSON(keySettings, c.Settings)
	return nil, nil
}

// auditLimit is MaxAuditEvents; tests lower it to exercise trimming.
var auditLimit uint64 = MaxAuditEvents

// lastKey returns the greatest key under prefix, or nil.
func (tx *txn) lastKey(prefix []byte) []byte {
	it, err := tx.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan %q: %v", prefix, err))
	}
	var k []byte
	if it.Last() {
		k = bytes.Clone(it.Key())
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan %q: %v", prefix, err))
	}
	return k
}

// apply adds the events that are new. Ids are time-ordered, so most events
// sort after every stored one and need no lookup. Once the log is full,
// meta/auditfloor holds the oldest id kept: trimming scans from there (not
// over the tombstones of earlier trims), and an event older than it is
// dropped, as trimming would drop it at once.
func (c *AppendAudit) apply(tx *txn) (any, error) {
	floor, _ := tx.get(keyAuditFloor)
	last := tx.lastKey(prefixAudit)
	seen := make(map[string]bool, len(c.Events))
	added := 0
	for i := range c.Events {
		id := c.Events[i].ID
		if seen[id] || (floor != nil && id < string(floor)) {
			continue
		}
		seen[id] = true
		k := auditKey(id)
		if last != nil && bytes.Compare(k, last) <= 0 && tx.has(k) {
			continue
		}
		tx.setJSON(k, &c.Events[i])
		added++
	}
	if added == 0 {
		return nil, nil
	}
	v, _ := tx.get(keyCountAudit)
	n := readU64(v) + uint64(added)
	if n > auditLimit {
		var from []byte
		if floor != nil {
			from = auditKey(string(floor))
		}
		var old [][]byte
		err := scan(tx.b, prefixAudit, from, int(n-auditLimit)+1, func(k, _ []byte) error {
			old = append(old, bytes.Clone(k))
			return nil
		})
		if err != nil {
			panic(fmt.Sprintf("consensus: fsm: scan audit: %v", err))
		}
		// The last key scanned is the oldest one kept: the new floor.
		keep := old[len(old)-1]
		for _, k := range old[:len(old)-1] {
			tx.del(k)
		}
		n -= uint64(len(old) - 1)
		tx.set(keyAuditFloor, bytes.Clone(keep[len(prefixAudit):]))
	}
	tx.set(keyCountAudit, u64(n))
	return nil, nil
}
