package auth

import (
	"slices"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func TestPermission(t *testing.T) {
	t.Parallel()
	userNS := hubmesh.Namespace{Name: "alice", Kind: "user"}
	userNSPrivate := hubmesh.Namespace{Name: "alice", Kind: "user", DefaultPrivate: true}
	orgNS := hubmesh.Namespace{Name: "acme", Kind: "org"}
	orgNSPrivate := hubmesh.Namespace{Name: "acme", Kind: "org", DefaultPrivate: true}
	unowned := hubmesh.Namespace{Name: "nobody"}
	unownedPrivate := hubmesh.Namespace{Name: "nobody", DefaultPrivate: true}
	noNS := hubmesh.Namespace{}

	alice := func(f hubmesh.AccessFacts) hubmesh.AccessFacts {
		f.User, f.UserExists = "alice", true
		return f
	}
	bob := func(f hubmesh.AccessFacts) hubmesh.AccessFacts {
		f.User, f.UserExists = "bob", true
		return f
	}
	pub := func(ns hubmesh.Namespace) hubmesh.AccessFacts {
		return hubmesh.AccessFacts{Namespace: ns, RepoExists: true}
	}
	priv := func(ns hubmesh.Namespace) hubmesh.AccessFacts {
		return hubmesh.AccessFacts{Namespace: ns, RepoExists: true, RepoPrivate: true}
	}
	absent := func(ns hubmesh.Namespace) hubmesh.AccessFacts {
		return hubmesh.AccessFacts{Namespace: ns}
	}
	with := func(f hubmesh.AccessFacts, mod func(*hubmesh.AccessFacts)) hubmesh.AccessFacts {
		mod(&f)
		return f
	}
	const (
		none  = hubmesh.PermNone
		read  = hubmesh.PermRead
		write = hubmesh.PermWrite
		admin = hubmesh.PermAdmin
	)

	tests := []struct {
		name    string
		f       hubmesh.AccessFacts
		want    hubmesh.Permission
		actions []string
	}{
		// Anonymous.
		{"anon public", pub(userNS), read, []string{"pull"}},
		{"anon private", priv(userNS), none, []string{}},
		{"anon absent in public ns", absent(userNS), read, []string{"pull"}},
		{"anon absent in private ns", absent(userNSPrivate), none, []string{}},
		{"anon public ignores stale facts", with(pub(orgNS), func(f *hubmesh.AccessFacts) {
			f.SiteAdmin, f.OrgOwner, f.TeamPermission, f.NamespaceUser = true, true, admin, true
		}), read, []string{"pull"}},
		// Own namespace.
		{"own public", alice(with(pub(userNS), func(f *hubmesh.AccessFacts) { f.NamespaceUser = true })), admin, []string{"delete", "pull", "push"}},
		{"own private", alice(with(priv(userNS), func(f *hubmesh.AccessFacts) { f.NamespaceUser = true })), admin, []string{"delete", "pull", "push"}},
		{"own absent private ns", alice(with(absent(userNSPrivate), func(f *hubmesh.AccessFacts) { f.NamespaceUser = true })), admin, []string{"delete", "pull", "push"}},
		{"own flag but org namespace", alice(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.NamespaceUser = true })), none, []string{}},
		// Someone else's user namespace.
		{"other public", bob(pub(userNS)), read, []string{"pull"}},
		{"other private", bob(priv(userNS)), none, []string{}},
		{"other absent", bob(absent(userNS)), read, []string{"pull"}},
		{"other absent private ns", bob(absent(userNSPrivate)), none, []string{}},
		{"team permission ignored in user ns", bob(with(priv(userNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = write })), none, []string{}},
		// Organization.
		{"org owner private", bob(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.OrgOwner = true })), admin, []string{"delete", "pull", "push"}},
		{"org owner absent", bob(with(absent(orgNSPrivate), func(f *hubmesh.AccessFacts) { f.OrgOwner = true })), admin, []string{"delete", "pull", "push"}},
		{"org team read private", bob(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = read })), read, []string{"pull"}},
		{"org team write private", bob(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = write })), write, []string{"pull", "push"}},
		{"org team admin private", bob(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = admin })), admin, []string{"delete", "pull", "push"}},
		{"org team out of range", bob(with(priv(orgNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = 200 })), admin, []string{"delete", "pull", "push"}},
		{"org no team private", bob(priv(orgNS)), none, []string{}},
		{"org no team public", bob(pub(orgNS)), read, []string{"pull"}},
		{"org team write absent (grant on exact name)", bob(with(absent(orgNSPrivate), func(f *hubmesh.AccessFacts) { f.TeamPermission = write })), write, []string{"pull", "push"}},
		{"org no team absent private ns", bob(absent(orgNSPrivate)), none, []string{}},
		{"org team read public", bob(with(pub(orgNS), func(f *hubmesh.AccessFacts) { f.TeamPermission = read })), read, []string{"pull"}},
		// Site admin.
		{"admin private elsewhere", with(bob(priv(userNS)), func(f *hubmesh.AccessFacts) { f.SiteAdmin = true }), admin, []string{"delete", "pull", "push"}},
		{"admin no namespace", with(bob(priv(noNS)), func(f *hubmesh.AccessFacts) { f.SiteAdmin = true }), admin, []string{"delete", "pull", "push"}},
		{"admin unowned", with(bob(absent(unowned)), func(f *hubmesh.AccessFacts) { f.SiteAdmin = true }), admin, []string{"delete", "pull", "push"}},
		// No namespace / unowned namespace: only site admins write.
		{"no namespace public", bob(pub(noNS)), read, []string{"pull"}},
		{"no namespace absent", bob(absent(noNS)), read, []string{"pull"}},
		{"no namespace private", bob(priv(noNS)), none, []string{}},
		{"no namespace stale flags", bob(with(pub(noNS), func(f *hubmesh.AccessFacts) { f.NamespaceUser, f.OrgOwner, f.TeamPermission = true, true, admin })), read, []string{"pull"}},
		{"unowned absent", bob(absent(unowned)), read, []string{"pull"}},
		{"unowned absent private default", bob(absent(unownedPrivate)), none, []string{}},
		{"unowned stale flags", bob(with(pub(unowned), func(f *hubmesh.AccessFacts) { f.NamespaceUser, f.OrgOwner, f.TeamPermission = true, true, admin })), read, []string{"pull"}},
		{"unknown kind", bob(with(pub(hubmesh.Namespace{Name: "x", Kind: "robot"}), func(f *hubmesh.AccessFacts) { f.NamespaceUser, f.OrgOwner = true, true })), read, []string{"pull"}},
		// Disabled and missing users.
		{"disabled own", with(alice(priv(userNS)), func(f *hubmesh.AccessFacts) { f.NamespaceUser, f.UserDisabled = true, true }), none, []string{}},
		{"disabled own public", with(alice(pub(userNS)), func(f *hubmesh.AccessFacts) { f.NamespaceUser, f.UserDisabled = true, true }), read, []string{"pull"}},
		{"disabled admin", with(bob(priv(userNS)), func(f *hubmesh.AccessFacts) { f.SiteAdmin, f.UserDisabled = true, true }), none, []string{}},
		{"missing user with flags", hubmesh.AccessFacts{User: "ghost", SiteAdmin: true, NamespaceUser: true, Namespace: userNS, RepoExists: true, RepoPrivate: true}, none, []string{}},
		{"missing user public", hubmesh.AccessFacts{User: "ghost", SiteAdmin: true, Namespace: userNS, RepoExists: true}, read, []string{"pull"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Permission(tt.f); got != tt.want {
				t.Errorf("Permission = %v, want %v", got, tt.want)
			}
			if got := Actions(tt.f); !slices.Equal(got, tt.actions) || got == nil {
				t.Errorf("Actions = %#v, want %#v", got, tt.actions)
			}
			if got := Visible(tt.f); got != (tt.want >= read) {
				t.Errorf("Visible = %v, want %v", got, tt.want >= read)
			}
		})
	}
}

