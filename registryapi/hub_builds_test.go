package registryapi

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/auth"
)

func init() {
	const base = "/api/v1/repositories/{ns}/{name}"
	settingsBody := map[string]string{"source": "object", "rules": "array", "build_args": "object", "allow_pushes": "boolean",
		"poll_seconds": "integer", "webhook_secret": "string", "regenerate_trigger_token": "boolean", "regenerate_webhook_secret": "boolean"}
	triggerBody := map[string]string{"build": "boolean", "source_type": "string", "source_name": "string", "docker_tag": "string"}
	manualBody := map[string]string{"build": "boolean", "source_type": "string", "source_name": "string", "docker_tag": "string", "commit": "string"}
	apiOps = append(apiOps,
		apiOp{"GET", base + "/build-settings", "Automated build settings: source (credentials never shown), rules, build args, trigger URL, webhook URL and secret (repository administrators)", "builds", "user", nil, nil, 200, buildSettingsView{}},
		apiOp{"PUT", base + "/build-settings", "Create or replace the build settings; source credentials left out are kept while the URL is unchanged; rules: source_type branch|tag, source_name a name or /regex/ (at most 9 groups), tag template with {sourceref} and {\\1}..{\\9}, dockerfile, context, autobuild and build_cache (default true)", "builds", "user", nil, settingsBody, 200, buildSettingsView{}},
		apiOp{"DELETE", base + "/build-settings", "Stop building the repository automatically (the build history stays)", "builds", "user", nil, nil, 204, nil},
		apiOp{"POST", base + "/builds", "Start builds by hand: {} or {build:true} (every rule with a literal source name), {source_type, source_name[, commit]} or {docker_tag} (repository administrators)", "builds", "user", nil, manualBody, 202, buildsQueued{}},
		apiOp{"GET", base + "/builds", "Build history, newest first (read permission); next is the last= of the next page", "builds", "none", []string{"page_size", "last"}, nil, 200, buildPage{}},
		apiOp{"GET", base + "/builds/{id}", "Get a build: state, trigger, commit, tags, timings, message, pushed digest", "builds", "none", nil, nil, 200, hubmesh.Build{}},
		apiOp{"GET", base + "/builds/{id}/logs", "A build's log as text/plain from byte offset on; follow=true streams it until the build finishes", "builds", "none", []string{"follow", "offset"}, nil, 200, nil},
		apiOp{"POST", base + "/builds/{id}/cancel", "Cancel an unfinished build (409 when it has finished)", "builds", "user", nil, nil, 200, hubmesh.Build{}},
		apiOp{"POST", base + "/builds/{id}/retry", "Build again what a finished build built", "builds", "user", nil, nil, 202, buildsQueued{}},
		apiOp{"POST", base + "/builds/webhook", "Push webhook of GitHub, Gitea, Forgejo or GitLab, signed with the settings' webhook secret; builds the autobuild rules that match", "builds", "none", nil, nil, 202, buildsQueued{}},
		apiOp{"POST", base + "/trigger/{token}", "The trigger URL (the token is the credential): Docker Hub bodies {build:true}, {source_type, source_name}, {docker_tag}; none means build:true", "builds", "none", nil, triggerBody, 202, buildsQueued{}},
	)
}

// fakeBuilds is an in-memory Builds.
type fakeBuilds struct {
	mu       sync.Mutex
	settings map[string]hubmesh.BuildSettings
	builds   map[string]hubmesh.Build
	seq      int
	logs     map[string]string
	live     map[string]chan string // followed logs: chunks until closed
	setErr   error
}

func newFakeBuilds() *fakeBuilds {
	return &fakeBuilds{settings: map[string]hubmesh.BuildSettings{}, builds: map[string]hubmesh.Build{},
		logs: map[string]string{}, live: map[string]chan string{}}
}

func (f *fakeBuilds) BuildSettings(_ context.Context, repo string) (hubmesh.BuildSettings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.settings[repo]
	if !ok {
		return s, fmt.Errorf("build settings of %s: %w", repo, hubmesh.ErrNotFound)
	}
	return s, nil
}

func (f *fakeBuilds) SetBuildSettings(_ context.Context, s hubmesh.BuildSettings) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setErr != nil {
		return f.setErr
	}
	f.settings[s.Repo] = s
	return nil
}

func (f *fakeBuilds) DeleteBuildSettings(_ context.Context, repo string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.settings[repo]; !ok {
		return hubmesh.ErrNotFound
	}
	delete(f.settings, repo)
	return nil
}

func (f *fakeBuilds) QueueBuilds(_ context.Context, bs []hubmesh.Build) ([]hubmesh.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(bs) == 0 || len(bs) > 25 {
		return nil, fmt.Errorf("%d builds: %w", len(bs), hubmesh.ErrInvalid)
	}
	out := make([]hubmesh.Build, len(bs))
	for i, b := range bs {
		f.seq++
		b.ID = fmt.Sprintf("%016x%04x", f.seq, 0)
		b.State, b.Updated = hubmesh.BuildQueued, b.Created
		f.builds[b.ID] = b
		out[i] = b
	}
	return out, nil
}

func (f *fakeBuilds) Build(_ context.Context, id string) (hubmesh.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.builds[id]
	if !ok {
		return b, hubmesh.ErrNotFound
	}
	return b, nil
}

func (f *fakeBuilds) Builds(_ context.Context, repo string, p hubmesh.Page) ([]hubmesh.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return newestFirst(f.builds, p, func(b hubmesh.Build) (string, bool) { return b.ID, b.Repo == repo }), nil
}

