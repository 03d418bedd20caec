package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// TestDockerLogin drives the machine's docker CLI and daemon through the
// account features of a node: docker login with a password, push, pull
// back, logout (a public pull still works, a private one does not), login
// with an access token as the password, a read-only token that cannot
// push, and a push to someone else's namespace that fails. The docker
// configuration lives in a temporary DOCKER_CONFIG, never the user's.
func TestDockerLogin(t *testing.T) {
	docker := nodetest.RequireDocker(t)
	p := nodetest.Start(t, nodetest.Options{})
	adminUser, adminPassword := p.Admin()
	admin := newAPIClient(p.URL(), adminUser, adminPassword)
	alicePassword := "pw-" + sha256Hex(randomBytes(t, 16))[:24]
	admin.createUser(t, "alice", alicePassword)
	admin.createUser(t, "bob", "pw-"+sha256Hex(randomBytes(t, 16))[:24])
	alice := newAPIClient(p.URL(), "alice", alicePassword)
	adminReg := newClientAuth(p.URL(), adminUser, adminPassword, modeBasic).registry()

	host := p.Addr()
	cfgDir := t.TempDir()
	env := append(os.Environ(), "DOCKER_CONFIG="+cfgDir, "DOCKER_BUILDKIT=0")
	dockerRun := func(stdin string, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), dockerTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, docker, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		cmd.WaitDelay = 5 * time.Second
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return strings.TrimSpace(o.String()), strings.TrimSpace(e.String()), err
	}
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := dockerRun("", args...)
		if err != nil {
			t.Fatalf("docker %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	// fails runs a docker command that must fail, with one of want in its
	// output (else the test goes on, marked failed), and returns the output.
	fails := func(stdin string, want []string, args ...string) string {
		t.Helper()
		out, errOut, err := dockerRun(stdin, args...)
		all := out + "\n" + errOut
		if err == nil {
			t.Fatalf("docker %s succeeded, want a failure: %s", strings.Join(args, " "), all)
		}
		lower := strings.ToLower(all)
		for _, w := range want {
			if strings.Contains(lower, w) {
				return all
			}
		}
		t.Errorf("docker %s failed without saying any of %q: %s", strings.Join(args, " "), want, all)
		return all
	}
	login := func(user, secret string) {
		t.Helper()
		out, errOut, err := dockerRun(secret, "login", host, "--username", user, "--password-stdin")
		if err != nil || !strings.Contains(out, "Login Succeeded") {
			t.Fatalf("docker login %s as %s: %v\nstdout: %s\nstderr: %s", host, user, err, out, errOut)
		}
	}
	var refs []string
	t.Cleanup(func() {
		// The test context is done by now; use a fresh deadline.
		for _, ref := range refs {
			_, _, _ = runCommandCtx(context.Background(), dockerTimeout, "", env, docker, "image", "rm", "--force", ref)
		}
	})
	tag := func(src, dst string) {
		t.Helper()
		run("tag", src, dst)
		refs = append(refs, dst)
	}

	// A wrong password is refused, and stores nothing.
	fails("not-"+alicePassword, []string{"unauthorized", "incorrect", "401", "denied"},
		"login", host, "--username", "alice", "--password-stdin")
	if auths := dockerAuths(t, cfgDir); auths[host] {
		t.Fatalf("a failed docker login stored credentials for %s", host)
	}

	// Login with the password, build, push: the push creates alice/app,
	// public by default.
	login("alice", alicePassword)
	if !dockerAuths(t, cfgDir)[host] {
		t.Fatalf("docker login stored no credentials for %s in %s", host, cfgDir)
	}
	ctxDir := t.TempDir()
	marker := "hubmesh login " + sha256Hex(randomBytes(t, 32)) + "\n"
	for name, content := range map[string]string{
		"hello.txt":  marker,
		"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
	} {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ref := host + "/alice/app:1.0"
	run("build", "--quiet", "-t", ref, ctxDir)
	refs = append(refs, ref)
	builtID := run("image", "inspect", "--format", "{{.Id}}", ref)
	run("push", ref)
	pushed := repoDigest(t, run("image", "inspect", "--format", "{{json .RepoDigests}}", ref), host+"/alice/app")
	var repo struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		IsPrivate bool   `json:"is_private"`
	}
	alice.must(t, http.MethodGet, "/api/v1/repositories/alice/app", nil, &repo, http.StatusOK)
	if repo.IsPrivate {
		t.Fatalf("alice/app created by a push is private (%+v); the default is public", repo)
	}

	// Pull back what was pushed.
	pullAndCompare := func(what string) {
		t.Helper()
		_, _, _ = dockerRun("", "image", "rm", ref) // absent after a refused pull
		run("pull", ref)
		if got := run("image", "inspect", "--format", "{{.Id}}", ref); got != builtID {
			t.Fatalf("%s: pulled image ID %s, want the built %s", what, got, builtID)
		}
		if got := repoDigest(t, run("image", "inspect", "--format", "{{json .RepoDigests}}", ref), host+"/alice/app"); got != pushed {
			t.Fatalf("%s: pulled digest %s, want the pushed %s", what, got, pushed)
		}
	}
	pullAndCompare("pull as alice")

	// Logout forgets the credentials; the public repository still pulls
	// anonymously.
	run("logout", host)
	if dockerAuths(t, cfgDir)[host] {
		t.Fatalf("docker logout left credentials for %s in %s", host, cfgDir)
	}
	pullAndCompare("anonymous pull of a public repository")

	// Private now: an anonymous pull fails.
	alice.must(t, http.MethodPatch, "/api/v1/repositories/alice/app", map[string]any{"is_private": true}, nil, http.StatusOK)
	run("image", "rm", ref)
	// Docker Hub's answer is a 401, which docker prints as "pull access
	// denied ... may require 'docker login'"; a 404 would print "manifest
	// unknown" and send users looking for a typo.
	out := fails("", []string{"pull access denied", "unauthorized", "authentication required", "docker login"}, "pull", ref)
	t.Logf("anonymous pull of the private alice/app: %s", strings.TrimSpace(out))

	// An access token with scope write is a password: pull the private
	// repository, push a new one.
	writeToken := alice.createAccessToken(t, "docker-login-test", "write")
	login("alice", writeToken)
	pullAndCompare("pull of a private repository with a write access token")
	ref2 := host + "/alice/app2:1.0"
	tag(ref, ref2)
	run("push", ref2)
	r, err := adminReg.do(t.Context(), http.MethodGet, "/v2/alice/app2/manifests/1.0",
		http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || r.Header.Get("Docker-Content-Digest") != pushed {
		t.Fatalf("alice/app2:1.0 pushed with an access token: admin sees %d %q, want 200 %s", r.Status, r.Header.Get("Docker-Content-Digest"), pushed)
	}

	// A push to someone else's namespace fails with "denied", and creates
	// nothing there.
	refBob := host + "/bob/app:1.0"
	tag(ref, refBob)
	began := time.Now()
	out = fails("", []string{"denied"}, "push", refBob)
	t.Logf("push to bob/app as alice, refused in %s: %s", time.Since(began).Round(time.Millisecond), lastLine(out))
	requirePrompt(t, "docker push to bob/app as alice", time.Since(began))
	requireNoRepo(t, adminReg, "bob/app")

	// A read-only token pulls but does not push.
	readToken := alice.createAccessToken(t, "docker-login-read", "read")
	login("alice", readToken)
	pullAndCompare("pull with a read access token")
	ref3 := host + "/alice/app3:1.0"
	tag(ref, ref3)
	began = time.Now()
	out = fails("", []string{"denied", "unauthorized", "insufficient"}, "push", ref3)
	t.Logf("push with a read access token, refused in %s: %s", time.Since(began).Round(time.Millisecond), lastLine(out))
	requirePrompt(t, "docker push with a read access token", time.Since(began))
	requireNoRepo(t, adminReg, "alice/app3")

	run("logout", host)
	t.Logf("docker login: password and access tokens, push %s, pull, logout, private pull refused, foreign push refused", pushed)
}

// promptRefusal bounds how long docker may take to report a refused
// push. Docker retries an upload five times with growing pauses (over a
// minute in all) unless the refusal is one it knows to be final: a 401
// whose challenge says error="insufficient_scope" (what distribution and
// Docker Hub answer; docker 20.10 prints it as "denied: requested access to
// the resource is denied" at once) — a 403 DENIED is retried.
const promptRefusal = 20 * time.Second

func requirePrompt(t *testing.T, what string, took time.Duration) {
	t.Helper()
	if took > promptRefusal {
		t.Errorf("%s took %s to fail, want under %s: docker retried the upload, so the registry's refusal is not one docker treats as final (answer 401 with error=\"insufficient_scope\" to a token that lacks push, as distribution does)",
			what, took.Round(time.Second), promptRefusal)
	}
}

// dockerAuths reports the registries that config.json in dir holds
// credentials for (an auth, an identity token, or a credential helper).
func dockerAuths(t *testing.T, dir string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
		CredHelpers map[string]string `json:"credHelpers"`
		CredsStore  string            `json:"credsStore"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("docker config %s: %v", b, err)
	}
	out := map[string]bool{}
	for host, a := range cfg.Auths {
		if a.Auth != "" || a.IdentityToken != "" || cfg.CredsStore != "" {
			out[host] = true
		}
	}
	for host := range cfg.CredHelpers {
		out[host] = true
	}
	return out
}

// repoDigest picks the digest of name out of docker's RepoDigests JSON.
func repoDigest(t *testing.T, repoDigests, name string) string {
	t.Helper()
	var list []string
	if err := json.Unmarshal([]byte(repoDigests), &list); err != nil {
		t.Fatalf("RepoDigests %q: %v", repoDigests, err)
	}
	for _, rd := range list {
		if n, d, ok := strings.Cut(rd, "@"); ok && n == name {
			return d
		}
	}
	t.Fatalf("no RepoDigest for %s in %q", name, list)
	return ""
}

// requireNoRepo asserts that the admin sees no repository repo.
func requireNoRepo(t *testing.T, admin *registry, repo string) {
	t.Helper()
	r, err := admin.do(t.Context(), http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusNotFound {
		t.Fatalf("GET /v2/%s/tags/list as admin after a refused push: %s, want 404", repo, r)
	}
}
