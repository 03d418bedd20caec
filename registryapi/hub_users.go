package registryapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// accountNameRE is the grammar of user and organization names (2 to 30
// characters).
var accountNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,28}[a-z0-9]$`)

// teamNameRE is the grammar of team names.
var teamNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,30}$`)

func checkAccountName(kind, name string) error {
	if !accountNameRE.MatchString(name) {
		return newError(codeBadRequest, "%s name %q is invalid: 2 to 30 characters, lower-case letters, digits, '_' and '-', starting and ending with a letter or digit", kind, truncate(name, 60))
	}
	return nil
}

func checkEmail(email string) error {
	if email == "" {
		return nil
	}
	at := strings.IndexByte(email, '@')
	if len(email) > 254 || at < 1 || at == len(email)-1 || strings.ContainsAny(email, " \t\r\n<>\"") {
		return newError(codeBadRequest, "email %q is invalid", truncate(email, 60))
	}
	return nil
}

// userView is a user as its owner and site admins see it.
type userView struct {
	Username   string    `json:"username"`
	Email      string    `json:"email,omitempty"`
	IsAdmin    bool      `json:"is_admin"`
	IsActive   bool      `json:"is_active"`
	DateJoined time.Time `json:"date_joined"`
	Type       string    `json:"type"`
	Orgs       []string  `json:"orgs,omitempty"`
}

// publicUserView is a user as anyone else sees it.
type publicUserView struct {
	Username   string    `json:"username"`
	DateJoined time.Time `json:"date_joined"`
	Type       string    `json:"type"`
}

func viewUser(u hubmesh.User) userView {
	return userView{Username: u.Name, Email: u.Email, IsAdmin: u.Admin, IsActive: !u.Disabled, DateJoined: u.Created, Type: "User"}
}

// login serves POST /api/v1/users/login {username, password} -> {token}:
// an API session token (an access token works as the password, and the
// session keeps its scope).
func (h *Hub) login(w http.ResponseWriter, r *http.Request, _ identity) error {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Username == "" || req.Password == "" {
		return newError(codeBadRequest, "username and password are required")
	}
	id, err := h.auth.login(r.Context(), req.Username, req.Password, clientAddr(r), "api login")
	if err != nil {
		return err
	}
	now := h.auth.now().UTC().Truncate(time.Second)
	tok, err := h.auth.sign(r.Context(), auth.Claims{
		Kind: auth.KindSession, Issuer: h.auth.issuer(), Subject: id.user, Audience: SessionAudience,
		IssuedAt: now, NotBefore: now, Expires: now.Add(auth.SessionTTL), Access: tokenMarkerOf(id),
	})
	if err != nil {
		return err
	}
	h.audit(r, id, "login", id.user, "api ("+id.method+")")
	return writeJSON(w, http.StatusOK, "application/json", struct {
		Token string `json:"token"`
	}{tok})
}

// listUsers serves GET /api/v1/users (site admins).
func (h *Hub) listUsers(w http.ResponseWriter, r *http.Request, _ identity) error {
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	users, more, err := fetchPage(p, func(p hubmesh.Page) ([]hubmesh.User, error) { return h.accounts.Users(r.Context(), p) })
	if err != nil {
		return err
	}
	out := make([]userView, 0, len(users))
	for _, u := range users {
		out = append(out, viewUser(u))
	}
	last := ""
	if len(users) > 0 {
		last = users[len(users)-1].Name
	}
	return writePage(w, r, p, out, more, last)
}

