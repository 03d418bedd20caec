package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseExpiry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"30d", 30 * 24 * time.Hour, false},
		{"2w", 14 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"2w3d", 17 * 24 * time.Hour, false},
		{"12h", 12 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"30D", 30 * 24 * time.Hour, false},
		{"never", 0, false},
		{"", 0, false},
		{"0", 0, false},
		{"soon", 0, true},
		{"d", 0, true},
		{"-1d", 0, true},
		{"3d2w", 0, true},
		{"1.5d", 0, true},
		{"500ms", 0, true}, // below a second
		{"5000d", 0, true}, // above ten years
		{"30x", 0, true},
		{"99999999999d", 0, true},
	} {
		got, err := parseExpiry(tc.in)
		if tc.bad {
			var ue usageError
			if err == nil || !errors.As(err, &ue) {
				t.Errorf("parseExpiry(%q) = %v, %v; want a usage error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"read"}, []string{"read"}},
		{[]string{"write,read"}, []string{"read", "write"}},
		{[]string{"admin", "READ", " delete "}, []string{"read", "delete", "admin"}},
		{[]string{"read,read"}, []string{"read"}},
		{[]string{"root"}, nil},
		{[]string{""}, nil},
		{nil, nil},
		{[]string{"read,pull"}, nil},
	} {
		got, err := parseScopes(tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("parseScopes(%q) = %q; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseScopes(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSplitTeamAndRepo(t *testing.T) {
	for _, tc := range []struct{ in, org, team string }{
		{"acme/dev", "acme", "dev"},
		{"acme", "", ""},
		{"acme/", "", ""},
		{"/dev", "", ""},
		{"acme/dev/x", "", ""},
	} {
		org, team, err := splitTeam(tc.in)
		if (err != nil) != (tc.org == "") || org != tc.org || team != tc.team {
			t.Errorf("splitTeam(%q) = %q, %q, %v", tc.in, org, team, err)
		}
	}
	for _, tc := range []struct{ org, repo, want string }{
		{"acme", "api", "acme/api"},
		{"acme", "acme/api", "acme/api"},
		{"acme", "acme/tools/cli", "acme/tools/cli"},
		{"acme", "", ""},
		{"acme", "/api", ""},
	} {
		got, err := teamRepo(tc.org, tc.repo)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("teamRepo(%q, %q) = %q, %v; want %q", tc.org, tc.repo, got, err, tc.want)
		}
	}
	if got := escapePath("acme/a b"); got != "acme/a%20b" {
		t.Errorf("escapePath = %q", got)
	}
	if r := newRepoCreateRequest("acme/tools/cli", true, "d"); r.Namespace != "acme" || r.Name != "tools/cli" || !r.IsPrivate {
		t.Errorf("newRepoCreateRequest = %+v", r)
	}
	if r := newRepoCreateRequest("app", false, ""); r.Namespace != "" || r.Name != "app" {
		t.Errorf("newRepoCreateRequest(app) = %+v", r)
	}
}

func TestDecodeList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{`["a","b"]`, []string{"a", "b"}, false},
		{`{"count":2,"next":null,"results":["a","b"]}`, []string{"a", "b"}, false},
		{`{"users":["a"]}`, []string{"a"}, false},
		{``, nil, false},
		{`null`, nil, false},
		{`{"a":["x"],"b":["y"]}`, nil, true},
		{`{"count":1}`, nil, true},
		{`"x"`, nil, true},
	} {
		var got []string
		err := decodeList([]byte(tc.in), &got)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("decodeList(%s) = %q, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"next":"http://node1:5000/api/v1/users?last=bob&page_size=2"}`, "/api/v1/users?last=bob&page_size=2"},
		{`{"next":null}`, ""},
		{`[1]`, ""},
	} {
		if got, err := nextPage([]byte(tc.in)); err != nil || got != tc.want {
			t.Errorf("nextPage(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCredentialsHeader(t *testing.T) {
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	jwt := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
	for _, tc := range []struct {
		name string
		c    credentials
		want string
	}{
		{"none", credentials{}, ""},
		{"password", credentials{username: "alice", password: "pw"}, basic("alice", "pw")},
		{"access token with user", credentials{username: "alice", password: "pw", token: "hmp_a_b"}, basic("alice", "hmp_a_b")},
		{"access token alone", credentials{token: "hmp_a_b"}, "Bearer hmp_a_b"},
		{"session token with user", credentials{username: "alice", token: jwt}, "Bearer " + jwt},
		{"session token alone", credentials{token: jwt}, "Bearer " + jwt},
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		tc.c.set(req)
		if got := req.Header.Get("Authorization"); got != tc.want {
			t.Errorf("%s: Authorization %q, want %q", tc.name, got, tc.want)
		}
	}
}

// fakeAPI records the requests of CLI commands and answers each with the
// next canned reply (200 {} when none is left).
type fakeAPI struct {
	mu      sync.Mutex
	reqs    []recorded
	replies []reply
}

type recorded struct {
	Method, Path, Auth string
	Body               map[string]any
}

type reply struct {
	status int
	body   string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec := recorded{Method: r.Method, Path: r.URL.RequestURI(), Auth: r.Header.Get("Authorization")}
	if len(b) > 0 {
		_ = json.Unmarshal(b, &rec.Body)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	rep := reply{http.StatusOK, `{}`}
	if len(f.replies) > 0 {
		rep, f.replies = f.replies[0], f.replies[1:]
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

// runCLI runs the command line against srv (--server is appended) with
// stdin, and returns stdout and the error.
func runCLI(t *testing.T, srv string, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetArgs(append(args, "--server", srv))
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// TestAccountCommands checks what each account command sends to the API
// and prints, against a fake server.
func TestAccountCommands(t *testing.T) {
	basicAdmin := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:s3cret"))
	for _, tc := range []struct {
		name    string
		args    []string
		stdin   string
		replies []reply
		want    []recorded // Auth defaults to basicAdmin
		out     []string   // each must appear in stdout
		notOut  []string   // none may appear in stdout
	}{
		{name: "user create", args: []string{"user", "create", "alice", "--password-stdin", "--email", "a@x.test"}, stdin: "pw one\n",
			replies: []reply{{201, `{"username":"alice","email":"a@x.test","is_admin":false,"is_active":true}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"username": "alice", "password": "pw one", "email": "a@x.test"}}},
			out:     []string{"alice\n"}},
		{name: "user create admin json", args: []string{"user", "create", "root2", "--admin", "--password-stdin", "--json"}, stdin: "pw\r\n",
			replies: []reply{{201, `{"username":"root2","is_admin":true,"is_active":true}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/users", Body: map[string]any{"username": "root2", "password": "pw", "is_admin": true}}},
			out:     []string{`"username": "root2"`, `"is_admin": true`}},
		{name: "user ls pages", args: []string{"user", "ls"},
			replies: []reply{
				{200, `{"count":1,"next":"http://elsewhere:5000/api/v1/users?last=admin&page_size=1","results":[{"username":"admin","is_admin":true,"is_active":true}]}`},
				{200, `{"count":1,"next":null,"results":[{"username":"bob","is_active":false,"email":"b@x"}]}`},
			},
			want: []recorded{{Method: "GET", Path: "/api/v1/users"}, {Method: "GET", Path: "/api/v1/users?last=admin&page_size=1"}},
			out:  []string{"USERNAME", "admin", "bob", "b@x"}},
		{name: "user rm", args: []string{"user", "rm", "bob"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/users/bob"}}},
		{name: "user passwd own", args: []string{"user", "passwd", "--password-stdin"}, stdin: "new",
			want: []recorded{{Method: "PATCH", Path: "/api/v1/users/admin", Body: map[string]any{"password": "new", "current_password": "s3cret"}}}},
		{name: "user passwd other", args: []string{"user", "passwd", "bob", "--password-stdin"}, stdin: "new",
			want: []recorded{{Method: "PATCH", Path: "/api/v1/users/bob", Body: map[string]any{"password": "new"}}}},
		{name: "user disable", args: []string{"user", "disable", "bob"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/users/bob", Body: map[string]any{"disabled": true}}}},
		{name: "user enable", args: []string{"user", "enable", "bob"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/users/bob", Body: map[string]any{"disabled": false}}}},
		{name: "org create", args: []string{"org", "create", "acme"}, replies: []reply{{201, `{"orgname":"acme"}`}},
			want: []recorded{{Method: "POST", Path: "/api/v1/orgs", Body: map[string]any{"orgname": "acme"}}}, out: []string{"acme\n"}},
		{name: "org ls json", args: []string{"org", "ls", "--format", "json"},
			replies: []reply{{200, `{"count":1,"next":null,"results":[{"orgname":"acme","owner":"alice"}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/orgs"}}, out: []string{`"orgname": "acme"`, `"owner": "alice"`}},
		{name: "org rm", args: []string{"org", "rm", "acme"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/orgs/acme"}}},
		{name: "team create", args: []string{"team", "create", "acme/dev", "--description", "developers"},
			want: []recorded{{Method: "POST", Path: "/api/v1/orgs/acme/teams", Body: map[string]any{"name": "dev", "description": "developers"}}}},
		{name: "team ls", args: []string{"team", "ls", "acme"},
			replies: []reply{{200, `{"count":2,"next":null,"results":[{"org":"acme","name":"owners","members":["alice"]},{"org":"acme","name":"dev","members":[]}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/orgs/acme/teams"}}, out: []string{"acme/owners", "alice", "acme/dev"}},
		{name: "team add", args: []string{"team", "add", "acme/dev", "bob"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "PUT", Path: "/api/v1/orgs/acme/teams/dev/members/bob"}}},
		{name: "team remove", args: []string{"team", "remove", "acme/dev", "bob"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/orgs/acme/teams/dev/members/bob"}}},
		{name: "team grant", args: []string{"team", "grant", "acme/dev", "acme/api", "WRITE"},
			want: []recorded{{Method: "PUT", Path: "/api/v1/orgs/acme/teams/dev/permissions/acme/api", Body: map[string]any{"permission": "write"}}}},
		{name: "team grant short name", args: []string{"team", "grant", "acme/dev", "api", "read"},
			want: []recorded{{Method: "PUT", Path: "/api/v1/orgs/acme/teams/dev/permissions/acme/api", Body: map[string]any{"permission": "read"}}}},
		{name: "team revoke", args: []string{"team", "revoke", "acme/dev", "acme/api"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/orgs/acme/teams/dev/permissions/acme/api"}}},
		{name: "team show", args: []string{"team", "show", "acme/dev"},
			replies: []reply{{200, `{"org":"acme","name":"dev","members":["bob"]}`}, {200, `{"count":1,"next":null,"results":[{"repository":"acme/api","permission":"write"}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/orgs/acme/teams/dev"}, {Method: "GET", Path: "/api/v1/orgs/acme/teams/dev/permissions"}},
			out:     []string{"member", "bob", "acme/api", "write"}},
		{name: "repo create private", args: []string{"repo", "create", "alice/secret", "--private"},
			want: []recorded{{Method: "POST", Path: "/api/v1/repositories", Body: map[string]any{"namespace": "alice", "name": "secret", "is_private": true}}}},
		{name: "repo set private", args: []string{"repo", "set", "alice/secret", "--private"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/repositories/alice/secret", Body: map[string]any{"is_private": true}}}},
		{name: "repo set public description", args: []string{"repo", "set", "acme/api", "--public", "--description", "the API"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/repositories/acme/api", Body: map[string]any{"is_private": false, "description": "the API"}}}},
		{name: "repo set description only", args: []string{"repo", "set", "acme/api", "--description", ""},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/repositories/acme/api", Body: map[string]any{"description": ""}}}},
		{name: "repo ls namespace", args: []string{"repo", "ls", "acme"},
			replies: []reply{{200, `{"count":1,"next":null,"results":[{"namespace":"acme","name":"api","is_private":true}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/repositories?namespace=acme"}}, out: []string{"acme/api", "private"}},
		{name: "repo show", args: []string{"repo", "show", "acme/api", "--json"},
			replies: []reply{{200, `{"namespace":"acme","name":"api","is_private":false,"description":"d"}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api"}}, out: []string{`"is_private": false`}},
		{name: "repo rm", args: []string{"repo", "rm", "acme/api"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/repositories/acme/api"}}},
		{name: "repo set readme stdin", args: []string{"repo", "set", "acme/api", "--description", "the API", "--readme", "-"}, stdin: "# API\n\nIt serves.\n",
			want: []recorded{{Method: "PATCH", Path: "/api/v1/repositories/acme/api", Body: map[string]any{"description": "the API", "full_description": "# API\n\nIt serves.\n"}}}},
		{name: "repo set full description", args: []string{"repo", "set", "acme/api", "--full-description", "*x*"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/repositories/acme/api", Body: map[string]any{"full_description": "*x*"}}}},
		{name: "repo show table", args: []string{"repo", "show", "library/postgres"},
			replies: []reply{{200, `{"namespace":"library","name":"postgres","is_official":true,"star_count":12,"pull_count":3400,` +
				`"description":"the database","full_description":"\n# Postgres\n\nThe world's most advanced open source database.\n"}`}},
			want: []recorded{{Method: "GET", Path: "/api/v1/repositories/library/postgres"}},
			out:  []string{"library/postgres", "official", "yes", "12", "3400", "the database", "# Postgres (61 characters)"}},
		{name: "repo star", args: []string{"repo", "star", "acme/api"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "PUT", Path: "/api/v1/repositories/acme/api/stars"}}},
		{name: "repo unstar", args: []string{"repo", "unstar", "acme/api"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/repositories/acme/api/stars"}}},
		{name: "repo starred own", args: []string{"repo", "starred"},
			replies: []reply{{200, `{"username":"admin","is_admin":true}`},
				{200, `{"count":1,"next":null,"results":[{"namespace":"acme","name":"api","star_count":2,"is_official":true}]}`}},
			want: []recorded{{Method: "GET", Path: "/api/v1/user"}, {Method: "GET", Path: "/api/v1/users/admin/starred"}},
			out:  []string{"STARS", "acme/api", "yes"}},
		{name: "repo starred other json", args: []string{"repo", "starred", "bob", "--json"},
			replies: []reply{{200, `{"count":0,"next":null,"results":[]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/users/bob/starred"}}, out: []string{"[]"}},
		{name: "repo official", args: []string{"repo", "official", "acme/api"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "PUT", Path: "/api/v1/repositories/acme/api/official"}}},
		{name: "repo official unset", args: []string{"repo", "official", "acme/api", "--unset"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/repositories/acme/api/official"}}},
		{name: "repo official namespace", args: []string{"repo", "official", "--namespace", "library"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "PUT", Path: "/api/v1/namespaces/library/official"}}},
		{name: "repo official namespace unset", args: []string{"repo", "official", "--namespace", "library", "--unset"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/namespaces/library/official"}}},
		{name: "repo tags", args: []string{"repo", "tags", "acme/api"},
			replies: []reply{{200, `{"count":2,"next":null,"results":[` +
				`{"name":"1.0","digest":"sha256:aaaa","full_size":8192,"images":[{"os":"linux","architecture":"amd64"},{"os":"linux","architecture":"arm64","variant":"v8"}],` +
				`"last_pushed":"2026-01-02T03:04:05Z","last_pulled":"2026-02-03T04:05:06Z"},` +
				`{"name":"2.0","digest":"sha256:bbbb","full_size":512,"images":[],"last_pushed":"2026-01-05T00:00:00Z","last_pulled":null}]}`}},
			want: []recorded{{Method: "GET", Path: "/api/v1/repositories/acme/api/tags"}},
			out: []string{"TAG", "LAST PULLED", "1.0", "sha256:aaaa", "8.19kB", "linux/amd64,linux/arm64/v8", "2026-01-02T03:04:05Z", "2026-02-03T04:05:06Z",
				"2.0", "512B", "never"}},
		{name: "search filters", args: []string{"search", "postgres", "--official", "--stars", "3", "--namespace", "library", "--limit", "10"},
			replies: []reply{{200, `{"count":1,"next":null,"results":[{"repo_name":"library/postgres","short_description":"the database","star_count":12,"pull_count":7,"is_official":true}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/search?is_official=true&min_stars=3&namespace=library&page_size=10&q=postgres"}},
			out:     []string{"NAME", "OFFICIAL", "library/postgres", "the database", "12", "yes"}},
		{name: "search not automated no term", args: []string{"search", "--automated=false"},
			replies: []reply{{200, `{"count":0,"next":null,"results":[]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/search?is_automated=false&page_size=25&q="}}, out: []string{"NAME"}},
		{name: "search pages up to limit", args: []string{"search", "api", "--limit", "3", "--json"},
			replies: []reply{
				{200, `{"count":4,"next":"http://elsewhere:5000/api/v1/search?page=2&page_size=2&q=api","results":[{"repo_name":"a/api"},{"repo_name":"b/api","is_private":true}]}`},
				{200, `{"count":4,"next":null,"results":[{"repo_name":"c/api"},{"repo_name":"d/api"}]}`},
			},
			want: []recorded{{Method: "GET", Path: "/api/v1/search?page_size=3&q=api"}, {Method: "GET", Path: "/api/v1/search?page=2&page_size=2&q=api"}},
			out:  []string{`"repo_name": "a/api"`, `"is_private": true`, `"repo_name": "c/api"`}, notOut: []string{"d/api"}},
		{name: "namespace set", args: []string{"namespace", "set", "acme", "--default-private=true"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/namespaces/acme", Body: map[string]any{"default_private": true}}}},
		{name: "token create", args: []string{"token", "create", "--scope", "read", "--expires", "30d", "--label", "ci"},
			replies: []reply{{201, `{"uuid":"abc","token_label":"ci","scopes":["read"],"token":"hmp_abc_secret"}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/access-tokens", Body: map[string]any{"token_label": "ci", "scopes": []any{"read"}, "expires_in": float64(30 * 24 * 3600)}}},
			out:     []string{"hmp_abc_secret\n"}},
		{name: "token create never expires", args: []string{"token", "create", "--scope", "write,delete"},
			replies: []reply{{201, `{"uuid":"abc","scopes":["write","delete"],"token":"hmp_abc_secret"}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/access-tokens", Body: map[string]any{"scopes": []any{"write", "delete"}}}}},
		{name: "token ls", args: []string{"token", "ls"},
			replies: []reply{{200, `{"count":1,"next":null,"results":[{"uuid":"abc","token_label":"ci","scopes":["read"],"created_at":"2026-01-02T03:04:05Z"}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/access-tokens"}}, out: []string{"abc", "ci", "read", "2026-01-02T03:04:05Z", "never"}},
		{name: "token rm", args: []string{"token", "rm", "abc"}, replies: []reply{{204, ``}},
			want: []recorded{{Method: "DELETE", Path: "/api/v1/access-tokens/abc"}}},
		{name: "audit limit", args: []string{"audit", "--limit", "1", "--after", "e0"},
			replies: []reply{{200, `{"count":2,"next":"http://x/api/v1/audit?last=e2","results":[{"id":"e1","action":"login","actor":"admin"},{"id":"e2","action":"token.create"}]}`}},
			want:    []recorded{{Method: "GET", Path: "/api/v1/audit?last=e0&page_size=500"}}, out: []string{"e1", "login"}},
		{name: "settings set", args: []string{"settings", "set", "--open-signup=true"},
			want: []recorded{{Method: "PATCH", Path: "/api/v1/settings", Body: map[string]any{"open_signup": true}}}},
		{name: "settings show", args: []string{"settings", "show"}, replies: []reply{{200, `{"open_signup":false}`}},
			want: []recorded{{Method: "GET", Path: "/api/v1/settings"}}, out: []string{"open-signup", "false"}},
		{name: "keys rotate", args: []string{"keys", "rotate"}, replies: []reply{{200, `{"kid":"K1"}`}},
			want: []recorded{{Method: "POST", Path: "/api/v1/keys/rotate"}}, out: []string{"K1\n"}},
		{name: "login", args: []string{"login", "-u", "alice", "--password-stdin"}, stdin: "alicepw\n",
			replies: []reply{{200, `{"token":"eyJ.x.y"}`}},
			want:    []recorded{{Method: "POST", Path: "/api/v1/users/login", Auth: "-", Body: map[string]any{"username": "alice", "password": "alicepw"}}},
			out:     []string{"eyJ.x.y\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envUsername, "admin")
			t.Setenv(envPassword, "s3cret")
			t.Setenv(envToken, "")
			f := &fakeAPI{replies: tc.replies}
			srv := httptest.NewServer(f)
			defer srv.Close()
			out, err := runCLI(t, srv.URL, tc.stdin, tc.args...)
			if err != nil {
				t.Fatalf("hubmesh %s: %v", strings.Join(tc.args, " "), err)
			}
			if len(f.reqs) != len(tc.want) {
				t.Fatalf("requests %+v, want %+v", f.reqs, tc.want)
			}
			for i, w := range tc.want {
				got := f.reqs[i]
				switch w.Auth {
				case "":
					w.Auth = basicAdmin
				case "-":
					w.Auth = ""
				}
				gb, _ := json.Marshal(got.Body)
				wb, _ := json.Marshal(w.Body)
				if got.Method != w.Method || got.Path != w.Path || got.Auth != w.Auth || !bytes.Equal(gb, wb) {
					t.Errorf("request %d: %s %s auth %q body %s; want %s %s auth %q body %s", i, got.Method, got.Path, got.Auth, gb, w.Method, w.Path, w.Auth, wb)
				}
			}
			for _, w := range tc.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q lacks %q", out, w)
				}
			}
			for _, w := range tc.notOut {
				if strings.Contains(out, w) {
					t.Errorf("stdout %q holds %q", out, w)
				}
			}
		})
	}
}

// TestAPIErrors checks that a failed call is one line with the server's
// message and code, and that a 401 without credentials says what to set.
func TestAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		rep     reply
		want    []string
		notWant string
	}{
		{"unauthenticated", map[string]string{envUsername: "", envPassword: "", envToken: ""},
			reply{401, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`},
			[]string{"authentication required (UNAUTHORIZED)", "HUBMESH_USERNAME", "HUBMESH_TOKEN"}, ""},
		{"wrong password", map[string]string{envUsername: "alice", envPassword: "x", envToken: ""},
			reply{401, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`},
			[]string{"bad credentials (UNAUTHORIZED)"}, "HUBMESH_TOKEN"},
		{"denied", map[string]string{envUsername: "alice", envPassword: "x", envToken: ""},
			reply{403, `{"errors":[{"code":"DENIED","message":"only site administrators may do this"}]}`},
			[]string{"only site administrators may do this (DENIED)"}, ""},
		{"multi-line message", map[string]string{envUsername: "alice", envPassword: "x", envToken: ""},
			reply{409, `{"errors":[{"code":"CONFLICT","message":"the name\n\"alice\" is taken"}]}`},
			[]string{`the name "alice" is taken (CONFLICT)`}, ""},
		{"not JSON", map[string]string{envUsername: "alice", envPassword: "x", envToken: ""},
			reply{502, `<html>bad gateway</html>`},
			[]string{"GET /api/v1/users", "502"}, "html"},
		{"rate limited", map[string]string{envUsername: "alice", envPassword: "x", envToken: ""},
			reply{429, `{"errors":[{"code":"TOOMANYREQUESTS","message":"too many failed logins; retry in 300s"}]}`},
			[]string{"too many failed logins", "TOOMANYREQUESTS"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			srv := httptest.NewServer(&fakeAPI{replies: []reply{tc.rep}})
			defer srv.Close()
			_, err := runCLI(t, srv.URL, "", "user", "ls")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if tc.notWant != "" && strings.Contains(msg, tc.notWant) {
				t.Errorf("error %q mentions %q", msg, tc.notWant)
			}
		})
	}
}

// TestUsageErrors checks that command lines that cannot work are usage
// errors (exit code 2) found before anything is sent.
func TestUsageErrors(t *testing.T) {
	f := &fakeAPI{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	t.Setenv(envUsername, "admin")
	t.Setenv(envPassword, "s3cret")
	for _, args := range [][]string{
		{"user", "create", "alice"},
		{"user", "create", "alice", "--password-stdin"}, // empty stdin
		{"user", "create"},
		{"user", "passwd", "--password-stdin"}, // empty stdin
		{"user", "frob"},
		{"team", "create", "acme"},
		{"team", "grant", "acme/dev", "acme/api"},
		{"team", "grant", "acme/dev", "acme/api", "none"},
		{"repo", "set", "a/b"},
		{"repo", "set", "a/b", "--private", "--public"},
		{"repo", "create", "a//b"},
		{"token", "create", "--scope", "pull"},
		{"token", "create", "--expires", "tomorrow"},
		{"settings", "set"},
		{"namespace", "set", "acme"},
		{"user", "ls", "--format", "xml"},
		{"audit", "--limit", "-1"},
		{"login"},
		{"repo", "set", "a/b", "--readme", "x", "--full-description", "y"},
		{"repo", "set", "a/b", "--readme", ""},
		{"repo", "star"},
		{"repo", "unstar", "a//b"},
		{"repo", "starred", "a", "b"},
		{"repo", "official"},
		{"repo", "official", "a/b", "--namespace", "a"},
		{"repo", "official", "--namespace", "a/b"},
		{"repo", "tags"},
		{"search", "a", "b"},
		{"search", "a", "--limit", "0"},
		{"search", "a", "--stars", "-1"},
		{"search", "a", "--stars", "many"},
		{"search", "a", "--format", "yaml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if args[0] == "login" {
				t.Setenv(envUsername, "")
			}
			_, err := runCLI(t, srv.URL, "", args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("error %v, want a usage error", err)
			}
		})
	}
	if len(f.reqs) != 0 {
		t.Errorf("usage errors sent requests: %+v", f.reqs)
	}
}

// TestRepoSetReadmeFile checks that --readme sends a file's content as it
// is, and refuses what is not UTF-8 text before sending anything.
func TestRepoSetReadmeFile(t *testing.T) {
	t.Setenv(envUsername, "admin")
	t.Setenv(envPassword, "s3cret")
	t.Setenv(envToken, "")
	dir := t.TempDir()
	good := filepath.Join(dir, "README.md")
	text := "# Widget\r\n\nFrobnicates *widgets* — with ünïcode.\n"
	if err := os.WriteFile(good, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "logo.png")
	if err := os.WriteFile(bad, []byte{0x89, 'P', 'N', 'G', 0xff, 0xfe}, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fakeAPI{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	if _, err := runCLI(t, srv.URL, "", "repo", "set", "acme/widget", "--readme", good); err != nil {
		t.Fatalf("repo set --readme: %v", err)
	}
	if len(f.reqs) != 1 || f.reqs[0].Method != http.MethodPatch || f.reqs[0].Body["full_description"] != text {
		t.Fatalf("requests %+v, want one PATCH with the file's content", f.reqs)
	}
	for _, tc := range []struct{ file, want string }{
		{bad, "not UTF-8"},
		{filepath.Join(dir, "missing.md"), "missing.md"},
	} {
		_, err := runCLI(t, srv.URL, "", "repo", "set", "acme/widget", "--readme", tc.file)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("repo set --readme %s: %v, want one line holding %q", tc.file, err, tc.want)
		}
	}
	if len(f.reqs) != 1 {
		t.Errorf("a refused --readme sent requests: %+v", f.reqs[1:])
	}
}

func TestHumanSizeAndSummary(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0B"}, {512, "512B"}, {999, "999B"}, {1000, "1kB"}, {8192, "8.19kB"},
		{999_999, "1MB"}, {31_500_000, "31.5MB"}, {2_000_000_000, "2GB"},
	} {
		if got := humanSize(tc.n); got != tc.want {
			t.Errorf("humanSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "-"},
		{" \n\t\n", "-"},
		{"one line", "one line (8 characters)"},
		{"\n\n  # Title  \nbody", "# Title (18 characters)"},
		{strings.Repeat("é", 70), strings.Repeat("é", 57) + "... (70 characters)"},
	} {
		if got := summary(tc.in); got != tc.want {
			t.Errorf("summary(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
