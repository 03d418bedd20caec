package build

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"

	"github.com/hubmesh/hubmesh"
)

// testRepo is a git repository made in the test: on branch main, commit
// c1 (Dockerfile v1, tagged v1.0 annotated and light lightweight) then c2
// (Dockerfile v2, a sub/ directory and an executable script).
type testRepo struct {
	dir    string
	c1, c2 string
	tagObj string // hash of the annotated tag object v1.0
}

func newTestRepo(t *testing.T) testRepo {
	t.Helper()
	dir := t.TempDir()
	repo, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "t", Email: "t@example.com", When: time.Unix(1700000000, 0)}
	commit := func(files map[string]string) plumbing.Hash {
		for name, content := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			mode := os.FileMode(0o644)
			if strings.HasSuffix(name, ".sh") {
				mode = 0o755
			}
			if err := os.WriteFile(p, []byte(content), mode); err != nil {
				t.Fatal(err)
			}
			if _, err := wt.Add(name); err != nil {
				t.Fatal(err)
			}
		}
		h, err := wt.Commit("c", &git.CommitOptions{Author: sig})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	r := testRepo{dir: dir}
	c1 := commit(map[string]string{"Dockerfile": "FROM scratch\n# v1\n"})
	tag, err := repo.CreateTag("v1.0", c1, &git.CreateTagOptions{Tagger: sig, Message: "v1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateTag("light", c1, nil); err != nil {
		t.Fatal(err)
	}
	c2 := commit(map[string]string{"Dockerfile": "FROM scratch\n# v2\n", "sub/run.sh": "#!/bin/sh\n"})
	r.c1, r.c2, r.tagObj = c1.String(), c2.String(), tag.Hash().String()
	return r
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckoutLocal(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	tests := []struct {
		name       string
		url        string
		ref        Ref
		wantCommit string
		wantDocker string
		wantErr    error
		errText    string
	}{
		{name: "branch tip, plain path", url: r.dir, ref: Ref{Type: SourceBranch, Name: "main"}, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "branch tip, file url", url: "file://" + r.dir, ref: Ref{Type: SourceBranch, Name: "main"}, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "pushed commit after the branch moved", url: r.dir, ref: Ref{Type: SourceBranch, Name: "main", Commit: r.c1}, wantCommit: r.c1, wantDocker: "# v1"},
		{name: "annotated tag", url: r.dir, ref: Ref{Type: SourceTag, Name: "v1.0"}, wantCommit: r.c1, wantDocker: "# v1"},
		{name: "annotated tag by tag object", url: r.dir, ref: Ref{Type: SourceTag, Name: "v1.0", Commit: r.tagObj}, wantCommit: r.c1, wantDocker: "# v1"},
		{name: "lightweight tag", url: r.dir, ref: Ref{Type: SourceTag, Name: "light"}, wantCommit: r.c1, wantDocker: "# v1"},
		{name: "missing branch", url: r.dir, ref: Ref{Type: SourceBranch, Name: "nope"}, wantErr: hubmesh.ErrNotFound, errText: `branch "nope" not found`},
		{name: "missing commit", url: r.dir, ref: Ref{Type: SourceBranch, Name: "main", Commit: sha1a}, wantErr: hubmesh.ErrNotFound},
		{name: "not a repository", url: t.TempDir(), ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrNotFound, errText: "no git repository"},
		{name: "short commit", url: r.dir, ref: Ref{Type: SourceBranch, Name: "main", Commit: "abc"}, wantErr: hubmesh.ErrInvalid},
		{name: "bad ref name", url: r.dir, ref: Ref{Type: SourceBranch, Name: "a..b"}, wantErr: hubmesh.ErrInvalid},
		{name: "relative path", url: "repo", ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "src")
			got, err := Checkout(t.Context(), Source{URL: tc.url}, tc.ref, dir)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Checkout = %q, %v; want %v containing %q", got, err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil || got != tc.wantCommit {
				t.Fatalf("Checkout = %q, %v; want %s", got, err, tc.wantCommit)
			}
			if df := readFile(t, filepath.Join(dir, "Dockerfile")); !strings.Contains(df, tc.wantDocker) {
				t.Fatalf("Dockerfile = %q, want %q", df, tc.wantDocker)
			}
			if tc.wantCommit == r.c2 {
				fi, err := os.Stat(filepath.Join(dir, "sub/run.sh"))
				if err != nil || fi.Mode()&0o100 == 0 {
					t.Fatalf("sub/run.sh: %v, mode %v; want an executable file", err, fi)
				}
			}
			repo, err := git.PlainOpen(dir)
			if err != nil {
				t.Fatal(err)
			}
			head, err := repo.Head()
			if err != nil || head.Hash().String() != tc.wantCommit {
				t.Fatalf("HEAD = %v, %v", head, err)
			}
		})
	}
}

