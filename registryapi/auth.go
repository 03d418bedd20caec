package registryapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// Defaults of AuthConfig.
const (
	// DefaultService is the token service (JWT audience) when
	// AuthConfig.Service is empty. Every node of a cluster must use the
	// same one, since any node verifies the tokens of any other.
	DefaultService = "hubmesh"
	// SessionAudience is the audience of API session tokens.
	SessionAudience = "hubmesh-api"
	// loginFailures failed logins per loginWindow per account and per
	// client address, then 429.
	loginFailures = 10
	loginWindow   = 5 * time.Minute
)

// Key set cache: rebuilt at most every keysMaxAge, or sooner on an
// unknown kid (but not more than once per keysMinRefresh).
const (
	keysMaxAge     = 5 * time.Second
	keysMinRefresh = time.Second
)

// Password verification cache: argon2id costs tens of milliseconds and
// clients that keep sending Basic auth would pay it on every request.
const (
	verifyTTL     = 60 * time.Second
	verifyMaxSize = 4096
)

// maxCredentialLen bounds a bearer token or a password we even look at.
const maxCredentialLen = 8 << 10

// tokenMarker is the type of the Access entry that ties a session or
// refresh token to the personal access token it was obtained with, so
// that it keeps that token's scope cap and dies with it.
const tokenMarker = "access-token"

// buildMarker is the type of the Access entry that makes a registry token
// the credential of one automated build (Auth.BuildToken): its name is
// the build id, and the token's only repository entry is what the build
// may push to, even when manual pushes to it are disabled.
const buildMarker = "build"

// AuthConfig is what access control needs from the node.
type AuthConfig struct {
	// Identities reads users, tokens, access facts and signing keys;
	// required (*consensus.Node).
	Identities Identities
	// ClusterID returns the cluster id; token issuer is "hubmesh:<id>".
	// Required; called per token, so it may change after a join.
	ClusterID func() string
	// Service is the token service and audience; DefaultService if empty.
	Service string
	// Events receives audit events and token use; nil discards them.
	Events Events
	// Limiter counts failed logins; nil means 10 per 5 minutes.
	Limiter *auth.Limiter
	// Logger is required.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now (tests set it).
	Now func() time.Time
	// Builds reads the automated build settings of repositories, so that
	// pushes to a repository built automatically are refused unless its
	// settings allow them; nil means no repository is built automatically.
	Builds BuildSettingsReader
}

// Auth authenticates requests and authorizes them against the access
// policy. One Auth serves the /v2 handler, /token, /api/v1 and the cluster
// API of a node. It is safe for concurrent use.
type Auth struct {
	ids       Identities
	clusterID func() string
	service   string
	events    Events
	limiter   *auth.Limiter
	log       *slog.Logger
	now       func() time.Time
	builds    BuildSettingsReader

	keysMu sync.Mutex
	keys   *auth.KeySet
	kids   []string // fingerprint of keys: kid@retired, in order
	keysAt time.Time

	verified verifyCache

	// hashSlots bounds the argon2id hashes (about 19 MiB each) that
	// request handlers run at once; hashWait is how long a request waits
	// for a slot before it is answered 429.
	hashSlots chan struct{}
	hashWait  time.Duration

	dummyOnce sync.Once
	dummyHash string // compared against for unknown users (timing)
}

