package registryapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// maxTokenLabel bounds the label of an access token.
const maxTokenLabel = 100

// tokenView is an access token as Docker Hub shows it; Token (the secret)
// only in the answer that creates it.
type tokenView struct {
	UUID      string     `json:"uuid"`
	Username  string     `json:"username"`
	Label     string     `json:"token_label"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	LastUsed  *time.Time `json:"last_used"`
	IsActive  bool       `json:"is_active"`
	Token     string     `json:"token,omitempty"`
}

func viewToken(t hubmesh.AccessToken, now time.Time) tokenView {
	v := tokenView{
		UUID: t.ID, Username: t.User, Label: t.Label, Scopes: t.Scopes, CreatedAt: t.Created,
		IsActive: t.Expires.IsZero() || now.Before(t.Expires),
	}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if !t.Expires.IsZero() {
		e := t.Expires
		v.ExpiresAt = &e
	}
	if !t.LastUsed.IsZero() {
		l := t.LastUsed
		v.LastUsed = &l
	}
	return v
}

// tokenScopeNames reads scopes as Hub ("repo:read") or hubmesh ("read")
// spells them.
func tokenScopeNames(in []string) ([]string, error) {
	var out []string
	for _, s := range in {
		s = strings.TrimPrefix(s, "repo:")
		switch s {
		case hubmesh.ScopeRead, hubmesh.ScopeWrite, hubmesh.ScopeDelete, hubmesh.ScopeAdmin:
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		default:
			return nil, newError(codeBadRequest, "scope %q is invalid: want read, write, delete or admin", truncate(s, 40))
		}
	}
	if len(out) == 0 {
		return nil, newError(codeBadRequest, "scopes is required: read, write, delete or admin")
	}
	return out, nil
}

// createToken serves POST /api/v1/access-tokens {token_label, scopes,
// expires_in (seconds) | expires_at}: the answer holds the secret, once.
func (h *Hub) createToken(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		Label     string     `json:"token_label"`
		Scopes    []string   `json:"scopes"`
		ExpiresIn *int64     `json:"expires_in"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.Label) > maxTokenLabel {
		return newError(codeBadRequest, "token_label is longer than %d bytes", maxTokenLabel)
	}
	scopes, err := tokenScopeNames(req.Scopes)
	if err != nil {
		return err
	}
	now := h.auth.now().UTC()
	var expires time.Time
	switch {
	case req.ExpiresIn != nil && req.ExpiresAt != nil:
		return newError(codeBadRequest, "give expires_in or expires_at, not both")
	case req.ExpiresIn != nil:
		if *req.ExpiresIn <= 0 || *req.ExpiresIn > 100*365*24*3600 {
			return newError(codeBadRequest, "expires_in must be a positive number of seconds")
		}
		expires = now.Add(time.Duration(*req.ExpiresIn) * time.Second)
	case req.ExpiresAt != nil:
		if !req.ExpiresAt.After(now) {
			return newError(codeBadRequest, "expires_at is in the past")
		}
		expires = req.ExpiresAt.UTC()
	}
	secret, tokID, hash, err := auth.NewAccessToken()
	if err != nil {
		return err
	}
	t := hubmesh.AccessToken{ID: tokID, User: id.user, Label: req.Label, Hash: hash, Scopes: scopes, Created: now, Expires: expires}
	if err := h.accounts.CreateToken(r.Context(), t); err != nil {
		return err
	}
	h.audit(r, id, "token.create", tokID, "scopes="+strings.Join(scopes, ","))
	v := viewToken(t, now)
	v.Token = secret
	return writeJSON(w, http.StatusCreated, "application/json", v)
}