func TestCheckoutDirNotEmpty(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Checkout(t.Context(), Source{URL: r.dir}, Ref{Type: SourceBranch, Name: "main"}, dir)
	if !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Checkout into a non-empty dir: %v", err)
	}
}

// gitHTTPServer serves the repositories under root with git http-backend
// (smart HTTP), behind basic auth when user is set.
func gitHTTPServer(t *testing.T, root, user, pass string) *httptest.Server {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("SKIPPED, NOT TESTED: git not on PATH: the fetch over HTTP did not run")
	}
	h := &cgi.Handler{
		Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func setConfig(t *testing.T, dir, section, key, value string) {
	t.Helper()
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := repo.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Raw.Section(section).SetOption(key, value)
	if err := repo.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
}

func TestCheckoutHTTP(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	root := filepath.Dir(r.dir)
	name := filepath.Base(r.dir)
	// A second repository that refuses wants by object name, so a moved
	// branch makes Checkout fall back to the full history.
	r2 := newTestRepo(t)
	setConfig(t, r.dir, "uploadpack", "allowReachableSHA1InWant", "true")
	srv := gitHTTPServer(t, root, "builder", "tok")
	srv2 := gitHTTPServer(t, filepath.Dir(r2.dir), "", "")
	auth := Source{URL: srv.URL + "/" + name, Username: "builder", Password: "tok"}

	tests := []struct {
		name       string
		src        Source
		ref        Ref
		wantCommit string
		wantErr    error
		shallow    bool
	}{
		{name: "branch tip, shallow", src: auth, ref: Ref{Type: SourceBranch, Name: "main"}, wantCommit: r.c2, shallow: true},
		{name: "tip equals pushed commit", src: auth, ref: Ref{Type: SourceBranch, Name: "main", Commit: r.c2}, wantCommit: r.c2, shallow: true},
		{name: "annotated tag", src: auth, ref: Ref{Type: SourceTag, Name: "v1.0", Commit: r.tagObj}, wantCommit: r.c1, shallow: true},
		{name: "moved branch, commit fetched by name", src: auth, ref: Ref{Type: SourceBranch, Name: "main", Commit: r.c1}, wantCommit: r.c1, shallow: true},
		{name: "moved branch, full history", src: Source{URL: srv2.URL + "/" + filepath.Base(r2.dir)},
			ref: Ref{Type: SourceBranch, Name: "main", Commit: r2.c1}, wantCommit: r2.c1},
		{name: "unknown commit", src: Source{URL: srv2.URL + "/" + filepath.Base(r2.dir)},
			ref: Ref{Type: SourceBranch, Name: "main", Commit: sha1a}, wantErr: hubmesh.ErrNotFound},
		{name: "wrong password", src: Source{URL: auth.URL, Username: "builder", Password: "bad"}, ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrDenied},
		{name: "no credentials", src: Source{URL: auth.URL}, ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrDenied},
		{name: "missing branch", src: auth, ref: Ref{Type: SourceBranch, Name: "nope"}, wantErr: hubmesh.ErrNotFound},
		{name: "missing repository", src: Source{URL: srv2.URL + "/nope"}, ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrNotFound},
		{name: "unreachable host", src: Source{URL: "http://127.0.0.1:1/x.git"}, ref: Ref{Type: SourceBranch, Name: "main"}, wantErr: hubmesh.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			got, err := Checkout(t.Context(), tc.src, tc.ref, dir)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Checkout = %q, %v; want %v", got, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "tok") || strings.Contains(err.Error(), "bad") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil || got != tc.wantCommit {
				t.Fatalf("Checkout = %q, %v; want %s", got, err, tc.wantCommit)
			}
			if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
				t.Fatal(err)
			}
			_, err = os.Stat(filepath.Join(dir, ".git", "shallow"))
			if tc.shallow != (err == nil) {
				t.Fatalf("shallow file: %v, want shallow=%v", err, tc.shallow)
			}
		})
	}
}

func TestCheckoutCancelled(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	srv := gitHTTPServer(t, filepath.Dir(r.dir), "", "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Checkout(ctx, Source{URL: srv.URL + "/" + filepath.Base(r.dir)}, Ref{Type: SourceBranch, Name: "main"}, t.TempDir())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Checkout with a cancelled context: %v", err)
	}
}

