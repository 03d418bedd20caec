package build

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// sshKeyPair is an ed25519 key for the ssh tests: its public half and its
// private half as PEM, plain and encrypted with passphrase.
type sshKeyPair struct {
	pub        ssh.PublicKey
	pem        []byte
	encPEM     []byte
	passphrase string
}

func newSSHKeyPair(t *testing.T) sshKeyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "deploy")
	if err != nil {
		t.Fatal(err)
	}
	k := sshKeyPair{pub: sp, pem: pem.EncodeToMemory(blk), passphrase: "correct horse"}
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "deploy", []byte(k.passphrase))
	if err != nil {
		t.Fatal(err)
	}
	k.encPEM = pem.EncodeToMemory(enc)
	return k
}

// sshGitServer is an in-process ssh server that lets one deploy key run
// git-upload-pack on the repositories at or under root, as a git host does.
type sshGitServer struct {
	addr    string        // 127.0.0.1:port
	hostKey ssh.PublicKey // the server's host key
}

// uploadPackBin finds git-upload-pack. Without it the test is skipped,
// loudly, except under CI, where it fails.
func uploadPackBin(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("git-upload-pack")
	if err != nil {
		bin = "/usr/bin/git-upload-pack"
		if _, err = os.Stat(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("git-upload-pack not found (%v): the ssh tests need it under CI", err)
			}
			t.Skipf("SKIPPED, NOT TESTED: git-upload-pack not found (%v): the fetch over ssh did not run", err)
		}
	}
	return bin
}

func newSSHGitServer(t *testing.T, root string, deployKey ssh.PublicKey) sshGitServer {
	t.Helper()
	bin := uploadPackBin(t)
	hostPEM, hostPub := testKey(t)
	signer, err := ssh.ParsePrivateKey(hostPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if key.Type() == deployKey.Type() && string(key.Marshal()) == string(deployKey.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(signer)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ssh server goroutines still running 10s after the test")
		}
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serveSSHConn(ctx, &wg, c, cfg, root, bin)
			})
		}
	})
	return sshGitServer{addr: ln.Addr().String(), hostKey: hostPub}
}

func serveSSHConn(ctx context.Context, wg *sync.WaitGroup, c net.Conn, cfg *ssh.ServerConfig, root, bin string) {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return
	}
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return // handshake or auth refused
	}
	defer sc.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return
	}
	wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { serveSSHSession(ctx, wg, ch, creqs, root, bin) })
	}
}

// serveSSHSession answers the requests of one session: env and the like
// are refused, and the first exec runs git-upload-pack if it names a
// repository under root.
func serveSSHSession(ctx context.Context, wg *sync.WaitGroup, ch ssh.Channel, reqs <-chan *ssh.Request, root, bin string) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil)
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			continue
		}
		req.Reply(true, nil)
		status := runUploadPack(ctx, wg, ch, p.Command, root, bin)
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		wg.Go(func() { ssh.DiscardRequests(reqs) })
		return
	}
}

func runUploadPack(ctx context.Context, wg *sync.WaitGroup, ch ssh.Channel, command, root, bin string) uint32 {
	arg, ok := strings.CutPrefix(command, "git-upload-pack ")
	if !ok {
		fmt.Fprintf(ch.Stderr(), "fatal: command %q not allowed\n", command)
		return 1
	}
	path, err := shellUnquote(arg)
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	}
	rel, err := filepath.Rel(root, path)
	if !filepath.IsAbs(path) || err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		fmt.Fprintf(ch.Stderr(), "fatal: '%s' does not appear to be a git repository\n", path)
		return 128
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, path)
	cmd.Dir = root
	cmd.Stdout = ch
	cmd.Stderr = ch.Stderr()
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 1
	}
	// As sshd does: feed the client's data to the command until either
	// ends; Wait closes stdin when the command exits.
	wg.Go(func() {
		io.Copy(stdin, ch)
		stdin.Close()
	})
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return uint32(ee.ExitCode())
	}
	fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
	return 1
}

// shellUnquote undoes git's sq_quote: 'a'\”b'\!'c' is a'b!c.
func shellUnquote(s string) (string, error) {
	var b strings.Builder
	for {
		if !strings.HasPrefix(s, "'") {
			return "", fmt.Errorf("argument %q is not single-quoted", s)
		}
		body, rest, ok := strings.Cut(s[1:], "'")
		if !ok {
			return "", fmt.Errorf("argument %q has no closing quote", s)
		}
		b.WriteString(body)
		if rest == "" {
			return b.String(), nil
		}
		if len(rest) < 3 || rest[0] != '\\' || (rest[1] != '\'' && rest[1] != '!') {
			return "", fmt.Errorf("argument %q is not quoted as git quotes it", s)
		}
		b.WriteByte(rest[1])
		s = rest[2:]
	}
}