// NewAuth checks cfg and builds an Auth.
func NewAuth(cfg AuthConfig) (*Auth, error) {
	var errs []error
	if cfg.Identities == nil {
		errs = append(errs, errors.New("registryapi: AuthConfig.Identities is required"))
	}
	if cfg.ClusterID == nil {
		errs = append(errs, errors.New("registryapi: AuthConfig.ClusterID is required"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("registryapi: AuthConfig.Logger is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a := &Auth{
		ids:       cfg.Identities,
		clusterID: cfg.ClusterID,
		service:   cfg.Service,
		events:    cfg.Events,
		limiter:   cfg.Limiter,
		log:       cfg.Logger,
		now:       cfg.Now,
		builds:    cfg.Builds,
	}
	if a.service == "" {
		a.service = DefaultService
	}
	if a.events == nil {
		a.events = discardEvents{}
	}
	if a.limiter == nil {
		a.limiter = auth.NewLimiter(loginFailures, loginWindow)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.verified.m = map[[32]byte]time.Time{}
	a.hashSlots = make(chan struct{}, max(2, runtime.NumCPU()))
	a.hashWait = hashSlotWait
	return a, nil
}

// hashSlotWait is how long a request waits for a free password hashing
// slot before it is answered 429.
const hashSlotWait = 2 * time.Second

// hashSlot takes one of the password hashing slots, waiting at most
// a.hashWait (or until ctx ends). None free in time is a 429 apiError
// wrapping ErrRateLimited, with Retry-After: 1. release gives it back.
func (a *Auth) hashSlot(ctx context.Context) (release func(), err error) {
	select {
	case a.hashSlots <- struct{}{}:
		return func() { <-a.hashSlots }, nil
	default:
	}
	t := time.NewTimer(a.hashWait)
	defer t.Stop()
	select {
	case a.hashSlots <- struct{}{}:
		return func() { <-a.hashSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		e := &apiError{code: codeTooManyRequests, message: "too many password checks at once, retry in 1 second", cause: hubmesh.ErrRateLimited}
		return nil, e.withHeader("Retry-After", "1")
	}
}

// checkPassword is auth.CheckPassword inside a hashing slot.
func (a *Auth) checkPassword(ctx context.Context, hash, password string) (bool, error) {
	release, err := a.hashSlot(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	return auth.CheckPassword(hash, password), nil
}

// hashPassword is auth.HashPassword inside a hashing slot. A password the
// hasher refuses is a 400 apiError.
func (a *Auth) hashPassword(ctx context.Context, password string) (string, error) {
	release, err := a.hashSlot(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	hash, err := auth.HashPassword(password)
	if err != nil {
		return "", newError(codeBadRequest, "password: %v", err)
	}
	return hash, nil
}

// clientLimitKey is the login limiter key of a client address: the
// address itself, or its /64 prefix for IPv6 (one host usually holds a
// whole /64, so per-address keys would not limit it).
func clientLimitKey(client string) string {
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return "client:" + client
	}
	ip = ip.Unmap()
	if !ip.Is6() {
		return "client:" + ip.String()
	}
	p, err := ip.WithZone("").Prefix(64)
	if err != nil {
		return "client:" + client
	}
	return "client:" + p.String()
}

// Service is the token service name (the JWT audience).
func (a *Auth) Service() string { return a.service }

func (a *Auth) issuer() string { return "hubmesh:" + a.clusterID() }

// identity is who a request comes from.
type identity struct {
	user   string // "" for anonymous
	admin  bool   // site administrator
	method string // how it authenticated, one of the method* constants
	// tokenID and scopes are set when a personal access token stands
	// behind the credential: scopes cap what it may do.
	tokenID string
	scopes  []string
	// access is what a registry token grants (methodAccess only).
	access []auth.Access
	// buildRepo and buildID are set for the token of an automated build
	// (Auth.BuildToken): it may push to buildRepo, and to nothing else.
	buildRepo, buildID string
}

// Authentication methods.
const (
	methodNone     = ""         // no credentials
	methodPassword = "password" // Basic with the account password
	methodPAT      = "token"    // personal access token (Basic or Bearer)
	methodAccess   = "access"   // registry token from /token
	methodSession  = "session"  // API session token from /api/v1/users/login
)

// authenticated reports whether the request carried valid credentials
// (an anonymous registry token counts).
func (id identity) authenticated() bool { return id.method != methodNone }

// capped reports whether a token scope below admin limits the identity.
func (id identity) capped() bool {
	return len(id.scopes) > 0 && !slices.Contains(id.scopes, hubmesh.ScopeAdmin)
}

// bearerKinds are the JWT kinds a surface accepts as Bearer credentials.
type bearerKinds struct{ access, session bool }

// clientAddr is the client's address (the host of RemoteAddr): proxies'
// forwarding headers are not trusted, since anyone can send them.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// authenticate reads the Authorization header of r. No header is the
// anonymous identity; bad credentials are an error wrapping
// ErrUnauthenticated (an *apiError when the client should be told more),
// too many failures an *apiError with Retry-After.
func (a *Auth) authenticate(r *http.Request, kinds bearerKinds) (identity, error) {
	creds, err := auth.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return identity{}, newError(codeUnauthorized, "malformed Authorization header")
	}
	switch creds.Scheme {
	case auth.SchemeBasic:
		return a.login(r.Context(), creds.Username, creds.Password, clientAddr(r), "basic auth")
	case auth.SchemeBearer:
		return a.bearer(r.Context(), creds.Token, clientAddr(r), kinds)
	}
	return identity{}, nil
}

// errBadLogin is what every failed login says, whatever failed.
var errBadLogin = fmt.Errorf("incorrect username or password: %w", hubmesh.ErrUnauthenticated)

// limited returns a 429 error when key has failed too often.
func (a *Auth) limited(now time.Time, keys ...string) error {
	var wait time.Duration
	blocked := false
	for _, k := range keys {
		if d, ok := a.limiter.Allow(k, now); !ok {
			wait, blocked = max(wait, d), true
		}
	}
	if !blocked {
		return nil
	}
	secs := int64((wait + time.Second - 1) / time.Second)
	return newError(codeTooManyRequests, "too many failed login attempts, retry in %d seconds", secs).
		withHeader("Retry-After", strconv.FormatInt(max(secs, 1), 10))
}

// login checks a user name and a password (or an access token used as
// one). Failures count against the user name and the client address.
func (a *Auth) login(ctx context.Context, user, password, client, via string) (identity, error) {
	now := a.now()
	userKey, clientKey := "user:"+user, clientLimitKey(client)
	if err := a.limited(now, userKey, clientKey); err != nil {
		return identity{}, err
	}
	id, err := a.checkLogin(ctx, user, password, now)
	if errors.Is(err, hubmesh.ErrUnauthenticated) {
		a.limiter.Fail(userKey, now)
		a.limiter.Fail(clientKey, now)
		a.events.Audit(hubmesh.AuditEvent{Time: now, Action: "login.failed", Actor: truncate(user, 64), Client: client, Detail: via})
		return identity{}, errBadLogin
	}
	if err != nil {
		return identity{}, err
	}
	a.limiter.Reset(userKey)
	return id, nil
}

func (a *Auth) checkLogin(ctx context.Context, user, password string, now time.Time) (identity, error) {
	if user == "" || len(user) > 255 || password == "" || len(password) > maxCredentialLen {
		return identity{}, errBadLogin
	}
	if tokID, hash, ok := auth.ParseAccessToken(password); ok {
		return a.checkAccessToken(ctx, user, tokID, hash, now)
	}
	u, err := a.ids.User(ctx, user)
	if errors.Is(err, hubmesh.ErrNotFound) {
		if err := a.dummyCheck(ctx, password); err != nil {
			return identity{}, err
		}
		return identity{}, errBadLogin
	}
	if err != nil {
		return identity{}, err
	}
	if u.Disabled || u.PasswordHash == "" {
		return identity{}, errBadLogin
	}
	key := verifyKey(user, password, u.PasswordHash)
	if !a.verified.hit(key, now) {
		ok, err := a.checkPassword(ctx, u.PasswordHash, password)
		if err != nil {
			return identity{}, err
		}
		if !ok {
			return identity{}, errBadLogin
		}
		a.verified.add(key, now)
	}
	return identity{user: u.Name, admin: u.Admin, method: methodPassword}, nil
}

// dummyCheck spends the time of a password check, so that an unknown user
// name answers as slowly as a wrong password.
func (a *Auth) dummyCheck(ctx context.Context, password string) error {
	release, err := a.hashSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	a.dummyOnce.Do(func() {
		a.dummyHash, _ = auth.HashPassword("hubmesh-no-such-user")
	})
	auth.CheckPassword(a.dummyHash, password)
	return nil
}

// checkAccessToken checks a personal access token; user, when not empty,
// must be its owner.
func (a *Auth) checkAccessToken(ctx context.Context, user, tokID, hash string, now time.Time) (identity, error) {
	tok, err := a.ids.Token(ctx, tokID)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return identity{}, errBadLogin
	}
	if err != nil {
		return identity{}, err
	}
	if subtle.ConstantTimeCompare([]byte(hash), []byte(tok.Hash)) != 1 ||
		user != "" && user != tok.User ||
		!tok.Expires.IsZero() && !now.Before(tok.Expires) {
		return identity{}, errBadLogin
	}
	u, err := a.activeUser(ctx, tok.User)
	if err != nil {
		return identity{}, err
	}
	a.events.TokenUsed(tok.ID, now)
	return identity{user: u.Name, admin: u.Admin, method: methodPAT, tokenID: tok.ID, scopes: tokenScopes(tok)}, nil
}

// tokenScopes are the scopes that cap a token; a token stored without any
// is capped to read rather than not at all.
func tokenScopes(t hubmesh.AccessToken) []string {
	if len(t.Scopes) == 0 {
		return []string{hubmesh.ScopeRead}
	}
	return slices.Clone(t.Scopes)
}

// activeUser loads a user that must exist and be enabled; otherwise the
// credential naming it is refused.
func (a *Auth) activeUser(ctx context.Context, name string) (hubmesh.User, error) {
	u, err := a.ids.User(ctx, name)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return hubmesh.User{}, fmt.Errorf("user %q: %w", truncate(name, 64), hubmesh.ErrUnauthenticated)
	}
	if err != nil {
		return hubmesh.User{}, err
	}
	if u.Disabled {
		return hubmesh.User{}, fmt.Errorf("user %q is disabled: %w", u.Name, hubmesh.ErrUnauthenticated)
	}
	return u, nil
}

// invalidTokenError is a bearer token that does not verify (or names a
// user that is gone): the challenge says error="invalid_token".
type invalidTokenError struct{ err error }

func (e *invalidTokenError) Error() string { return "invalid token: " + e.err.Error() }
func (e *invalidTokenError) Unwrap() error { return e.err }

func invalidToken(err error) error { return &invalidTokenError{err} }

// bearer checks a Bearer credential: a personal access token or a JWT of
// one of the kinds given.
func (a *Auth) bearer(ctx context.Context, token, client string, kinds bearerKinds) (identity, error) {
	now := a.now()
	if tokID, hash, ok := auth.ParseAccessToken(token); ok {
		clientKey := clientLimitKey(client)
		if err := a.limited(now, clientKey); err != nil {
			return identity{}, err
		}
		id, err := a.checkAccessToken(ctx, "", tokID, hash, now)
		if errors.Is(err, hubmesh.ErrUnauthenticated) {
			a.limiter.Fail(clientKey, now)
			return identity{}, invalidToken(err)
		}
		return id, err
	}
	_, kind := peekJWT(token)
	var aud string
	switch {
	case kind == auth.KindAccess && kinds.access:
		aud = a.service
	case kind == auth.KindSession && kinds.session:
		aud = SessionAudience
	default:
		return identity{}, invalidToken(fmt.Errorf("token kind %.20q not accepted here: %w", kind, hubmesh.ErrUnauthenticated))
	}
	c, err := a.verifyJWT(ctx, token, aud, kind, now)
	if err != nil {
		return identity{}, err
	}
	id, err := a.tokenIdentity(ctx, c, now)
	if errors.Is(err, hubmesh.ErrUnauthenticated) {
		return identity{}, invalidToken(err)
	}
	return id, err
}

// verifyJWT verifies a token of one kind and audience, issued by this
// cluster. A token that does not verify is an *invalidTokenError.
func (a *Auth) verifyJWT(ctx context.Context, token, aud, kind string, now time.Time) (auth.Claims, error) {
	kid, _ := peekJWT(token)
	ks, err := a.keySet(ctx, kid)
	if err != nil {
		return auth.Claims{}, err
	}
	c, err := ks.Verify(token, a.issuer(), aud, kind, now)
	if err != nil {
		return auth.Claims{}, invalidToken(err)
	}
	return c, nil
}

// tokenIdentity turns verified claims into an identity: the subject must
// still be an active user, a session or refresh token must postdate the
// last password change, and one obtained with an access token keeps its
// cap and dies with it.
func (a *Auth) tokenIdentity(ctx context.Context, c auth.Claims, now time.Time) (identity, error) {
	id := identity{method: methodSession}
	if c.Kind == auth.KindAccess {
		id.method = methodAccess
		id.access = c.Access
	}
	if c.Subject == "" {
		if c.Kind != auth.KindAccess {
			return identity{}, fmt.Errorf("token without subject: %w", hubmesh.ErrUnauthenticated)
		}
		id.buildRepo, id.buildID = buildOf(c.Access)
		return id, nil
	}
	u, err := a.activeUser(ctx, c.Subject)
	if err != nil {
		return identity{}, err
	}
	id.user, id.admin = u.Name, u.Admin
	if c.Kind == auth.KindAccess {
		return id, nil
	}
	if c.IssuedAt.Before(u.PasswordChanged.Truncate(time.Second)) {
		return identity{}, fmt.Errorf("token issued before the last password change: %w", hubmesh.ErrUnauthenticated)
	}
	for _, acc := range c.Access {
		if acc.Type != tokenMarker {
			continue
		}
		tok, err := a.ids.Token(ctx, acc.Name)
		if errors.Is(err, hubmesh.ErrNotFound) {
			return identity{}, fmt.Errorf("access token revoked: %w", hubmesh.ErrUnauthenticated)
		}
		if err != nil {
			return identity{}, err
		}
		if tok.User != u.Name || !tok.Expires.IsZero() && !now.Before(tok.Expires) {
			return identity{}, fmt.Errorf("access token expired: %w", hubmesh.ErrUnauthenticated)
		}
		a.events.TokenUsed(tok.ID, now)
		id.tokenID, id.scopes = tok.ID, tokenScopes(tok)
	}
	return id, nil
}

// tokenMarkerOf is the Access entry that ties a session or refresh token
// to the access token id authenticated with, if any.
func tokenMarkerOf(id identity) []auth.Access {
	if id.tokenID == "" {
		return nil
	}
	return []auth.Access{{Type: tokenMarker, Name: id.tokenID, Actions: []string{}}}
}

// buildOf reads the build marker of a registry token: the repository and
// build id of a token made by Auth.BuildToken, or "" when access is not
// exactly one build marker and one repository.
func buildOf(access []auth.Access) (repo, build string) {
	for _, acc := range access {
		switch {
		case acc.Type == buildMarker && build == "" && acc.Name != "":
			build = acc.Name
		case acc.Type == "repository" && repo == "":
			repo = acc.Name
		default:
			return "", ""
		}
	}
	if repo == "" || build == "" {
		return "", ""
	}
	return repo, build
}

// peekJWT reads the kid of the header and the typ claim of a compact JWT
// without verifying it, to pick the keys and the audience to verify with.
func peekJWT(token string) (kid, typ string) {
	if len(token) > maxCredentialLen {
		return "", ""
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", ""
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	var body struct {
		Typ string `json:"typ"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
		_ = json.Unmarshal(b, &hdr)
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
		_ = json.Unmarshal(b, &body)
	}
	return hdr.Kid, body.Typ
}

// keySet returns the parsed signing keys, re-reading them when the cache
// is older than keysMaxAge, or when kid is unknown (at most once per
// keysMinRefresh, so that random kids cannot make every request read).
func (a *Auth) keySet(ctx context.Context, kid string) (*auth.KeySet, error) {
	a.keysMu.Lock()
	defer a.keysMu.Unlock()
	now := a.now()
	age := now.Sub(a.keysAt)
	if a.keys != nil && age >= 0 {
		known := kid == "" || slices.ContainsFunc(a.kids, func(k string) bool { return strings.HasPrefix(k, kid+"@") })
		if age < keysMaxAge && known || !known && age < keysMinRefresh {
			return a.keys, nil
		}
	}
	keys, err := a.ids.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	kids := make([]string, 0, len(keys))
	for _, k := range keys {
		kids = append(kids, k.ID+"@"+strconv.FormatInt(k.Retired.UnixNano(), 10))
	}
	if a.keys == nil || !slices.Equal(kids, a.kids) {
		ks, err := auth.NewKeySet(keys)
		if err != nil {
			return nil, fmt.Errorf("signing keys: %w", err)
		}
		a.keys, a.kids = ks, kids
	}
	a.keysAt = now
	return a.keys, nil
}

// forgetKeys drops the cached key set (after a rotation on this node).
func (a *Auth) forgetKeys() {
	a.keysMu.Lock()
	defer a.keysMu.Unlock()
	a.keysAt = time.Time{}
}

// sign signs c with the current key set.
func (a *Auth) sign(ctx context.Context, c auth.Claims) (string, error) {
	ks, err := a.keySet(ctx, "")
	if err != nil {
		return "", err
	}
	return ks.Sign(c)
}

// verifyCache remembers successful password checks for verifyTTL.
type verifyCache struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time // expiry
}

// verifyKey binds a cached verification to the user, the password and
// the stored hash, so that a password change invalidates it.
func verifyKey(user, password, hash string) [32]byte {
	return sha256.Sum256([]byte(user + ":" + password + ":" + hash))
}

func (c *verifyCache) hit(k [32]byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[k]
	if ok && !now.Before(exp) {
		delete(c.m, k)
		return false
	}
	return ok
}

func (c *verifyCache) add(k [32]byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= verifyMaxSize {
		for key, exp := range c.m {
			if !now.Before(exp) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= verifyMaxSize {
			clear(c.m) // bounded: rather re-hash than grow
		}
	}
	c.m[k] = now.Add(verifyTTL)
}