func testKey(t *testing.T) ([]byte, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(blk), sp
}

func TestSourceValidate(t *testing.T) {
	t.Parallel()
	key, hostKey := testKey(t)
	fp := ssh.FingerprintSHA256(hostKey)
	tests := []struct {
		name    string
		src     Source
		errText string
	}{
		{name: "https", src: Source{URL: "https://git.example/acme/api.git"}},
		{name: "https with token", src: Source{URL: "https://git.example/acme/api.git", Password: "tok"}},
		{name: "file", src: Source{URL: "file:///srv/git/api"}},
		{name: "path", src: Source{URL: "/srv/git/api"}},
		{name: "ssh fingerprint", src: Source{URL: "ssh://git@git.example:2222/acme/api.git", SSHKey: key, HostKeyFingerprint: fp}},
		{name: "scp-like insecure", src: Source{URL: "git@git.example:acme/api.git", SSHKey: key, InsecureIgnoreHostKey: true}},
		{name: "empty", src: Source{}, errText: "empty URL"},
		{name: "ftp", src: Source{URL: "ftp://x/y"}, errText: "want https://"},
		{name: "credentials in url", src: Source{URL: "https://u:p@git.example/x.git"}, errText: "not in the URL"},
		{name: "file with host", src: Source{URL: "file://other/x"}, errText: "file:///absolute/path"},
		{name: "ssh without key", src: Source{URL: "ssh://git@h/x.git", HostKeyFingerprint: fp}, errText: "needs a deploy key"},
		{name: "ssh without host key policy", src: Source{URL: "ssh://git@h/x.git", SSHKey: key}, errText: "host key fingerprint"},
		{name: "ssh both policies", src: Source{URL: "ssh://git@h/x.git", SSHKey: key, HostKeyFingerprint: fp, InsecureIgnoreHostKey: true}, errText: "not both"},
		{name: "ssh bad key", src: Source{URL: "ssh://git@h/x.git", SSHKey: []byte("nope"), InsecureIgnoreHostKey: true}, errText: "deploy key"},
		{name: "key with https", src: Source{URL: "https://h/x.git", SSHKey: key}, errText: "needs an ssh URL"},
	}
	for _, tc := range tests {
		err := tc.src.Validate()
		if tc.errText == "" {
			if err != nil {
				t.Errorf("%s: Validate: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, hubmesh.ErrInvalid) || !strings.Contains(err.Error(), tc.errText) {
			t.Errorf("%s: Validate = %v, want ErrInvalid containing %q", tc.name, err, tc.errText)
		}
	}
}

func TestHostKeyCallback(t *testing.T) {
	t.Parallel()
	_, good := testKey(t)
	_, other := testKey(t)
	for _, fp := range []string{ssh.FingerprintSHA256(good), strings.TrimPrefix(ssh.FingerprintSHA256(good), "SHA256:")} {
		cb, err := hostKeyCallback(fp, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := cb("h:22", nil, good); err != nil {
			t.Errorf("expected key refused: %v", err)
		}
		if err := cb("h:22", nil, other); !errors.Is(err, hubmesh.ErrDenied) {
			t.Errorf("other key: %v, want ErrDenied", err)
		}
	}
	cb, err := hostKeyCallback("", true)
	if err != nil || cb("h:22", nil, other) != nil {
		t.Errorf("insecure callback refused a key: %v", err)
	}
}

func TestSourceHost(t *testing.T) {
	for url, want := range map[string]string{
		"https://git.example/acme/api.git":  "git.example",
		"http://10.0.0.1:3000/acme/api.git": "10.0.0.1",
		"ssh://git@[::1]:2222/acme/api.git": "::1",
		"git@github.com:acme/api.git":       "github.com",
		"/srv/git/api":                      "",
		"file:///srv/git/api":               "",
		"ftp://nope":                        "",
	} {
		if got := (Source{URL: url}).Host(); got != want {
			t.Errorf("Host(%q) = %q, want %q", url, got, want)
		}
	}
}

func TestRefusalBodyCapped(t *testing.T) {
	big := strings.Repeat("x", 10*maxRefusalBody)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, big)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Checkout(ctx, Source{URL: srv.URL + "/acme/api.git"}, Ref{Type: SourceBranch, Name: "main"}, t.TempDir())
	if err == nil {
		t.Fatal("checkout from a server answering 404 succeeded")
	}
	if n := len(err.Error()); n > 2*maxRefusalBody {
		t.Fatalf("error is %d bytes long: the 404 body was not capped", n)
	}
}