func (f *fakeBuilds) CancelBuild(_ context.Context, id, actor string, at time.Time) (hubmesh.Build, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.builds[id]
	if !ok {
		return b, hubmesh.ErrNotFound
	}
	if hubmesh.BuildFinished(b.State) {
		return b, fmt.Errorf("build already %s: %w", b.State, hubmesh.ErrInvalid)
	}
	b.State, b.Finished, b.Updated, b.Message = hubmesh.BuildCancelled, at, at, "cancelled by "+actor
	f.builds[id] = b
	return b, nil
}

func (f *fakeBuilds) BuildLog(ctx context.Context, b hubmesh.Build, offset int64, follow bool, w io.Writer) error {
	f.mu.Lock()
	log, ok := f.logs[b.ID]
	live := f.live[b.ID]
	f.mu.Unlock()
	if !ok && (!follow || live == nil) {
		return fmt.Errorf("log of %s: %w", b.ID, hubmesh.ErrNotFound)
	}
	if offset < int64(len(log)) {
		if _, err := io.WriteString(w, log[offset:]); err != nil {
			return err
		}
	}
	if !follow || live == nil {
		return nil
	}
	for {
		select {
		case chunk, ok := <-live:
			if !ok {
				return nil
			}
			if _, err := io.WriteString(w, chunk); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// newBuildEnv is an authEnv whose access control and Hub have automated
// builds: alice owns org acme (public acme/api and acme/other, private
// acme/secret), bob reads acme/secret, wendy writes all three, carol
// has no grants.
func newBuildEnv(t *testing.T) (*authEnv, *fakeBuilds) {
	fb := newFakeBuilds()
	e := newAuthEnv(t, func(c *AuthConfig) { c.Builds = fb })
	e.withHub(HubConfig{Builds: fb})
	for _, u := range []string{"alice", "bob", "wendy", "carol"} {
		e.addUser(u, false)
	}
	e.addOrg("acme", "alice")
	e.addRepo("acme/api", false)
	e.addRepo("acme/other", false)
	e.addRepo("acme/secret", true)
	e.addTeam("acme", "readers", []string{"bob"}, map[string]hubmesh.Permission{"acme/secret": hubmesh.PermRead})
	e.addTeam("acme", "writers", []string{"wendy"}, map[string]hubmesh.Permission{"acme/api": hubmesh.PermWrite, "acme/secret": hubmesh.PermWrite, "acme/other": hubmesh.PermWrite})
	return e, fb
}

const buildsBase = "/api/v1/repositories/acme/api"

// configure PUTs settings for repo as alice with the two rules of the
// issue's example (the tag rule without autobuild) and returns the view.
func configureBuilds(e *authEnv, repo string, extra map[string]any) buildSettingsView {
	e.t.Helper()
	body := map[string]any{
		"source": map[string]any{"url": "https://git.example.com/acme/api.git", "username": "bot", "password": "s3cret-pw"},
		"rules": []map[string]any{
			{"source_type": "branch", "source_name": "main", "tag": "latest"},
			{"source_type": "tag", "source_name": `/^v([0-9.]+)$/`, "tag": `{\1}`, "autobuild": false, "dockerfile": "/build/Dockerfile", "context": "app/"},
		},
		"build_args": map[string]string{"GOFLAGS": "-mod=vendor"},
	}
	for k, v := range extra {
		body[k] = v
	}
	r := e.json("PUT", "/api/v1/repositories/"+repo+"/build-settings", basic("alice", testPassword), body)
	e.expect(r, http.StatusOK, "")
	return decode[buildSettingsView](e.t, r)
}

func TestBuildSettingsRoundTrip(t *testing.T) {
	e, fb := newBuildEnv(t)
	alice := basic("alice", testPassword)
	v := configureBuilds(e, "acme/api", nil)
	if v.Repository != "acme/api" || !v.Source.HasPassword || v.Source.Username != "bot" || v.Source.HasSSHKey {
		t.Fatalf("view %+v", v)
	}
	wantRules := []hubmesh.BuildRule{
		{SourceType: "branch", SourceName: "main", Tag: "latest", Dockerfile: "Dockerfile", Context: ".", Autobuild: true, BuildCache: true},
		{SourceType: "tag", SourceName: `/^v([0-9.]+)$/`, Tag: `{\1}`, Dockerfile: "build/Dockerfile", Context: "app", BuildCache: true},
	}
	if !slices.Equal(v.Rules, wantRules) || v.BuildArgs["GOFLAGS"] != "-mod=vendor" || v.AllowPushes {
		t.Fatalf("rules %+v args %v", v.Rules, v.BuildArgs)
	}
	s := fb.settings["acme/api"]
	if len(s.TriggerToken) != 32 || len(s.WebhookSecret) != 32 || s.Source.Password != "s3cret-pw" {
		t.Fatalf("stored %+v", s)
	}
	if v.TriggerURL != e.srv.URL+buildsBase+"/trigger/"+s.TriggerToken || v.WebhookURL != e.srv.URL+buildsBase+"/builds/webhook" || v.WebhookSecret != s.WebhookSecret {
		t.Fatalf("urls %q %q", v.TriggerURL, v.WebhookURL)
	}

	// GET shows the same, and never a credential.
	r := e.json("GET", buildsBase+"/build-settings", alice, nil)
	e.expect(r, http.StatusOK, "")
	if strings.Contains(string(r.body), "s3cret-pw") || strings.Contains(string(r.body), `"password"`) {
		t.Fatalf("credential shown: %s", r.body)
	}
	if g := decode[buildSettingsView](t, r); g.TriggerURL != v.TriggerURL || !g.Created.Equal(v.Created) {
		t.Fatalf("get %+v", g)
	}

	// Omitted credentials are kept (same URL), tokens too; regenerating
	// the trigger token changes only it.
	e.expect(e.json("PUT", buildsBase+"/build-settings", alice, map[string]any{
		"source": map[string]any{"url": "https://git.example.com/acme/api.git", "username": "bot"},
		"rules":  []map[string]any{{"source_type": "branch", "source_name": "main"}}, "allow_pushes": true, "poll_seconds": 60,
	}), http.StatusOK, "")
	s2 := fb.settings["acme/api"]
	if s2.Source.Password != "s3cret-pw" || s2.TriggerToken != s.TriggerToken || s2.WebhookSecret != s.WebhookSecret ||
		!s2.AllowPushes || s2.PollSeconds != 60 || len(s2.Rules) != 1 || s2.Rules[0].Tag != "{sourceref}" || s2.BuildArgs != nil {
		t.Fatalf("after update %+v", s2)
	}
	v3 := configureBuilds(e, "acme/api", map[string]any{"regenerate_trigger_token": true, "webhook_secret": "my-own-webhook-secret"})
	s3 := fb.settings["acme/api"]
	if s3.TriggerToken == s.TriggerToken || v3.TriggerURL == v.TriggerURL || s3.WebhookSecret != "my-own-webhook-secret" {
		t.Fatalf("regenerate: %+v", s3)
	}
	// "" removes a credential; a new URL drops those not given again.
	cleared := configureBuilds(e, "acme/api", map[string]any{"source": map[string]any{"url": "https://git.example.com/acme/api.git", "password": ""}})
	if cleared.Source.HasPassword || fb.settings["acme/api"].Source.Password != "" {
		t.Fatalf("password not removed: %+v", cleared.Source)
	}
	configureBuilds(e, "acme/api", nil)
	e.expect(e.json("PUT", buildsBase+"/build-settings", alice, map[string]any{
		"source": map[string]any{"url": "https://elsewhere.example.com/api.git"},
		"rules":  []map[string]any{{"source_type": "branch", "source_name": "main"}},
	}), http.StatusOK, "")
	if p := fb.settings["acme/api"].Source.Password; p != "" {
		t.Fatalf("password %q kept for another host", p)
	}

	// Local sources: site administrators only.
	local := map[string]any{"source": map[string]any{"url": "/srv/git/api"}, "rules": []map[string]any{{"source_type": "branch", "source_name": "main"}}}
	e.expect(e.json("PUT", buildsBase+"/build-settings", alice, local), http.StatusForbidden, "DENIED")
	e.expect(e.json("PUT", buildsBase+"/build-settings", basic("admin", testPassword), local), http.StatusOK, "")

	// Delete: 204, then 404 twice.
	e.expect(e.json("DELETE", buildsBase+"/build-settings", alice, nil), http.StatusNoContent, "")
	e.expect(e.json("GET", buildsBase+"/build-settings", alice, nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.json("DELETE", buildsBase+"/build-settings", alice, nil), http.StatusNotFound, "NOT_FOUND")
}

func TestBuildSettingsValidation(t *testing.T) {
	e, fb := newBuildEnv(t)
	alice := basic("alice", testPassword)
	src := map[string]any{"url": "https://git.example.com/acme/api.git"}
	rule := func(name, tag string) []map[string]any {
		return []map[string]any{{"source_type": "tag", "source_name": name, "tag": tag}}
	}
	manyRules := make([]map[string]any, 26)
	for i := range manyRules {
		manyRules[i] = map[string]any{"source_type": "branch", "source_name": fmt.Sprintf("b%d", i)}
	}
	for _, tc := range []struct {
		name string
		body any
		want string
	}{
		{"bad regex", map[string]any{"source": src, "rules": rule("/v([0-9/", "x")}, "does not compile"},
		{"too many groups", map[string]any{"source": src, "rules": rule(`/(1)(2)(3)(4)(5)(6)(7)(8)(9)(10)/`, "x")}, "10 capture groups, at most 9"},
		{"missing group", map[string]any{"source": src, "rules": rule(`/^v(.*)$/`, `{\2}`)}, "capture group 2"},
		{"no rules", map[string]any{"source": src}, "at least one rule"},
		{"too many rules", map[string]any{"source": src, "rules": manyRules}, "at most 25"},
		{"no source", map[string]any{"rules": rule("v1", "x")}, "need a source"},
		{"bad source", map[string]any{"source": map[string]any{"url": "ftp://x/y"}, "rules": rule("v1", "x")}, "want https://"},
		{"credentials in url", map[string]any{"source": map[string]any{"url": "https://u:p@x/y"}, "rules": rule("v1", "x")}, "not in the URL"},
		{"unknown field", map[string]any{"source": src, "rules": rule("v1", "x"), "colour": "red"}, "unknown field"},
		{"bad poll", map[string]any{"source": src, "rules": rule("v1", "x"), "poll_seconds": 1}, "poll_seconds"},
		{"short webhook secret", map[string]any{"source": src, "rules": rule("v1", "x"), "webhook_secret": "short"}, "webhook_secret"},
		{"bad build arg", map[string]any{"source": src, "rules": rule("v1", "x"), "build_args": map[string]string{"A=B": "1"}}, "build arg name"},
		{"not json", "{", "request body"},
		{"trailing", `{"source":{"url":"https://x/y"},"rules":[{"source_type":"branch","source_name":"main"}]} {}`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.json("PUT", buildsBase+"/build-settings", alice, tc.body)
			e.expect(r, http.StatusBadRequest, "UNSUPPORTED")
			if msg := r.firstError().Message; !strings.Contains(msg, tc.want) || strings.HasSuffix(msg, ": invalid") {
				t.Fatalf("message %q, want it to say %q", msg, tc.want)
			}
		})
	}
	big := strings.Repeat("x", maxBuildSettingsBody+1)
	e.expect(e.json("PUT", buildsBase+"/build-settings", alice, map[string]any{"source": src, "rules": rule("v1", "x"), "build_args": map[string]string{"A": big}}), http.StatusBadRequest, "UNSUPPORTED")
	// The state's own refusal is a 400 too.
	fb.setErr = fmt.Errorf("build args too long: %w", hubmesh.ErrInvalid)
	r := e.json("PUT", buildsBase+"/build-settings", alice, map[string]any{"source": src, "rules": rule("v1", "x")})
	e.expect(r, http.StatusBadRequest, "UNSUPPORTED")
	if len(fb.settings) != 0 {
		t.Fatalf("stored %v", fb.settings)
	}
}

func TestBuildPermissions(t *testing.T) {
	e, fb := newBuildEnv(t)
	alice, bob, carol, wendy := basic("alice", testPassword), basic("bob", testPassword), basic("carol", testPassword), basic("wendy", testPassword)
	configureBuilds(e, "acme/api", nil)
	configureBuilds(e, "acme/secret", nil)
	r := e.json("POST", buildsBase+"/builds", alice, map[string]any{})
	e.expect(r, http.StatusAccepted, "")
	q := decode[buildsQueued](t, r)
	r = e.json("POST", "/api/v1/repositories/acme/secret/builds", alice, map[string]any{})
	e.expect(r, http.StatusAccepted, "")
	sq := decode[buildsQueued](t, r)
	bid, sid := q.Builds[0].ID, sq.Builds[0].ID
	fb.logs[sid] = "secret log\n"

	// Non-admins neither configure, trigger nor cancel: 403 where they
	// see the repository, 401 anonymous.
	for _, who := range []string{bob, carol, wendy} {
		e.expect(e.json("GET", buildsBase+"/build-settings", who, nil), http.StatusForbidden, "DENIED")
		e.expect(e.json("PUT", buildsBase+"/build-settings", who, map[string]any{"source": map[string]any{"url": "https://x/y"}, "rules": []map[string]any{{"source_type": "branch", "source_name": "main"}}}), http.StatusForbidden, "DENIED")
		e.expect(e.json("DELETE", buildsBase+"/build-settings", who, nil), http.StatusForbidden, "DENIED")
		e.expect(e.json("POST", buildsBase+"/builds", who, map[string]any{}), http.StatusForbidden, "DENIED")
		e.expect(e.json("POST", buildsBase+"/builds/"+bid+"/cancel", who, nil), http.StatusForbidden, "DENIED")
		e.expect(e.json("POST", buildsBase+"/builds/"+bid+"/retry", who, nil), http.StatusForbidden, "DENIED")
	}
	e.expect(e.json("POST", buildsBase+"/builds", "", map[string]any{}), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("PUT", buildsBase+"/build-settings", "", map[string]any{}), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("POST", "/api/v1/repositories/acme/secret/builds", bob, map[string]any{}), http.StatusForbidden, "DENIED")

	// Readers list and read builds and logs: anyone on a public
	// repository, bob on the private one.
	for _, who := range []string{"", carol, bob} {
		e.expect(e.json("GET", buildsBase+"/builds", who, nil), http.StatusOK, "")
		e.expect(e.json("GET", buildsBase+"/builds/"+bid, who, nil), http.StatusOK, "")
	}
	e.expect(e.json("GET", "/api/v1/repositories/acme/secret/builds", bob, nil), http.StatusOK, "")
	r = e.do("GET", "/api/v1/repositories/acme/secret/builds/"+sid+"/logs", bob, nil)
	if r.status != http.StatusOK || string(r.body) != "secret log\n" {
		t.Fatalf("bob reads the log: %d %q", r.status, r.body)
	}

	// Without read permission a private repository is missing: the same
	// answer as for a repository that does not exist, for every route.
	for _, who := range []string{"", carol} {
		for _, tc := range []struct{ method, path string }{
			{"GET", "/builds"}, {"GET", "/builds/" + sid}, {"GET", "/builds/" + sid + "/logs"},
			{"GET", "/build-settings"}, {"POST", "/builds/" + sid + "/cancel"},
		} {
			if who == "" && tc.method == "POST" || who == "" && tc.path == "/build-settings" {
				continue // anonymous: 401 before anything is looked up
			}
			hid := e.json(tc.method, "/api/v1/repositories/acme/secret"+tc.path, who, nil)
			missing := e.json(tc.method, "/api/v1/repositories/acme/nothere"+tc.path, who, nil)
			if hid.status != http.StatusNotFound || hid.status != missing.status || hid.code() != missing.code() ||
				strings.ReplaceAll(string(hid.body), "secret", "nothere") != string(missing.body) {
				t.Fatalf("%q %s %s: hidden %d %s, missing %d %s", who, tc.method, tc.path, hid.status, hid.body, missing.status, missing.body)
			}
		}
	}
	// A build of another repository is not found through this one.
	e.expect(e.json("GET", buildsBase+"/builds/"+sid, alice, nil), http.StatusNotFound, "NOT_FOUND")
	e.expect(e.json("POST", buildsBase+"/builds/"+sid+"/cancel", alice, nil), http.StatusNotFound, "NOT_FOUND")
}

func TestManualTrigger(t *testing.T) {
	e, fb := newBuildEnv(t)
	alice := basic("alice", testPassword)
	configureBuilds(e, "acme/api", nil)
	trigger := func(body any) buildsQueued {
		t.Helper()
		r := e.json("POST", buildsBase+"/builds", alice, body)
		e.expect(r, http.StatusAccepted, "")
		return decode[buildsQueued](t, r)
	}
	// A tag through the regex rule (autobuild off: manual builds ignore it).
	q := trigger(map[string]any{"source_type": "tag", "source_name": "v1.2.3"})
	if len(q.Builds) != 1 {
		t.Fatalf("builds %+v", q.Builds)
	}
	b := q.Builds[0]
	if b.ID == "" || b.Repo != "acme/api" || b.State != hubmesh.BuildQueued || b.Trigger != hubmesh.TriggerManual || b.Actor != "alice" ||
		b.SourceType != "tag" || b.SourceName != "v1.2.3" || !slices.Equal(b.Tags, []string{"1.2.3"}) ||
		b.Dockerfile != "build/Dockerfile" || b.Context != "app" || !b.BuildCache || b.Created.IsZero() {
		t.Fatalf("build %+v", b)
	}
	if got := fb.builds[b.ID]; got.SourceName != "v1.2.3" {
		t.Fatalf("stored %+v", got)
	}
	// {} and {"build": true}: every literal rule; docker_tag; a commit.
	for _, body := range []any{map[string]any{}, map[string]any{"build": true}, "", map[string]any{"docker_tag": "latest"}} {
		q := trigger(body)
		if len(q.Builds) != 1 || q.Builds[0].SourceName != "main" || !slices.Equal(q.Builds[0].Tags, []string{"latest"}) {
			t.Fatalf("%v: %+v", body, q.Builds)
		}
	}
	sha := strings.Repeat("ab", 20)
	if q := trigger(map[string]any{"source_type": "Branch", "source_name": "main", "commit": sha}); q.Builds[0].Commit != sha {
		t.Fatalf("commit %+v", q.Builds[0])
	}
	for _, tc := range []struct {
		body any
		want string
	}{
		{map[string]any{"source_type": "branch", "source_name": "nope"}, `no build rule matches branch "nope"`},
		{map[string]any{"docker_tag": "edge"}, `no build rule matches docker tag "edge"`},
		{map[string]any{"commit": sha}, "commit needs source_type and source_name"},
		{map[string]any{"source_type": "branch", "source_name": "main", "commit": "HEAD"}, "full hex object name"},
		{map[string]any{"source_type": "commit", "source_name": "main"}, "want branch or tag"},
		{map[string]any{"build": false}, "asks for nothing"},
		{map[string]any{"source_name": "main"}, "go together"},
	} {
		r := e.json("POST", buildsBase+"/builds", alice, tc.body)
		e.expect(r, http.StatusBadRequest, "UNSUPPORTED")
		if !strings.Contains(r.firstError().Message, tc.want) {
			t.Fatalf("%v: %q, want %q", tc.body, r.firstError().Message, tc.want)
		}
	}
	// No settings: a 400 that says so.
	r := e.json("POST", "/api/v1/repositories/acme/other/builds", alice, map[string]any{})
	e.expect(r, http.StatusBadRequest, "UNSUPPORTED")
	if !strings.Contains(r.firstError().Message, "no build settings") {
		t.Fatalf("message %q", r.firstError().Message)
	}
	// As many targets as rules are allowed go into one command.
	rules := make([]map[string]any, 25)
	for i := range rules {
		rules[i] = map[string]any{"source_type": "branch", "source_name": fmt.Sprintf("b%d", i)}
	}
	e.expect(e.json("PUT", buildsBase+"/build-settings", alice, map[string]any{"source": map[string]any{"url": "https://x/y"}, "rules": rules}), http.StatusOK, "")
	if q := trigger(map[string]any{}); len(q.Builds) != 25 || q.Builds[24].SourceName != "b24" {
		t.Fatalf("queued %d builds", len(q.Builds))
	}
}

func TestBuildHistoryCancelRetry(t *testing.T) {
	e, _ := newBuildEnv(t)
	alice := basic("alice", testPassword)
	configureBuilds(e, "acme/api", nil)
	var ids []string
	for range 3 {
		q := decode[buildsQueued](t, e.json("POST", buildsBase+"/builds", alice, map[string]any{"source_type": "tag", "source_name": "v2"}))
		ids = append(ids, q.Builds[0].ID)
	}
	p := decode[buildPage](t, e.json("GET", buildsBase+"/builds?page_size=2", "", nil))
	if p.Count != 2 || p.Results[0].ID != ids[2] || p.Results[1].ID != ids[1] || p.Next != ids[1] {
		t.Fatalf("page 1 %+v", p)
	}
	p = decode[buildPage](t, e.json("GET", buildsBase+"/builds?page_size=2&last="+p.Next, "", nil))
	if p.Count != 1 || p.Results[0].ID != ids[0] || p.Next != "" {
		t.Fatalf("page 2 %+v", p)
	}
	e.expect(e.json("GET", buildsBase+"/builds?page_size=0", "", nil), http.StatusBadRequest, "")
	e.expect(e.json("GET", buildsBase+"/builds/ffffffffffffffffffff", "", nil), http.StatusNotFound, "NOT_FOUND")

	// Retry of an unfinished build: 409; cancel; cancel again: 409; retry.
	e.expect(e.json("POST", buildsBase+"/builds/"+ids[0]+"/retry", alice, nil), http.StatusConflict, "")
	r := e.json("POST", buildsBase+"/builds/"+ids[0]+"/cancel", alice, nil)
	e.expect(r, http.StatusOK, "")
	if b := decode[hubmesh.Build](t, r); b.State != hubmesh.BuildCancelled || b.Message != "cancelled by alice" {
		t.Fatalf("cancelled %+v", b)
	}
	r = e.json("POST", buildsBase+"/builds/"+ids[0]+"/cancel", alice, nil)
	e.expect(r, http.StatusConflict, "")
	if !strings.Contains(r.firstError().Message, "already cancelled") {
		t.Fatalf("message %q", r.firstError().Message)
	}
	r = e.json("POST", buildsBase+"/builds/"+ids[0]+"/retry", alice, nil)
	e.expect(r, http.StatusAccepted, "")
	nb := decode[buildsQueued](t, r).Builds[0]
	if nb.ID == ids[0] || nb.RetryOf != ids[0] || nb.Trigger != hubmesh.TriggerRetry || nb.Actor != "alice" ||
		nb.State != hubmesh.BuildQueued || !slices.Equal(nb.Tags, []string{"2"}) || nb.SourceName != "v2" {
		t.Fatalf("retry %+v", nb)
	}
}

func TestTriggerURL(t *testing.T) {
	e, _ := newBuildEnv(t)
	v := configureBuilds(e, "acme/api", nil)
	token := v.TriggerURL[strings.LastIndexByte(v.TriggerURL, '/')+1:]
	post := func(path, body string) result {
		t.Helper()
		return e.do("POST", path, "", []byte(body), "Content-Type", "application/json")
	}
	url := buildsBase + "/trigger/" + token
	for _, tc := range []struct {
		body string
		tags []string
	}{
		{`{"source_type": "Branch", "source_name": "main"}`, []string{"latest"}},
		{`{"source_type": "Tag", "source_name": "v3.1"}`, []string{"3.1"}},
		{`{"build": true}`, []string{"latest"}},
		{`{"docker_tag": "latest"}`, []string{"latest"}},
		{``, []string{"latest"}},
	} {
		r := post(url, tc.body)
		e.expect(r, http.StatusAccepted, "")
		q := decode[buildsQueued](t, r)
		if len(q.Builds) != 1 || !slices.Equal(q.Builds[0].Tags, tc.tags) || q.Builds[0].Trigger != hubmesh.TriggerURL || q.Builds[0].Actor != "" {
			t.Fatalf("%s: %+v", tc.body, q.Builds)
		}
	}
	e.expect(post(url, `{"docker_tag": "nope"}`), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(post(url, `{bad`), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(post(url, `{"build": true} x`), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(post(url, strings.Repeat(" ", maxTriggerBody+1)), http.StatusBadRequest, "UNSUPPORTED")

	// A wrong token, a repository without settings and one that does not
	// exist get one answer.
	wrong := post(buildsBase+"/trigger/"+strings.Repeat("0", 32), `{"build": true}`)
	e.expect(wrong, http.StatusForbidden, "DENIED")
	for _, path := range []string{"/api/v1/repositories/acme/other/trigger/" + token, "/api/v1/repositories/acme/nothere/trigger/" + token, buildsBase + "/trigger/x"} {
		r := post(path, `{"build": true}`)
		if r.status != wrong.status || string(r.body) != string(wrong.body) {
			t.Fatalf("%s: %d %s, want %d %s", path, r.status, r.body, wrong.status, wrong.body)
		}
	}
}

func githubSign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestBuildWebhook(t *testing.T) {
	e, _ := newBuildEnv(t)
	v := configureBuilds(e, "acme/api", nil)
	sha := strings.Repeat("c0ffee", 6) + "beef"
	push := func(ref string) string {
		return `{"ref":"` + ref + `","after":"` + sha + `","repository":{"clone_url":"https://git.example.com/acme/api.git"}}`
	}
	hook := func(path, event, body, sig string) result {
		t.Helper()
		return e.do("POST", path, "", []byte(body), "Content-Type", "application/json", "X-GitHub-Event", event, "X-Hub-Signature-256", sig)
	}
	url := buildsBase + "/builds/webhook"

	r := hook(url, "push", push("refs/heads/main"), githubSign(v.WebhookSecret, push("refs/heads/main")))
	e.expect(r, http.StatusAccepted, "")
	q := decode[buildsQueued](t, r)
	if len(q.Builds) != 1 || q.Builds[0].Commit != sha || q.Builds[0].Trigger != hubmesh.TriggerWebhook || !slices.Equal(q.Builds[0].Tags, []string{"latest"}) {
		t.Fatalf("webhook builds %+v", q.Builds)
	}
	// Verified events that build nothing: 200 without builds (a ping, a
	// branch no rule names, a tag whose rule has autobuild off).
	for _, tc := range []struct{ event, body string }{
		{"ping", `{"zen":"hi"}`}, {"push", push("refs/heads/dev")}, {"push", push("refs/tags/v1.0")},
	} {
		r := hook(url, tc.event, tc.body, githubSign(v.WebhookSecret, tc.body))
		e.expect(r, http.StatusOK, "")
		if q := decode[buildsQueued](t, r); q.Builds == nil || len(q.Builds) != 0 {
			t.Fatalf("%s %s: %s", tc.event, tc.body, r.body)
		}
	}
	// GitLab's token header works too.
	gl := `{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"` + sha + `","project":{"git_http_url":"https://x/y.git"}}`
	e.expect(e.do("POST", url, "", []byte(gl), "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", v.WebhookSecret), http.StatusAccepted, "")

	// A wrong signature, and any request for a repository without
	// settings, get one 403.
	body := push("refs/heads/main")
	wrong := hook(url, "push", body, githubSign("not-the-secret", body))
	e.expect(wrong, http.StatusForbidden, "DENIED")
	for _, tc := range []struct{ path, sig string }{
		{url, ""},
		{"/api/v1/repositories/acme/other/builds/webhook", githubSign(v.WebhookSecret, body)},
		{"/api/v1/repositories/acme/nothere/builds/webhook", githubSign("x", body)},
	} {
		r := hook(tc.path, "push", body, tc.sig)
		if r.status != wrong.status || string(r.body) != string(wrong.body) {
			t.Fatalf("%s: %d %s", tc.path, r.status, r.body)
		}
	}
	// No event header: 400 whether or not the repository has settings.
	e.expect(e.do("POST", url, "", []byte(body)), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.do("POST", "/api/v1/repositories/acme/other/builds/webhook", "", []byte(body)), http.StatusBadRequest, "UNSUPPORTED")
	// A malformed body that verifies: 400.
	e.expect(hook(url, "push", "{", githubSign(v.WebhookSecret, "{")), http.StatusBadRequest, "UNSUPPORTED")
}

func TestBuildLogs(t *testing.T) {
	e, fb := newBuildEnv(t)
	alice := basic("alice", testPassword)
	configureBuilds(e, "acme/api", nil)
	q := decode[buildsQueued](t, e.json("POST", buildsBase+"/builds", alice, map[string]any{"source_type": "branch", "source_name": "main"}))
	id := q.Builds[0].ID
	logs := buildsBase + "/builds/" + id + "/logs"

	r := e.do("GET", logs, "", nil)
	e.expect(r, http.StatusNotFound, "NOT_FOUND")
	if !strings.Contains(r.firstError().Message, "no log yet (queued)") {
		t.Fatalf("message %q", r.firstError().Message)
	}
	fb.mu.Lock()
	fb.logs[id] = "==> cloning\n==> building\n"
	fb.mu.Unlock()
	r = e.do("GET", logs, "", nil)
	if r.status != http.StatusOK || string(r.body) != "==> cloning\n==> building\n" || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("log %d %q %v", r.status, r.body, r.hdr)
	}
	if r = e.do("GET", logs+"?offset=12", "", nil); string(r.body) != "==> building\n" {
		t.Fatalf("offset: %q", r.body)
	}
	e.expect(e.do("GET", logs+"?offset=-1", "", nil), http.StatusBadRequest, "")
	e.expect(e.do("GET", logs+"?follow=maybe", "", nil), http.StatusBadRequest, "")

	// Following: the response starts at once and carries each chunk as it
	// comes, until the build finishes.
	live := make(chan string)
	fb.mu.Lock()
	fb.live[id] = live
	fb.mu.Unlock()
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.srv.URL+logs+"?follow=true&offset=12", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	readLine := func(want string) {
		t.Helper()
		line, err := br.ReadString('\n')
		if err != nil || line != want {
			t.Fatalf("read %q %v, want %q", line, err, want)
		}
	}
	readLine("==> building\n")
	live <- "step 1/2\n"
	readLine("step 1/2\n")
	live <- "==> pushing\n"
	readLine("==> pushing\n")
	close(live)
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the end: %q %v", rest, err)
	}
}

func TestBuildsUnavailable(t *testing.T) {
	e := newAuthEnv(t) // its Hub has no Builds
	e.addUser("alice", false)
	e.addRepo("alice/api", false)
	r := e.json("GET", "/api/v1/repositories/alice/api/builds", "", nil)
	e.expect(r, http.StatusServiceUnavailable, "UNAVAILABLE")
	e.expect(e.json("POST", "/api/v1/repositories/alice/api/trigger/x", "", nil), http.StatusServiceUnavailable, "UNAVAILABLE")
}

// pushRefused tries to start an upload into repo with authz and returns
// the answer.
func (e *authEnv) startUpload(repo, authz string) result {
	e.t.Helper()
	return e.do("POST", "/v2/"+repo+"/blobs/uploads/", authz, nil)
}

func TestManualPushRefused(t *testing.T) {
	e, _ := newBuildEnv(t)
	alice, wendy := basic("alice", testPassword), basic("wendy", testPassword)
	// Before any settings: writers push.
	e.pushImage("acme/api", "v0", wendy)
	tokBefore := e.token("wendy", "repository:acme/api:pull,push")
	if got := accessOf(e.claims(tokBefore, testService, auth.KindAccess))["repository:acme/api"]; !slices.Equal(got, []string{"pull", "push"}) {
		t.Fatalf("granted before %v", got)
	}

	configureBuilds(e, "acme/api", nil) // allow_pushes false
	want := "repository acme/api is built automatically: manual pushes are disabled (build settings allow_pushes)"
	// Basic on /v2, with the password or a personal access token: 403.
	_, pat := e.createPAT("wendy", hubmesh.ScopeWrite)
	for _, authz := range []string{wendy, alice, basic("wendy", pat), bearer(pat)} {
		r := e.startUpload("acme/api", authz)
		e.expect(r, http.StatusForbidden, "DENIED")
		if r.firstError().Message != want {
			t.Fatalf("message %q", r.firstError().Message)
		}
		r = e.do("PUT", "/v2/acme/api/manifests/v1", authz, []byte("{}"), "Content-Type", mediaTypeOCIManifest)
		e.expect(r, http.StatusForbidden, "DENIED")
	}
	// Pulls and other repositories are not affected.
	e.expect(e.do("GET", "/v2/acme/api/manifests/v0", wendy, nil, "Accept", mediaTypeOCIManifest), http.StatusOK, "")
	e.pushImage("acme/other", "v1", wendy)
	e.expect(e.startUpload("acme/secret", wendy), http.StatusAccepted, "")

	// The token service grants no push; a token granted push before the
	// settings is refused with the reason.
	tok := e.token("wendy", "repository:acme/api:pull,push", "repository:acme/other:pull,push")
	acc := accessOf(e.claims(tok, testService, auth.KindAccess))
	if !slices.Equal(acc["repository:acme/api"], []string{"pull"}) || !slices.Equal(acc["repository:acme/other"], []string{"pull", "push"}) {
		t.Fatalf("granted %v", acc)
	}
	if acc := accessOf(e.claims(e.token("alice", "repository:acme/api:*"), testService, auth.KindAccess)); !slices.Equal(acc["repository:acme/api"], []string{"delete", "pull"}) {
		t.Fatalf("granted * %v", acc)
	}
	r := e.startUpload("acme/api", bearer(tok))
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	if !strings.Contains(r.hdr.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("challenge %q", r.hdr.Get("WWW-Authenticate"))
	}
	r = e.startUpload("acme/api", bearer(tokBefore))
	e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	if r.firstError().Message != want || !strings.Contains(r.hdr.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("old token: %s %v", r.body, r.hdr)
	}

	// allow_pushes true: manual pushes again.
	configureBuilds(e, "acme/api", map[string]any{"allow_pushes": true})
	e.pushImage("acme/api", "v2", wendy)
	tok = e.token("wendy", "repository:acme/api:pull,push")
	if got := accessOf(e.claims(tok, testService, auth.KindAccess))["repository:acme/api"]; !slices.Equal(got, []string{"pull", "push"}) {
		t.Fatalf("granted with allow_pushes %v", got)
	}
}

// createPAT makes a personal access token for user with scopes and
// returns its id and secret.
func (e *authEnv) createPAT(user string, scopes ...string) (string, string) {
	e.t.Helper()
	r := e.json("POST", "/api/v1/access-tokens", basic(user, testPassword), map[string]any{"token_label": "ci", "scopes": scopes})
	e.expect(r, http.StatusCreated, "")
	v := decode[tokenView](e.t, r)
	return v.UUID, v.Token
}

func TestBuildToken(t *testing.T) {
	e, _ := newBuildEnv(t)
	configureBuilds(e, "acme/api", nil)
	configureBuilds(e, "acme/secret", nil)
	tok, err := e.a.BuildToken("acme/secret", "00000000000000070001", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := e.claims(tok, testService, auth.KindAccess)
	if c.Subject != "" || c.Expires.Sub(c.IssuedAt) != 15*time.Minute {
		t.Fatalf("claims %+v", c)
	}
	if acc := accessOf(c); len(acc) != 2 || !slices.Equal(acc["repository:acme/secret"], []string{"pull", "push"}) || acc["build:00000000000000070001"] == nil {
		t.Fatalf("access %v", acc)
	}
	// It pushes to its (private, automated) repository and pulls it back.
	e.pushImage("acme/secret", "latest", bearer(tok))
	e.expect(e.do("GET", "/v2/acme/secret/manifests/latest", bearer(tok), nil, "Accept", mediaTypeOCIManifest), http.StatusOK, "")
	// Elsewhere it is anonymous: no push to another automated repository
	// or a plain one, no view of another private one.
	for _, repo := range []string{"acme/api", "acme/other"} {
		r := e.startUpload(repo, bearer(tok))
		e.expect(r, http.StatusUnauthorized, "UNAUTHORIZED")
	}
	tok2, err := e.a.BuildToken("acme/api", "x1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.expect(e.do("GET", "/v2/acme/secret/tags/list", bearer(tok2), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.startUpload("acme/api", bearer(tok2)), http.StatusAccepted, "")
	// On the Hub API it is nobody.
	e.expect(e.json("GET", "/api/v1/repositories/acme/secret/builds", bearer(tok), nil), http.StatusNotFound, "NAME_UNKNOWN")
	e.expect(e.json("POST", "/api/v1/repositories/acme/secret/builds", bearer(tok), map[string]any{}), http.StatusUnauthorized, "UNAUTHORIZED")

	// The TTL is capped; bad arguments are refused.
	long, err := e.a.BuildToken("acme/api", "x2", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := e.claims(long, testService, auth.KindAccess); c.Expires.Sub(c.IssuedAt) != MaxBuildTokenTTL {
		t.Fatalf("ttl %v", c.Expires.Sub(c.IssuedAt))
	}
	for _, tc := range []struct {
		repo, id string
		ttl      time.Duration
	}{{"Acme/API", "x", time.Minute}, {"acme/api", "", time.Minute}, {"acme/api", "x", 0}} {
		if _, err := e.a.BuildToken(tc.repo, tc.id, tc.ttl); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Fatalf("%+v: %v", tc, err)
		}
	}
	// A token with a build marker but more than one repository is no
	// build identity.
	if repo, id := buildOf([]auth.Access{{Type: "repository", Name: "a/b"}, {Type: "repository", Name: "a/c"}, {Type: buildMarker, Name: "x"}}); repo != "" || id != "" {
		t.Fatalf("buildOf two repositories: %q %q", repo, id)
	}
}

// A repository admin who is not a site administrator cannot point the
// builder at an address the node's egress policy refuses (the builder
// fetches from inside the node).
func TestBuildSourceEgress(t *testing.T) {
	fb := newFakeBuilds()
	e := newAuthEnv(t, func(c *AuthConfig) { c.Builds = fb })
	e.withHub(HubConfig{Builds: fb,
		WebhookURLCheck: func(_ context.Context, u string) error {
			if strings.Contains(u, "169.254.169.254") || strings.Contains(u, "[::1]") {
				return fmt.Errorf("%w: refused by the egress policy", hubmesh.ErrDenied)
			}
			return nil
		}})
	e.addUser("alice", false)
	e.addRepo("alice/api", false)
	alice := basic("alice", testPassword)
	rules := []map[string]any{{"source_type": "branch", "source_name": "main", "tag": "latest"}}
	for _, u := range []string{"http://169.254.169.254/latest/meta-data.git", "http://[::1]:3000/x.git"} {
		r := e.json("PUT", "/api/v1/repositories/alice/api/build-settings", alice, map[string]any{"source": map[string]any{"url": u}, "rules": rules})
		e.expect(r, http.StatusForbidden, "DENIED")
	}
	if _, err := fb.BuildSettings(context.Background(), "alice/api"); err == nil {
		t.Fatal("refused settings were stored")
	}
	r := e.json("PUT", "/api/v1/repositories/alice/api/build-settings", alice, map[string]any{"source": map[string]any{"url": "https://git.example.com/alice/api.git"}, "rules": rules})
	e.expect(r, http.StatusOK, "")
}