func TestShellUnquoteSSH(t *testing.T) {
	for in, want := range map[string]string{
		`'/srv/git/a.git'`: "/srv/git/a.git",
		`'/a'\''b'\!'c'`:   "/a'b!c",
		`''`:               "",
		`'/a'\''b'`:        "/a'b",
	} {
		if got, err := shellUnquote(in); err != nil || got != want {
			t.Errorf("shellUnquote(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`/a`, `'/a`, `'/a' '/b'`, `'/a'\x'b'`, `'/a'; rm -rf /`} {
		if got, err := shellUnquote(in); err == nil {
			t.Errorf("shellUnquote(%s) = %q, want an error", in, got)
		}
	}
}

func TestCheckoutSSH(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	outside := newTestRepo(t) // a sibling of r, which the server must not serve
	root := r.dir
	deploy := newSSHKeyPair(t)
	other := newSSHKeyPair(t)
	srv := newSSHGitServer(t, root, deploy.pub)
	_, otherHost := testKey(t)
	url := "ssh://git@" + srv.addr + r.dir
	good := Source{URL: url, SSHKey: deploy.pem, HostKeyFingerprint: ssh.FingerprintSHA256(srv.hostKey)}
	main := Ref{Type: SourceBranch, Name: "main"}

	tests := []struct {
		name       string
		src        func(Source) Source
		ref        Ref
		wantCommit string
		wantDocker string
		wantErr    error
	}{
		{name: "branch tip", src: func(s Source) Source { return s }, ref: main, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "annotated tag", src: func(s Source) Source { return s }, ref: Ref{Type: SourceTag, Name: "v1.0"}, wantCommit: r.c1, wantDocker: "# v1"},
		{name: "fingerprint without prefix", src: func(s Source) Source {
			s.HostKeyFingerprint = strings.TrimPrefix(s.HostKeyFingerprint, "SHA256:")
			return s
		}, ref: main, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "insecure host key", src: func(s Source) Source {
			s.HostKeyFingerprint, s.InsecureIgnoreHostKey = "", true
			return s
		}, ref: main, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "encrypted deploy key", src: func(s Source) Source {
			s.SSHKey, s.SSHKeyPassphrase = deploy.encPEM, deploy.passphrase
			return s
		}, ref: main, wantCommit: r.c2, wantDocker: "# v2"},
		{name: "wrong passphrase", src: func(s Source) Source {
			s.SSHKey, s.SSHKeyPassphrase = deploy.encPEM, "wrong"
			return s
		}, ref: main, wantErr: hubmesh.ErrInvalid},
		{name: "wrong host key", src: func(s Source) Source {
			s.HostKeyFingerprint = ssh.FingerprintSHA256(otherHost)
			return s
		}, ref: main, wantErr: hubmesh.ErrDenied},
		{name: "unauthorized key", src: func(s Source) Source {
			s.SSHKey = other.pem
			return s
		}, ref: main, wantErr: hubmesh.ErrDenied},
		{name: "missing branch", src: func(s Source) Source { return s }, ref: Ref{Type: SourceBranch, Name: "nope"}, wantErr: hubmesh.ErrNotFound},
		{name: "missing repository", src: func(s Source) Source {
			s.URL = "ssh://git@" + srv.addr + filepath.Join(root, "nope")
			return s
		}, ref: main, wantErr: hubmesh.ErrNotFound},
		{name: "repository outside the server's root", src: func(s Source) Source {
			s.URL = "ssh://git@" + srv.addr + outside.dir
			return s
		}, ref: main, wantErr: hubmesh.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			dir := t.TempDir()
			got, err := Checkout(ctx, tc.src(good), tc.ref, dir)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Checkout = %q, %v; want %v", got, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), deploy.passphrase) {
					t.Fatalf("error leaks the key: %v", err)
				}
				return
			}
			if err != nil || got != tc.wantCommit {
				t.Fatalf("Checkout = %q, %v; want %s", got, err, tc.wantCommit)
			}
			if df := readFile(t, filepath.Join(dir, "Dockerfile")); !strings.Contains(df, tc.wantDocker) {
				t.Fatalf("Dockerfile = %q, want %q", df, tc.wantDocker)
			}
			if _, err := os.Stat(filepath.Join(dir, ".git", "shallow")); err != nil {
				t.Fatalf("checkout over ssh is not shallow: %v", err)
			}
		})
	}
}

// TestCheckoutSSHSilentServer: a host that accepts the TCP connection and
// never speaks ssh must not hold Checkout past its context.
func TestCheckoutSSHSilentServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	done := make(chan error, 1)
	t.Cleanup(func() {
		// Hanging up ends a Checkout stuck in the handshake.
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Checkout still running 10s after the server hung up")
		}
	})
	key := newSSHKeyPair(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	src := Source{URL: "ssh://git@" + ln.Addr().String() + "/x", SSHKey: key.pem, InsecureIgnoreHostKey: true}
	dir := t.TempDir()
	go func() {
		_, err := Checkout(ctx, src, Ref{Type: SourceBranch, Name: "main"}, dir)
		done <- err
	}()
	select {
	case err := <-done:
		done <- err // for the cleanup
		if !errors.Is(err, hubmesh.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Checkout against a silent server = %v, want ErrUnavailable and DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Checkout ignored its 2s context against an ssh server that never answers")
	}
}

// TestSSHGitServerRefuses checks the test server itself: it runs nothing
// but git-upload-pack on a quoted path.
func TestSSHGitServerRefuses(t *testing.T) {
	t.Parallel()
	r := newTestRepo(t)
	deploy := newSSHKeyPair(t)
	srv := newSSHGitServer(t, r.dir, deploy.pub)
	signer, err := ssh.ParsePrivateKey(deploy.pem)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", srv.addr, &ssh.ClientConfig{
		User: "git", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(srv.hostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cmd := range []string{
		"git-receive-pack '" + r.dir + "'",
		"git-upload-pack " + r.dir,
		"git-upload-pack '" + r.dir + "'; id",
		"sh -c id",
	} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var ee *ssh.ExitError
		if out, err := s.CombinedOutput(cmd); !errors.As(err, &ee) || ee.ExitStatus() != 1 || !strings.Contains(string(out), "fatal:") {
			t.Errorf("%s: %v, output %q; want exit status 1 and a fatal message", cmd, err, out)
		}
	}
}
