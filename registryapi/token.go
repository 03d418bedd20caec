package registryapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// maxTokenForm bounds the body of POST /token.
const maxTokenForm = 64 << 10

// TokenHandler serves /token, the Docker registry token service
// (distribution's token and OAuth2 specifications):
//
//	GET  /token?service=&scope=...&offline_token=true&client_id=   [Basic auth optional]
//	POST /token  grant_type=password|refresh_token (form)
//
// Granted access is what was requested and is allowed, per scope; a
// repository the subject cannot see is left out of the token.
type TokenHandler struct {
	a   *Auth
	log *slog.Logger
}

// NewTokenHandler builds the token service over a.
func NewTokenHandler(a *Auth) (*TokenHandler, error) {
	if a == nil {
		return nil, errors.New("registryapi: NewTokenHandler needs an Auth")
	}
	return &TokenHandler{a: a, log: a.log}, nil
}

// tokenResponse is the body of a successful /token request.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// oauthError is an OAuth2 error answer of POST /token (RFC 6749 5.2).
type oauthError struct {
	status  int
	code    string
	message string
	cause   error
	retry   string // Retry-After of a 429
}

func (e *oauthError) Error() string { return e.code + ": " + e.message }
func (e *oauthError) Unwrap() error { return e.cause }

// ServeHTTP implements http.Handler.
func (t *TokenHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	rw := &responseWriter{ResponseWriter: w}
	var err error
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		err = t.get(rw, r)
	case http.MethodPost:
		err = t.post(rw, r)
		if err != nil && !rw.wroteHeader {
			t.writeOAuthError(rw, r, err)
			return
		}
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		err = newError(codeMethodNotAllowed, "method %s not allowed on /token", truncate(r.Method, 20))
	}
	switch {
	case err == nil:
	case rw.wroteHeader:
		t.log.Debug("response aborted", "route", "/token", "err", err)
	default:
		writeError(t.log, rw, r, "/token", err)
	}
}

// get serves GET /token: Basic credentials are optional (none gives an
// anonymous token); offline_token=true with credentials adds a refresh
// token.
func (t *TokenHandler) get(w http.ResponseWriter, r *http.Request) error {
	id, err := t.a.authenticate(r, bearerKinds{session: true})
	if err != nil {
		if ae := toAPIError(err); ae.code == codeUnauthorized {
			return (&apiError{code: codeUnauthorized, message: ae.Error(), cause: err}).
				withHeader("WWW-Authenticate", `Basic realm="`+t.a.service+`"`)
		}
		return err
	}
	q := r.URL.Query()
	scopes, err := auth.ParseScopes(q["scope"])
	if err != nil {
		return newError(codeBadRequest, "invalid scope: %v", err)
	}
	offline := q.Get("offline_token") == "true"
	if offline && id.user != "" {
		t.a.events.Audit(hubmesh.AuditEvent{Time: t.a.now(), Action: "login", Actor: id.user, Client: clientAddr(r), Detail: "token service (" + id.method + ")"})
	}
	resp, err := t.issue(r.Context(), id, scopes, offline)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", resp)
}

// post serves the OAuth2 form POST /token.
func (t *TokenHandler) post(w http.ResponseWriter, r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return &oauthError{status: http.StatusBadRequest, code: "invalid_request", message: "want a form body (application/x-www-form-urlencoded)"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		return &oauthError{status: http.StatusBadRequest, code: "invalid_request", message: "malformed form body"}
	}
	f := r.PostForm
	scopes, err := auth.ParseScopes(f["scope"])
	if err != nil {
		return &oauthError{status: http.StatusBadRequest, code: "invalid_scope", message: err.Error()}
	}
	offline := f.Get("access_type") == "offline"
	ctx := r.Context()
	var id identity
	switch f.Get("grant_type") {
	case "password":
		id, err = t.a.login(ctx, f.Get("username"), f.Get("password"), clientAddr(r), "token service")
		if err == nil {
			t.a.events.Audit(hubmesh.AuditEvent{Time: t.a.now(), Action: "login", Actor: id.user, Client: clientAddr(r), Detail: "token service (" + id.method + ")"})
		}
	case "refresh_token":
		id, err = t.refresh(ctx, f.Get("refresh_token"))
	case "":
		return &oauthError{status: http.StatusBadRequest, code: "invalid_request", message: "grant_type is required"}
	default:
		return &oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type", message: "grant_type must be password or refresh_token"}
	}
	if err != nil {
		return err
	}
	resp, err := t.issue(ctx, id, scopes, offline)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", resp)
}

// refresh checks a refresh token: issued by this cluster for this
// service, after the user's last password change, to a user that is
// still active (and through an access token that still exists).
func (t *TokenHandler) refresh(ctx context.Context, token string) (identity, error) {
	if token == "" {
		return identity{}, &oauthError{status: http.StatusBadRequest, code: "invalid_request", message: "refresh_token is required"}
	}
	now := t.a.now()
	c, err := t.a.verifyJWT(ctx, token, t.a.service, auth.KindRefresh, now)
	if err != nil {
		return identity{}, err
	}
	return t.a.tokenIdentity(ctx, c, now)
}