// createUser serves POST /api/v1/users: signup when the cluster allows
// open signup, otherwise site admins only. Only an admin may create an
// admin.
func (h *Hub) createUser(w http.ResponseWriter, r *http.Request, id identity) error {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Email    string `json:"email"`
		IsAdmin  bool   `json:"is_admin"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if !id.admin {
		s, err := h.accounts.Settings(r.Context())
		if err != nil {
			return err
		}
		switch {
		case !s.OpenSignup && id.user == "":
			return newError(codeUnauthorized, "signup is closed: only site administrators create accounts")
		case !s.OpenSignup:
			return newError(codeDenied, "signup is closed: only site administrators create accounts")
		case req.IsAdmin:
			return newError(codeDenied, "only site administrators may create administrators")
		}
	}
	if err := checkAccountName("user", req.Username); err != nil {
		return err
	}
	if err := checkEmail(req.Email); err != nil {
		return err
	}
	// A taken name is refused before the costly hash.
	if err := h.nameFree(r.Context(), req.Username); err != nil {
		return err
	}
	hash, err := h.auth.hashPassword(r.Context(), req.Password)
	if err != nil {
		return err
	}
	now := h.auth.now().UTC()
	u := hubmesh.User{Name: req.Username, Email: req.Email, PasswordHash: hash, Admin: req.IsAdmin, Created: now, PasswordChanged: now}
	if err := h.accounts.CreateUser(r.Context(), u); err != nil {
		if errors.Is(err, hubmesh.ErrExists) {
			return &apiError{code: codeConflict, message: fmt.Sprintf("the name %q is taken", u.Name), cause: err}
		}
		return err
	}
	detail := ""
	if u.Admin {
		detail = "admin"
	}
	h.audit(r, id, "user.create", u.Name, detail)
	return writeJSON(w, http.StatusCreated, "application/json", viewUser(u))
}

// nameFree answers 409 when a user or an organization has name. The
// FSM checks again when the account is created; this only spares the
// password hash of a signup that cannot succeed.
func (h *Hub) nameFree(ctx context.Context, name string) error {
	_, err := h.accounts.User(ctx, name)
	if err == nil {
		return &apiError{code: codeConflict, message: fmt.Sprintf("the name %q is taken", name), cause: hubmesh.ErrExists}
	}
	if !errors.Is(err, hubmesh.ErrNotFound) {
		return err
	}
	_, err = h.accounts.Org(ctx, name)
	if err == nil {
		return &apiError{code: codeConflict, message: fmt.Sprintf("the name %q is taken", name), cause: hubmesh.ErrExists}
	}
	if !errors.Is(err, hubmesh.ErrNotFound) {
		return err
	}
	return nil
}

// getUser serves GET /api/v1/users/{name}: the full record for the user
// and admins, the public one for others.
func (h *Hub) getUser(w http.ResponseWriter, r *http.Request, id identity) error {
	name := r.PathValue("name")
	u, err := h.accounts.User(r.Context(), name)
	if err != nil {
		return userError(name, err)
	}
	if id.admin || id.user == u.Name {
		return writeJSON(w, http.StatusOK, "application/json", viewUser(u))
	}
	return writeJSON(w, http.StatusOK, "application/json", publicUserView{Username: u.Name, DateJoined: u.Created, Type: "User"})
}

// userError words a failed user lookup.
func userError(name string, err error) error {
	if errors.Is(err, hubmesh.ErrNotFound) {
		return &apiError{code: codeNotFound, message: fmt.Sprintf("user %q not found", truncate(name, 60)), cause: err}
	}
	return err
}

// whoami serves GET /api/v1/user.
func (h *Hub) whoami(w http.ResponseWriter, r *http.Request, id identity) error {
	u, err := h.accounts.User(r.Context(), id.user)
	if err != nil {
		return userError(id.user, err)
	}
	v := viewUser(u)
	if v.Orgs, err = h.accounts.OrgsOf(r.Context(), u.Name); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", v)
}

// patchUser serves PATCH /api/v1/users/{name}: email and password by the
// user (the password needs current_password unless an admin changes it),
// is_admin and disabled by admins only.
func (h *Hub) patchUser(w http.ResponseWriter, r *http.Request, id identity) error {
	name := r.PathValue("name")
	if !id.admin && id.user != name {
		return newError(codeDenied, "you may change only your own account")
	}
	var req struct {
		Email           *string `json:"email"`
		Password        *string `json:"password"`
		CurrentPassword *string `json:"current_password"`
		IsAdmin         *bool   `json:"is_admin"`
		Disabled        *bool   `json:"disabled"`
	}
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if !id.admin && (req.IsAdmin != nil || req.Disabled != nil) {
		return newError(codeDenied, "only site administrators may change is_admin or disabled")
	}
	ctx := r.Context()
	u, err := h.accounts.User(ctx, name)
	if err != nil {
		return userError(name, err)
	}
	now := h.auth.now().UTC()
	upd := hubmesh.UserUpdate{Email: req.Email, Admin: req.IsAdmin, Disabled: req.Disabled, At: now}
	if req.Email != nil {
		if err := checkEmail(*req.Email); err != nil {
			return err
		}
	}
	if req.Password != nil {
		if !id.admin {
			if req.CurrentPassword == nil {
				return newError(codeBadRequest, "current_password is required to change the password")
			}
			if _, _, isToken := auth.ParseAccessToken(*req.CurrentPassword); isToken {
				return newError(codeDenied, "current_password must be the password, not an access token")
			}
			if _, err := h.auth.login(ctx, name, *req.CurrentPassword, clientAddr(r), "password change"); err != nil {
				if toAPIError(err).code == codeUnauthorized {
					return newError(codeDenied, "current_password is wrong")
				}
				return err
			}
		}
		hash, err := h.auth.hashPassword(ctx, *req.Password)
		if err != nil {
			return err
		}
		upd.PasswordHash = &hash
	}
	nu, err := h.accounts.UpdateUser(ctx, u.Name, upd)
	if err != nil {
		return userError(name, err)
	}
	if req.Password != nil {
		h.audit(r, id, "password.change", u.Name, "")
	}
	if req.Disabled != nil && *req.Disabled != u.Disabled {
		h.audit(r, id, "user.disable", u.Name, fmt.Sprintf("disabled=%t", *req.Disabled))
	}
	if req.Email != nil || req.IsAdmin != nil && *req.IsAdmin != u.Admin {
		detail := ""
		if req.IsAdmin != nil {
			detail = fmt.Sprintf("is_admin=%t", *req.IsAdmin)
		}
		h.audit(r, id, "user.update", u.Name, detail)
	}
	return writeJSON(w, http.StatusOK, "application/json", viewUser(nu))
}

// deleteUser serves DELETE /api/v1/users/{name} (the user or an admin).
func (h *Hub) deleteUser(w http.ResponseWriter, r *http.Request, id identity) error {
	name := r.PathValue("name")
	if !id.admin && id.user != name {
		return newError(codeDenied, "you may delete only your own account")
	}
	if err := h.accounts.DeleteUser(r.Context(), name); err != nil {
		return userError(name, err)
	}
	h.audit(r, id, "user.delete", name, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
