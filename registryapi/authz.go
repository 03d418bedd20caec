package registryapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

// Access control of /v2. Every route decides, before its handler runs,
// which repository it touches and which action it needs:
//
//	GET/HEAD manifests, blobs, tags, referrers   pull
//	PUT manifests, POST/PATCH/PUT/DELETE uploads push (a mount also needs pull on from)
//	DELETE manifests, blobs                      delete
//	/v2/                                         any credentials (an anonymous token too)
//	/v2/_catalog                                 anyone; lists only visible repositories
//
// Outcomes: allowed; a pull the subject may not do is a repository it
// cannot see, answered as if it did not exist (404); anonymous lacking an
// action, or a token lacking it, is 401 with a Bearer challenge; a known
// identity lacking push or delete is 403 DENIED.

// needCatalog is the pseudo-action of the catalog; needLogin the one of
// the base endpoint.
const (
	needLogin   = "login"
	needCatalog = "catalog"
)

// neededAction is the action a /v2 request needs.
func neededAction(k routeKind, method string) string {
	switch k {
	case routeBase:
		return needLogin
	case routeCatalog:
		return needCatalog
	case routeTags, routeReferrers:
		return auth.ActionPull
	case routeManifest, routeBlob:
		switch method {
		case http.MethodPut:
			return auth.ActionPush
		case http.MethodDelete:
			return auth.ActionDelete
		}
		return auth.ActionPull
	case routeUploadStart, routeUpload:
		return auth.ActionPush
	}
	return needLogin
}

// challengeActions are the actions a challenge asks for: a push asks for
// pull,push as docker does.
func challengeActions(action string) string {
	if action == auth.ActionPush {
		return "pull,push"
	}
	return action
}

type ctxKey int

const (
	identityKey ctxKey = iota
	mountDeniedKey
)

// identityOf is the identity authorizeV2 stored in the request context.
func identityOf(ctx context.Context) (identity, bool) {
	id, ok := ctx.Value(identityKey).(identity)
	return id, ok
}

// mountDenied reports whether the mount of this request must be treated as
// a blob that is absent (no pull on the source repository).
func mountDenied(ctx context.Context) bool {
	v, _ := ctx.Value(mountDeniedKey).(bool)
	return v
}

// errHidden answers a pull of a repository the subject may not see.
var errHidden = errors.New("repository not visible")

// verdict is what the policy says about one action on one repository.
type verdict int

const (
	allowed         verdict = iota
	hidden                  // invisible: answer as if missing
	denied                  // 403 for a known identity, 401 for anonymous
	scopeMissing            // the token lacks an action the subject holds: 401
	subjectRejected         // the identity's user is gone or disabled: 401
	automated               // a push to a repository only its builds push to: 403
)

// decide applies the policy to one action of id on repo.
func (a *Auth) decide(ctx context.Context, id identity, repo, action string) (verdict, error) {
	f, err := a.ids.AccessFacts(ctx, id.user, repo)
	if err != nil {
		return denied, fmt.Errorf("access facts of %s: %w", repo, err)
	}
	if id.user != "" && (!f.UserExists || f.UserDisabled) {
		return subjectRejected, nil
	}
	live := auth.CapActions(auth.Actions(f), id.scopes)
	if id.buildRepo != "" && id.buildRepo == repo && f.RepoExists {
		// An automated build's token is the whole grant on its repository;
		// elsewhere it is anonymous.
		live = grantedActions(id.access, repo)
	}
	switch {
	case id.user == "" && action == auth.ActionPull && !f.RepoExists:
		// Anonymous: a missing repository looks like a private one (both
		// ask for a login), so that nobody can probe which private names
		// exist. Docker Hub answers the same.
		return hidden, nil
	case !slices.Contains(live, action):
		if action == auth.ActionPull {
			return hidden, nil
		}
		return denied, nil
	}
	if action == auth.ActionPush && id.buildRepo != repo {
		refused, err := a.manualPushRefused(ctx, repo)
		if err != nil {
			return denied, err
		}
		if refused {
			return automated, nil
		}
	}
	if id.method == methodAccess && !slices.Contains(grantedActions(id.access, repo), action) {
		return scopeMissing, nil
	}
	return allowed, nil
}