// issue signs a registry token granting scopes as far as id may, and a
// refresh token when offline and id names a user.
func (t *TokenHandler) issue(ctx context.Context, id identity, scopes []auth.Scope, offline bool) (tokenResponse, error) {
	access, err := t.a.grant(ctx, id, scopes)
	if err != nil {
		return tokenResponse{}, err
	}
	now := t.a.now().UTC().Truncate(time.Second)
	tok, err := t.a.sign(ctx, auth.Claims{
		Kind: auth.KindAccess, Issuer: t.a.issuer(), Subject: id.user, Audience: t.a.service,
		IssuedAt: now, NotBefore: now, Expires: now.Add(auth.AccessTokenTTL), Access: access,
	})
	if err != nil {
		return tokenResponse{}, err
	}
	resp := tokenResponse{
		Token: tok, AccessToken: tok,
		ExpiresIn: int(auth.AccessTokenTTL / time.Second),
		IssuedAt:  now.Format(time.RFC3339),
	}
	if offline && id.user != "" {
		resp.RefreshToken, err = t.a.sign(ctx, auth.Claims{
			Kind: auth.KindRefresh, Issuer: t.a.issuer(), Subject: id.user, Audience: t.a.service,
			IssuedAt: now, NotBefore: now, Expires: now.Add(auth.RefreshTTL), Access: tokenMarkerOf(id),
		})
		if err != nil {
			return tokenResponse{}, err
		}
	}
	return resp, nil
}

// grant computes the access of a registry token: per requested scope,
// the requested actions the subject may perform. A repository the subject
// cannot see is left out; the catalog is granted to anyone (it lists only
// what the caller may see).
func (a *Auth) grant(ctx context.Context, id identity, scopes []auth.Scope) ([]auth.Access, error) {
	out := []auth.Access{}
	for _, sc := range scopes {
		switch sc.Type {
		case "repository":
			f, err := a.ids.AccessFacts(ctx, id.user, sc.Name)
			if err != nil {
				return nil, err
			}
			if !auth.Visible(f) || id.user != "" && (!f.UserExists || f.UserDisabled) {
				continue
			}
			allowed := auth.CapActions(auth.Actions(f), id.scopes)
			if slices.Contains(allowed, auth.ActionPush) {
				refused, err := a.manualPushRefused(ctx, sc.Name)
				if err != nil {
					return nil, err
				}
				if refused {
					// only the repository's builds push to it (BuildToken)
					allowed = slices.DeleteFunc(allowed, func(s string) bool { return s == auth.ActionPush })
				}
			}
			out = append(out, auth.Access{Type: sc.Type, Name: sc.Name, Actions: auth.Intersect(sc.Actions, allowed)})
		case "registry":
			out = append(out, auth.Access{Type: sc.Type, Name: sc.Name, Actions: auth.Intersect(sc.Actions, []string{auth.ActionAll})})
		}
	}
	return out, nil
}

// writeOAuthError answers a failed POST /token in the OAuth2 format: bad
// credentials are invalid_grant (400), as distribution's token server
// does; too many failures 429; a server failure 5xx without details.
func (t *TokenHandler) writeOAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		ae := toAPIError(err)
		row := errorTable[ae.code]
		switch {
		case ae.code == codeUnauthorized:
			oe = &oauthError{status: http.StatusBadRequest, code: "invalid_grant", message: ae.Error()}
		case ae.code == codeTooManyRequests:
			oe = &oauthError{status: http.StatusTooManyRequests, code: "invalid_grant", message: ae.Error(), retry: ae.header("Retry-After")}
		case row.status >= 500:
			if row.status == http.StatusServiceUnavailable {
				t.log.Warn("token request refused, retry later", "err", err)
				oe = &oauthError{status: row.status, code: "temporarily_unavailable", message: row.message, retry: retryAfterSeconds}
			} else {
				t.log.Error("token request failed", "err", err)
				oe = &oauthError{status: row.status, code: "server_error", message: row.message}
			}
		default:
			oe = &oauthError{status: http.StatusBadRequest, code: "invalid_request", message: ae.Error()}
		}
	}
	if oe.retry != "" {
		w.Header().Set("Retry-After", oe.retry)
	}
	_ = writeJSON(w, oe.status, "application/json", struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{oe.code, oe.message})
}

// MaxBuildTokenTTL bounds the lifetime of a build's registry token.
const MaxBuildTokenTTL = 2 * time.Hour

// BuildToken signs the registry token an automated build pushes with: an
// access token without a subject granting pull and push on repo only, and
// carrying the build id. It is the one credential that may push to a
// repository whose build settings disable manual pushes. ttl is capped at
// MaxBuildTokenTTL.
func (a *Auth) BuildToken(repo, buildID string, ttl time.Duration) (string, error) {
	if !validName(repo) {
		return "", fmt.Errorf("build token: invalid repository name %q: %w", truncate(repo, 300), hubmesh.ErrInvalid)
	}
	if buildID == "" || len(buildID) > 128 {
		return "", fmt.Errorf("build token: build id %q: %w", truncate(buildID, 130), hubmesh.ErrInvalid)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("build token: ttl %v must be positive: %w", ttl, hubmesh.ErrInvalid)
	}
	ttl = min(ttl, MaxBuildTokenTTL)
	now := a.now().UTC().Truncate(time.Second)
	return a.sign(context.Background(), auth.Claims{
		Kind: auth.KindAccess, Issuer: a.issuer(), Audience: a.service,
		IssuedAt: now, NotBefore: now, Expires: now.Add(ttl),
		Access: []auth.Access{
			{Type: "repository", Name: repo, Actions: []string{auth.ActionPull, auth.ActionPush}},
			{Type: buildMarker, Name: buildID, Actions: []string{}},
		},
	})
}