// listTokens serves GET /api/v1/access-tokens: the caller's tokens (a site
// admin may ask for another user's with ?username=).
func (h *Hub) listTokens(w http.ResponseWriter, r *http.Request, id identity) error {
	user := id.user
	if u := r.URL.Query().Get("username"); u != "" && u != id.user {
		if !id.admin {
			return newError(codeDenied, "only site administrators may list the tokens of others")
		}
		user = u
	}
	toks, err := h.accounts.Tokens(r.Context(), user)
	if err != nil {
		return userError(user, err)
	}
	now := h.auth.now()
	out := make([]tokenView, 0, len(toks))
	for _, t := range toks {
		out = append(out, viewToken(t, now))
	}
	return writePage(w, r, hubmesh.Page{N: len(out)}, out, false, "")
}

// ownToken loads the token of the URL if it is the caller's (or the caller
// is an admin); anybody else's is a 404.
func (h *Hub) ownToken(r *http.Request, id identity) (hubmesh.AccessToken, error) {
	tokID := r.PathValue("uuid")
	t, err := h.accounts.Token(r.Context(), tokID)
	if err == nil && !id.admin && t.User != id.user {
		err = hubmesh.ErrNotFound
	}
	if errors.Is(err, hubmesh.ErrNotFound) {
		return t, &apiError{code: codeNotFound, message: fmt.Sprintf("access token %q not found", truncate(tokID, 60)), cause: err}
	}
	return t, err
}

// getToken serves GET /api/v1/access-tokens/{uuid}.
func (h *Hub) getToken(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.ownToken(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", viewToken(t, h.auth.now()))
}

// deleteToken serves DELETE /api/v1/access-tokens/{uuid}: the token stops
// working at once (sessions and refresh tokens made with it too).
func (h *Hub) deleteToken(w http.ResponseWriter, r *http.Request, id identity) error {
	t, err := h.ownToken(r, id)
	if err != nil {
		return err
	}
	if err := h.accounts.DeleteToken(r.Context(), t.ID); err != nil {
		return err
	}
	h.audit(r, id, "token.revoke", t.ID, "user="+t.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listAudit serves GET /api/v1/audit?page_size=&last= (site admins):
// events oldest first, paged by id.
func (h *Hub) listAudit(w http.ResponseWriter, r *http.Request, _ identity) error {
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	evs, more, err := fetchPage(p, func(p hubmesh.Page) ([]hubmesh.AuditEvent, error) { return h.accounts.Audit(r.Context(), p) })
	if err != nil {
		return err
	}
	last := ""
	if len(evs) > 0 {
		last = evs[len(evs)-1].ID
	}
	return writePage(w, r, p, evs, more, last)
}

// getSettings serves GET /api/v1/settings (site admins).
func (h *Hub) getSettings(w http.ResponseWriter, r *http.Request, _ identity) error {
	s, err := h.accounts.Settings(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", s)
}

// patchSettings serves PATCH /api/v1/settings {open_signup} (site admins).
func (h *Hub) patchSettings(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		OpenSignup *bool `json:"open_signup"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	s, err := h.accounts.Settings(r.Context())
	if err != nil {
		return err
	}
	if req.OpenSignup != nil && *req.OpenSignup != s.OpenSignup {
		s.OpenSignup = *req.OpenSignup
		if err := h.accounts.SetSettings(r.Context(), s); err != nil {
			return err
		}
		h.audit(r, id, "settings.change", "", fmt.Sprintf("open_signup=%t", s.OpenSignup))
	}
	return writeJSON(w, http.StatusOK, "application/json", s)
}

// rotateKeys serves POST /api/v1/keys/rotate (site admins): a new signing
// key signs from now on; the old ones verify until their tokens expire.
func (h *Hub) rotateKeys(w http.ResponseWriter, r *http.Request, id identity) error {
	now := h.auth.now().UTC()
	k, err := auth.NewSigningKey(now)
	if err != nil {
		return err
	}
	if err := h.accounts.AddSigningKey(r.Context(), k, now); err != nil {
		return err
	}
	h.auth.forgetKeys()
	h.audit(r, id, "key.rotate", k.ID, "")
	return writeJSON(w, http.StatusOK, "application/json", struct {
		Kid     string    `json:"kid"`
		Created time.Time `json:"created"`
	}{k.ID, k.Created})
}