// manualPushRefused reports whether repo is built automatically with
// manual pushes disabled: then only its builds push to it.
func (a *Auth) manualPushRefused(ctx context.Context, repo string) (bool, error) {
	if a.builds == nil {
		return false, nil
	}
	s, err := a.builds.BuildSettings(ctx, repo)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("build settings of %s: %w", repo, err)
	}
	return !s.AllowPushes, nil
}

// automatedMessage says why a push to an automated repository is refused.
func automatedMessage(repo string) string {
	return fmt.Sprintf("repository %s is built automatically: manual pushes are disabled (build settings allow_pushes)", repo)
}

// grantedActions are the actions a registry token grants on repo.
func grantedActions(access []auth.Access, repo string) []string {
	var out []string
	for _, acc := range access {
		if acc.Type != "repository" || acc.Name != repo {
			continue
		}
		if slices.Contains(acc.Actions, auth.ActionAll) {
			return []string{auth.ActionPull, auth.ActionPush, auth.ActionDelete}
		}
		out = append(out, acc.Actions...)
	}
	return out
}

// authorizeV2 authenticates r and checks that it may do what route rt
// needs. It returns the request to serve (its context carries the
// identity), errHidden for a repository to present as missing, or the
// error to answer with (401 with a challenge, 403, 429).
func (a *Auth) authorizeV2(r *http.Request, rt route) (*http.Request, error) {
	action := neededAction(rt.Kind, r.Method)
	scope := ""
	if rt.Name != "" {
		scope = "repository:" + rt.Name + ":" + challengeActions(action)
	}
	id, err := a.authenticate(r, bearerKinds{access: true})
	if err != nil {
		if ae := toAPIError(err); ae.code != codeUnauthorized {
			return r, err
		}
		return r, a.challenge(r, scope, errorAttr(err), err)
	}
	ctx := context.WithValue(r.Context(), identityKey, id)
	switch action {
	case needLogin:
		if !id.authenticated() {
			return r, a.challenge(r, "", "", nil)
		}
		return r.WithContext(ctx), nil
	case needCatalog:
		return r.WithContext(ctx), nil
	}
	v, err := a.decide(ctx, id, rt.Name, action)
	if err != nil {
		return r, err
	}
	switch v {
	case hidden:
		if id.user == "" {
			// Anonymous clients are asked to log in (docker prints "pull
			// access denied ... may require 'docker login'"; containerd
			// only sends credentials after a 401).
			attr := ""
			if id.authenticated() {
				attr = "insufficient_scope"
			}
			return r, a.challenge(r, scope, attr, nil)
		}
		return r.WithContext(ctx), errHidden
	case subjectRejected:
		return r, a.challenge(r, scope, "invalid_token", nil)
	case scopeMissing:
		return r, a.challenge(r, scope, "insufficient_scope", nil)
	case automated:
		if id.method == methodAccess || id.user == "" {
			// As for a token without the action (docker gives up at once on
			// a 401), with the reason in the body.
			c := a.challenge(r, scope, "insufficient_scope", nil)
			c.message = automatedMessage(rt.Name)
			return r, c
		}
		return r, newError(codeDenied, "%s", automatedMessage(rt.Name))
	case denied:
		if id.user == "" {
			attr := ""
			if id.authenticated() {
				attr = "insufficient_scope"
			}
			return r, a.challenge(r, scope, attr, nil)
		}
		if id.method == methodAccess {
			// A registry token without the action: 401 insufficient_scope,
			// as distribution and Docker Hub answer. docker gives up at
			// once on it, while it retries a 403 for about a minute.
			return r, a.challenge(r, scope, "insufficient_scope", nil)
		}
		return r, newError(codeDenied, "requested access to the resource is denied")
	}
	if rt.Kind == routeUploadStart && r.URL.Query().Get("mount") != "" {
		from := r.URL.Query().Get("from")
		ok := id.admin // a mount from anywhere: only where everything is visible
		if from != "" && validName(from) {
			fv, err := a.decide(ctx, id, from, auth.ActionPull)
			if err != nil {
				return r, err
			}
			ok = fv == allowed
		}
		if !ok {
			ctx = context.WithValue(ctx, mountDeniedKey, true)
		}
	}
	return r.WithContext(ctx), nil
}