func TestCapActions(t *testing.T) {
	t.Parallel()
	all := []string{"delete", "pull", "push"}
	tests := []struct {
		name    string
		actions []string
		scopes  []string
		want    []string
	}{
		{"no scopes", all, nil, all},
		{"empty scopes", all, []string{}, all},
		{"read", all, []string{"read"}, []string{"pull"}},
		{"write", all, []string{"write"}, []string{"pull", "push"}},
		{"delete", all, []string{"delete"}, all},
		{"admin", all, []string{"admin"}, all},
		{"read and write", all, []string{"read", "write"}, []string{"pull", "push"}},
		{"read and admin", all, []string{"read", "admin"}, all},
		{"unknown scope", all, []string{"superuser"}, []string{}},
		{"case matters", all, []string{"READ"}, []string{}},
		{"cap never adds", []string{"pull"}, []string{"delete"}, []string{"pull"}},
		{"nothing allowed", []string{}, []string{"admin"}, []string{}},
		{"nil actions", nil, nil, []string{}},
		{"dedup and sort", []string{"push", "pull", "push"}, nil, []string{"pull", "push"}},
		{"catalog star with read", []string{"*"}, []string{"read"}, []string{"*"}},
		{"catalog star no cap", []string{"*"}, nil, []string{"*"}},
		{"catalog star unknown scope", []string{"*"}, []string{"x"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.actions)
			got := CapActions(in, tt.scopes)
			if !slices.Equal(got, tt.want) || got == nil {
				t.Fatalf("CapActions(%q, %q) = %#v, want %#v", tt.actions, tt.scopes, got, tt.want)
			}
			if !slices.Equal(in, tt.actions) {
				t.Fatalf("input modified: %q", in)
			}
		})
	}
}

func TestIntersect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		requested, allowed []string
		want               []string
	}{
		{"subset", []string{"pull", "push"}, []string{"pull"}, []string{"pull"}},
		{"all allowed", []string{"push", "pull"}, []string{"delete", "pull", "push"}, []string{"pull", "push"}},
		{"star", []string{"*"}, []string{"push", "pull"}, []string{"pull", "push"}},
		{"star with others", []string{"pull", "*"}, []string{"delete", "pull"}, []string{"delete", "pull"}},
		{"star nothing allowed", []string{"*"}, nil, []string{}},
		{"nothing requested", nil, []string{"pull"}, []string{}},
		{"disjoint", []string{"delete"}, []string{"pull"}, []string{}},
		{"duplicates", []string{"pull", "pull"}, []string{"pull", "pull"}, []string{"pull"}},
		{"catalog", []string{"*"}, []string{"*"}, []string{"*"}},
		{"allowed star is not a wildcard", []string{"push"}, []string{"*"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allowed := slices.Clone(tt.allowed)
			got := Intersect(tt.requested, allowed)
			if !slices.Equal(got, tt.want) || got == nil {
				t.Fatalf("Intersect(%q, %q) = %#v, want %#v", tt.requested, tt.allowed, got, tt.want)
			}
			if !slices.Equal(allowed, tt.allowed) {
				t.Fatalf("allowed modified: %q", allowed)
			}
		})
	}
}
