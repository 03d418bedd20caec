package auth

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func TestParseScope(t *testing.T) {
	t.Parallel()
	long := "repository:" + strings.Repeat("a", 256) + ":pull"
	tests := []struct {
		in   string
		want Scope // zero: error expected
	}{
		{in: ""},
		{in: ":"},
		{in: "::"},
		{in: ":::"},
		{in: "repository"},
		{in: "repository:foo"},
		{in: "repository:foo:"},
		{in: "repository:foo:,,"},
		{in: "repository::pull"},
		{in: ":foo:pull"},
		{in: "repository:Foo:pull"},
		{in: "repository:foo/:pull"},
		{in: "repository:/foo:pull"},
		{in: "repository:foo//bar:pull"},
		{in: "repository:foo..bar:pull"},
		{in: "repository:-foo:pull"},
		{in: "repository:foo bar:pull"},
		{in: "repository:localhost:5000/a:pull"},
		{in: "repository:foo:bar:pull"},
		{in: "repository:café:pull"},
		{in: "repository:foo:pull\x00", want: Scope{Type: "repository", Name: "foo", Actions: []string{}}},
		{in: "repositoryx:foo:pull"},
		{in: "Repository:foo:pull"},
		{in: "user:foo:pull"},
		{in: "registry:foo:*"},
		{in: "registry:catalog:"},
		{in: "repository():x:pull"},
		{in: "repository(Plugin):x:pull"},
		{in: "repository(plugin:x:pull"},
		{in: "repository(plugin)x:x:pull"},
		{in: "repository(a)(b):x:pull"},
		{in: long},
		{in: "repository:" + strings.Repeat("a/", 600) + "a:pull"},
		{in: "repository:foo:pull", want: Scope{Type: "repository", Name: "foo", Actions: []string{"pull"}}},
		{in: "repository:a/b:pull,push,delete,*", want: Scope{Type: "repository", Name: "a/b", Actions: []string{"*", "delete", "pull", "push"}}},
		{in: "repository:a/b:push,pull,push", want: Scope{Type: "repository", Name: "a/b", Actions: []string{"pull", "push"}}},
		{in: "repository:a/b:pull,,push,", want: Scope{Type: "repository", Name: "a/b", Actions: []string{"pull", "push"}}},
		{in: "repository:a/b:pull,metadata-read", want: Scope{Type: "repository", Name: "a/b", Actions: []string{"pull"}}},
		{in: "repository:a/b:bogus", want: Scope{Type: "repository", Name: "a/b", Actions: []string{}}},
		{in: "repository:a/b:PULL", want: Scope{Type: "repository", Name: "a/b", Actions: []string{}}},
		{in: "repository(plugin):x:pull", want: Scope{Type: "repository", Class: "plugin", Name: "x", Actions: []string{"pull"}}},
		{in: "registry:catalog:*", want: Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}},
		{in: "repository:a.b_c__d--e/f-g:pull", want: Scope{Type: "repository", Name: "a.b_c__d--e/f-g", Actions: []string{"pull"}}},
		{in: "repository:" + strings.Repeat("a", 255) + ":pull", want: Scope{Type: "repository", Name: strings.Repeat("a", 255), Actions: []string{"pull"}}},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 40)], func(t *testing.T) {
			got, err := ParseScope(tt.in)
			if tt.want.Type == "" {
				if !errors.Is(err, hubmesh.ErrInvalid) {
					t.Fatalf("ParseScope(%q) = %+v, %v; want ErrInvalid", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseScope(%q): %v", tt.in, err)
			}
			if got.Type != tt.want.Type || got.Class != tt.want.Class || got.Name != tt.want.Name ||
				!slices.Equal(got.Actions, tt.want.Actions) || got.Actions == nil {
				t.Fatalf("ParseScope(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseScopeTooLong(t *testing.T) {
	t.Parallel()
	s := "repository:a:" + strings.Repeat("pull,", 250)
	if len(s) <= maxScopeLen {
		t.Fatal("test string too short")
	}
	if _, err := ParseScope(s); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if _, err := ParseScope(s[:maxScopeLen-4] + "pull"); err != nil {
		t.Fatalf("scope of %d bytes: %v", maxScopeLen, err)
	}
}

func TestScopeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    Scope
		want string
	}{
		{Scope{Type: "repository", Name: "alice/app", Actions: []string{"pull", "push"}}, "repository:alice/app:pull,push"},
		{Scope{Type: "repository", Class: "plugin", Name: "x", Actions: []string{"pull"}}, "repository(plugin):x:pull"},
		{Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, "registry:catalog:*"},
		{Scope{Type: "repository", Name: "a"}, "repository:a:"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.s, got, tt.want)
		}
	}
}

func TestParseScopes(t *testing.T) {
	t.Parallel()
	many := strings.TrimSpace(strings.Repeat("repository:a:pull ", maxScopes+1))
	tests := []struct {
		name    string
		params  []string
		want    []string // Scope.String of each
		wantErr bool
	}{
		{name: "nil", params: nil, want: nil},
		{name: "blank", params: []string{"", "  ", "\t"}, want: nil},
		{name: "one", params: []string{"repository:a/b:pull"}, want: []string{"repository:a/b:pull"}},
		{name: "space separated", params: []string{"repository:a:pull repository:b:push"}, want: []string{"repository:a:pull", "repository:b:push"}},
		{name: "merged", params: []string{"repository:a:pull", "repository:b:pull  repository:a:push,pull"}, want: []string{"repository:a:pull,push", "repository:b:pull"}},
		{name: "merged class kept", params: []string{"repository(plugin):a:pull repository:a:delete"}, want: []string{"repository(plugin):a:delete,pull"}},
		{name: "type distinguishes", params: []string{"registry:catalog:* repository:catalog:pull"}, want: []string{"registry:catalog:*", "repository:catalog:pull"}},
		{name: "bad one spoils all", params: []string{"repository:a:pull", "repository:A:pull"}, wantErr: true},
		{name: "32 ok", params: []string{strings.TrimSpace(strings.Repeat("repository:a:pull ", maxScopes))}, want: []string{"repository:a:pull"}},
		{name: "33 too many", params: []string{many}, wantErr: true},
		{name: "33 across params", params: append(slices.Repeat([]string{"repository:a:pull"}, maxScopes), "repository:b:pull"), wantErr: true},
		{name: "too many with junk", params: []string{strings.Repeat("x ", 1000)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScopes(tt.params)
			if tt.wantErr {
				if !errors.Is(err, hubmesh.ErrInvalid) {
					t.Fatalf("ParseScopes = %v, %v; want ErrInvalid", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var strs []string
			for _, s := range got {
				strs = append(strs, s.String())
			}
			if !slices.Equal(strs, tt.want) {
				t.Fatalf("ParseScopes = %q, want %q", strs, tt.want)
			}
		})
	}
}