// errorAttr is the error attribute of the challenge for a failed
// authentication: invalid_token for a bearer token that did not verify.
func errorAttr(err error) string {
	var it *invalidTokenError
	if errors.As(err, &it) {
		return "invalid_token"
	}
	return ""
}

// challenge is a 401 UNAUTHORIZED with the Bearer challenge that sends
// clients to /token: realm, service, scope (when the request names a
// repository) and error (invalid_token, insufficient_scope) when given.
func (a *Auth) challenge(r *http.Request, scope, errAttr string, cause error) *apiError {
	var b strings.Builder
	b.WriteString(`Bearer realm="`)
	b.WriteString(baseURL(r))
	b.WriteString(`/token",service="`)
	b.WriteString(a.service)
	b.WriteByte('"')
	if scope != "" {
		b.WriteString(`,scope="`)
		b.WriteString(scope)
		b.WriteByte('"')
	}
	if errAttr != "" {
		b.WriteString(`,error="`)
		b.WriteString(errAttr)
		b.WriteByte('"')
	}
	msg := "authentication required"
	switch {
	case errAttr == "insufficient_scope":
		msg = "authentication required: the token does not grant this action"
	case cause != nil:
		msg = toAPIError(cause).Error()
	}
	ae := &apiError{code: codeUnauthorized, message: msg, cause: cause}
	return ae.withHeader("WWW-Authenticate", b.String())
}

// baseURL is the scheme and host the client reached this node with:
// https when the connection is TLS or a proxy says so in
// X-Forwarded-Proto.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	} else if p, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(p), "https") {
		scheme = "https"
	}
	host := r.Host
	if host == "" || strings.ContainsAny(host, "\"\\ \t\r\n") {
		host = "localhost"
	}
	return scheme + "://" + host
}

// hiddenResponse answers a pull of a repository the subject may not see
// exactly as the handler answers for a repository that does not exist.
// The request is validated first, as the handler would, so that a bad
// reference gets the same 400 either way.
func (h *Handler) hiddenResponse(w http.ResponseWriter, r *http.Request, rt route) error {
	switch rt.Kind {
	case routeTags:
		if _, _, err := pageParams(r.URL.Query(), 0); err != nil {
			return err
		}
		return fmt.Errorf("repository %s: %w", rt.Name, hubmesh.ErrRepoUnknown)
	case routeManifest:
		ref, err := parseReference(rt.Ref)
		if err != nil {
			return err
		}
		return fmt.Errorf("manifest %s:%s: %w", rt.Name, ref, hubmesh.ErrManifestUnknown)
	case routeBlob:
		d, err := parseDigest(rt.Ref)
		if err != nil {
			return err
		}
		return fmt.Errorf("blob %s in %s: %w", d, rt.Name, hubmesh.ErrBlobUnknown)
	case routeReferrers:
		if _, err := parseDigest(rt.Ref); err != nil {
			return err
		}
		return writeReferrers(w, r.URL.Query().Get("artifactType"), nil)
	}
	return fmt.Errorf("repository %s: %w", rt.Name, hubmesh.ErrRepoUnknown)
}

// visibleRepositories lists, after p.Last, up to p.N (all when 0)
// repositories whose name starts with prefix and that id may see.
func visibleRepositories(ctx context.Context, l Listings, a *Auth, id identity, prefix string, p hubmesh.Page) ([]string, error) {
	const batch = 256
	var out []string
	last := p.Last
	if prefix != "" && last < prefix {
		last = prefix
	}
	for {
		names, err := l.Repositories(ctx, hubmesh.Page{Last: last, N: batch})
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if !strings.HasPrefix(name, prefix) {
				return out, nil
			}
			if !id.admin {
				v, err := a.decide(ctx, id, name, auth.ActionPull)
				if err != nil {
					return nil, err
				}
				if v != allowed && v != scopeMissing {
					continue
				}
			}
			out = append(out, name)
			if p.N > 0 && len(out) == p.N {
				return out, nil
			}
		}
		if len(names) < batch {
			return out, nil
		}
		last = names[len(names)-1]
	}
}
