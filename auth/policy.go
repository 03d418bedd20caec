package auth

import (
	"slices"

	"github.com/hubmesh/hubmesh"
)

// Namespace kinds as hubmesh.Namespace.Kind spells them.
const (
	kindUser = "user"
	kindOrg  = "org"
)

// Permission is the effective permission of f.User on the repository f
// describes, following Docker Hub:
//
//   - everyone, anonymous included, may read a public repository, and a
//     repository not created yet in a namespace whose DefaultPrivate is
//     false (pulling it then finds nothing);
//   - a named user that does not exist or is disabled gets only that;
//   - a site admin has admin everywhere;
//   - in the user's own namespace: admin;
//   - in an organization namespace: admin for members of its owners team,
//     otherwise the best team permission on the repository;
//   - a repository in a namespace nobody owns (Kind "", which is what a
//     name without '/' must report), or in another user's namespace:
//     nothing beyond public read.
//
// Only site admins may write where no user or organization owns the
// namespace.
func Permission(f hubmesh.AccessFacts) hubmesh.Permission {
	base := hubmesh.PermNone
	if public(f) {
		base = hubmesh.PermRead
	}
	if f.User == "" || !f.UserExists || f.UserDisabled {
		return base
	}
	if f.SiteAdmin {
		return hubmesh.PermAdmin
	}
	var p hubmesh.Permission
	switch f.Namespace.Kind {
	case kindUser:
		if f.NamespaceUser {
			p = hubmesh.PermAdmin
		}
	case kindOrg:
		if f.OrgOwner {
			p = hubmesh.PermAdmin
		} else {
			p = min(f.TeamPermission, hubmesh.PermAdmin)
		}
	}
	return max(p, base)
}

// public reports whether anyone may read the repository.
func public(f hubmesh.AccessFacts) bool {
	if f.RepoExists {
		return !f.RepoPrivate
	}
	return !f.Namespace.DefaultPrivate
}

// Actions lists the registry actions f.User may perform on the
// repository, sorted: pull with read (or on a public repository), push
// with write, delete with admin. It never returns nil.
func Actions(f hubmesh.AccessFacts) []string {
	p := Permission(f)
	out := []string{}
	if p >= hubmesh.PermAdmin {
		out = append(out, ActionDelete)
	}
	if p >= hubmesh.PermRead {
		out = append(out, ActionPull)
	}
	if p >= hubmesh.PermWrite {
		out = append(out, ActionPush)
	}
	return out
}

// Visible reports whether the subject may learn that the repository
// exists: it is public, or the subject may read it. A private repository
// that is not visible must answer as a missing one (404, not 403).
func Visible(f hubmesh.AccessFacts) bool {
	return Permission(f) >= hubmesh.PermRead
}

// CapActions limits actions by the scopes of a personal access token:
// read allows pull; write pull and push; delete pull, push and delete;
// admin does not limit. Several scopes unite. Unknown scope words allow
// nothing. Nil or empty tokenScopes (the credential is not an access
// token) do not limit. "*" in actions (the catalog's action) survives
// any cap that allows pull. The result is sorted, deduplicated and never
// nil.
func CapActions(actions []string, tokenScopes []string) []string {
	out := sortedSet(slices.Clone(actions))
	if len(tokenScopes) == 0 {
		return out
	}
	allowed := map[string]bool{}
	for _, s := range tokenScopes {
		switch s {
		case hubmesh.ScopeAdmin:
			return out
		case hubmesh.ScopeDelete:
			allowed[ActionDelete] = true
			fallthrough
		case hubmesh.ScopeWrite:
			allowed[ActionPush] = true
			fallthrough
		case hubmesh.ScopeRead:
			allowed[ActionPull] = true
			allowed[ActionAll] = true
		}
	}
	return slices.DeleteFunc(out, func(a string) bool { return !allowed[a] })
}

// Intersect returns the requested actions that are allowed; "*" among the
// requested ones asks for every allowed action. The result is sorted,
// deduplicated and never nil.
func Intersect(requested, allowed []string) []string {
	if slices.Contains(requested, ActionAll) {
		return sortedSet(slices.Clone(allowed))
	}
	out := []string{}
	for _, a := range requested {
		if slices.Contains(allowed, a) {
			out = append(out, a)
		}
	}
	return sortedSet(out)
}
