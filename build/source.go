package build

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"

	"github.com/hubmesh/hubmesh"
)

// Source is where a repository's builds come from, with its credentials.
//
// URL forms:
//   - https://host/path.git (http:// too, for hosts on a trusted network),
//     with optional Username/Password (a token goes in Password);
//   - ssh://user@host[:port]/path.git or user@host:path.git, with a deploy
//     key (SSHKey, PEM) and a host key policy: HostKeyFingerprint, or
//     InsecureIgnoreHostKey set explicitly;
//   - file:///abs/path or /abs/path: a repository on the builder's disk,
//     read in-process (no git binary needed); meant for tests.
type Source struct {
	URL      string `json:"url"`
	Username string `json:"username,omitempty"`
	Password string `json:"-"`
	// SSHKey is a PEM private key (a deploy key); SSHKeyPassphrase opens
	// an encrypted one.
	SSHKey           []byte `json:"-"`
	SSHKeyPassphrase string `json:"-"`
	// HostKeyFingerprint is the SHA256 fingerprint of the ssh server's host
	// key as `ssh-keygen -lf` prints it, "SHA256:...".
	HostKeyFingerprint string `json:"host_key_fingerprint,omitempty"`
	// InsecureIgnoreHostKey accepts any ssh host key. Only for tests and
	// trusted networks: it must be set explicitly.
	InsecureIgnoreHostKey bool `json:"insecure_ignore_host_key,omitempty"`
}

type sourceKind int

const (
	kindLocal sourceKind = iota + 1
	kindHTTP
	kindSSH
)

// kind classifies the URL; for local sources it also returns the path.
func (s Source) kind() (sourceKind, string, error) {
	u := strings.TrimSpace(s.URL)
	switch {
	case u == "":
		return 0, "", fmt.Errorf("source: empty URL: %w", hubmesh.ErrInvalid)
	case strings.HasPrefix(u, "file://"):
		pu, err := url.Parse(u)
		if err != nil || pu.Path == "" || (pu.Host != "" && pu.Host != "localhost") {
			return 0, "", fmt.Errorf("source: %q: want file:///absolute/path: %w", u, hubmesh.ErrInvalid)
		}
		return kindLocal, pu.Path, nil
	case filepath.IsAbs(u):
		return kindLocal, u, nil
	case strings.HasPrefix(u, "https://"), strings.HasPrefix(u, "http://"):
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			return 0, "", fmt.Errorf("source: %q is not a valid URL: %w", u, hubmesh.ErrInvalid)
		}
		if pu.User != nil {
			return 0, "", fmt.Errorf("source: %q: put credentials in the username and password settings, not in the URL: %w", pu.Redacted(), hubmesh.ErrInvalid)
		}
		return kindHTTP, "", nil
	case strings.HasPrefix(u, "ssh://"), !strings.Contains(u, "://") && strings.Contains(u, "@") && strings.Contains(u, ":"):
		if _, err := transport.NewEndpoint(u); err != nil {
			return 0, "", fmt.Errorf("source: %q is not a valid ssh URL: %v: %w", u, err, hubmesh.ErrInvalid)
		}
		return kindSSH, "", nil
	}
	return 0, "", fmt.Errorf("source: %q: want https://, ssh://, user@host:path, file:// or an absolute path: %w", u, hubmesh.ErrInvalid)
}

// Validate checks the URL and that the credentials fit it; errors wrap
// hubmesh.ErrInvalid.
func (s Source) Validate() error {
	k, _, err := s.kind()
	if err != nil {
		return err
	}
	if k == kindSSH {
		_, err := s.auth(k)
		return err
	}
	if len(s.SSHKey) > 0 {
		return fmt.Errorf("source: a deploy key needs an ssh URL: %w", hubmesh.ErrInvalid)
	}
	return nil
}

func (s Source) auth(k sourceKind) (transport.AuthMethod, error) {
	switch k {
	case kindHTTP:
		if s.Username == "" && s.Password == "" {
			return nil, nil
		}
		user := s.Username
		if user == "" {
			user = "x-access-token" // any non-empty name works with a token
		}
		return &githttp.BasicAuth{Username: user, Password: s.Password}, nil
	case kindSSH:
		if len(s.SSHKey) == 0 {
			return nil, fmt.Errorf("source: an ssh URL needs a deploy key: %w", hubmesh.ErrInvalid)
		}
		ep, err := transport.NewEndpoint(s.URL)
		if err != nil {
			return nil, fmt.Errorf("source: %w: %w", hubmesh.ErrInvalid, err)
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		pk, err := gitssh.NewPublicKeys(user, s.SSHKey, s.SSHKeyPassphrase)
		if err != nil {
			return nil, fmt.Errorf("source: deploy key: %v: %w", err, hubmesh.ErrInvalid)
		}
		cb, err := hostKeyCallback(s.HostKeyFingerprint, s.InsecureIgnoreHostKey)
		if err != nil {
			return nil, err
		}
		pk.HostKeyCallback = cb
		return pk, nil
	}
	return nil, nil
}

// hostKeyCallback accepts exactly the host key with the given SHA256
// fingerprint, or any key when insecure is set.
func hostKeyCallback(fingerprint string, insecure bool) (ssh.HostKeyCallback, error) {
	fingerprint = strings.TrimSpace(fingerprint)
	switch {
	case fingerprint != "" && insecure:
		return nil, fmt.Errorf("source: set either a host key fingerprint or insecure-ignore-host-key, not both: %w", hubmesh.ErrInvalid)
	case insecure:
		return ssh.InsecureIgnoreHostKey(), nil
	case fingerprint == "":
		return nil, fmt.Errorf("source: an ssh source needs the server's host key fingerprint (SHA256:..., from ssh-keygen -lf) or insecure-ignore-host-key: %w", hubmesh.ErrInvalid)
	}
	if !strings.HasPrefix(fingerprint, "SHA256:") {
		fingerprint = "SHA256:" + fingerprint
	}
	return func(host string, _ net.Addr, key ssh.PublicKey) error {
		got := ssh.FingerprintSHA256(key)
		if got != fingerprint {
			return fmt.Errorf("ssh host key of %s is %s, expected %s: %w", host, got, fingerprint, hubmesh.ErrDenied)
		}
		return nil
	}, nil
}

// Ref names what to check out: a branch or tag, and optionally the exact
// commit the push reported. With Commit empty the current tip is built.
type Ref struct {
	Type   SourceType
	Name   string
	Commit string // full hex object name; a commit, or an annotated tag object
}

// Checkout fetches ref from src into dir, which must be empty or absent,
// and checks out its commit (detached), returning the commit's hex name.
//
// Remote sources are fetched shallow (depth 1). When Commit is set and the
// ref has moved on, the commit is fetched by name if the server allows it,
// else the ref's full history is fetched and must contain it. dir holds a
// .git directory afterwards. Errors wrap hubmesh.ErrInvalid (bad settings,
// dir not empty), ErrNotFound (no such repository, ref or commit),
// ErrDenied (credentials or host key refused) or ErrUnavailable (network);
// the context bounds the whole operation.
func Checkout(ctx context.Context, src Source, ref Ref, dir string) (string, error) {
	k, localPath, err := src.kind()
	if err != nil {
		return "", err
	}
	if ref.Type != SourceBranch && ref.Type != SourceTag {
		return "", fmt.Errorf("checkout: source type %q: %w", ref.Type, hubmesh.ErrInvalid)
	}
	if err := checkRefName(ref.Name); err != nil {
		return "", fmt.Errorf("checkout: %w", err)
	}
	want := strings.ToLower(ref.Commit)
	if want != "" && !isObjectName(want) {
		return "", fmt.Errorf("checkout: commit %q is not a full hex object name: %w", ref.Commit, hubmesh.ErrInvalid)
	}
	if err := emptyDir(dir); err != nil {
		return "", err
	}
	if k == kindLocal {
		return checkoutLocal(ctx, localPath, ref, want, dir)
	}
	auth, err := src.auth(k)
	if err != nil {
		return "", err
	}
	dial, release := sshDialOptions(ctx, k)
	defer release()
	f := fetcher{url: src.URL, auth: auth, dial: dial}
	commit, err := f.fetch(ctx, ref, want, dir, 1)
	if errors.Is(err, errMoved) {
		// The ref moved on after the push: fetch the pushed commit itself,
		// or failing that the whole history of the ref.
		if rerr := resetDir(dir); rerr != nil {
			return "", rerr
		}
		commit, err = f.fetch(ctx, Ref{Type: ref.Type, Name: want}, want, dir, 1)
		if err != nil {
			if rerr := resetDir(dir); rerr != nil {
				return "", rerr
			}
			commit, err = f.fetch(ctx, ref, want, dir, 0)
		}
	}
	if err != nil {
		return "", err
	}
	return commit, nil
}

var errMoved = errors.New("ref moved")

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("checkout: directory %s is not empty: %w", dir, hubmesh.ErrInvalid)
	}
	return nil
}

func resetDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	return os.MkdirAll(dir, 0o755)
}

// fetch fetches one ref (or, when ref.Name is an object name, that
// object) with the given depth (0: full) and checks out want, or the tip
// when want is empty. When want is set and neither the tip nor its history
// holds it, it returns errMoved (depth > 0) or ErrNotFound.
// fetcher is where and how Checkout fetches: the URL, its credentials and
// the dial options of an ssh source (sshDialOptions).
type fetcher struct {
	url  string
	auth transport.AuthMethod
	dial transport.ProxyOptions
}

func (f fetcher) fetch(ctx context.Context, ref Ref, want, dir string, depth int) (string, error) {
	url := f.url
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		return "", fmt.Errorf("checkout: init %s: %w", dir, err)
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}})
	if err != nil {
		return "", fmt.Errorf("checkout: %w: %w", hubmesh.ErrInvalid, err)
	}
	byHash := isObjectName(ref.Name) && ref.Name == want
	var src plumbing.ReferenceName
	local := plumbing.ReferenceName("refs/hubmesh/build")
	switch {
	case byHash:
		src = plumbing.ReferenceName(want)
	case ref.Type == SourceTag:
		src = plumbing.NewTagReferenceName(ref.Name)
	default:
		src = plumbing.NewBranchReferenceName(ref.Name)
	}
	spec := config.RefSpec("+" + src.String() + ":" + local.String())
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{spec}, Depth: depth, Auth: f.auth, Tags: git.NoTags, ProxyOptions: f.dial,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", classify(ctx, fmt.Sprintf("fetch %s %s from %s", ref.Type, ref.Name, redact(url)), err)
	}
	tip, err := repo.Reference(local, true)
	if err != nil {
		return "", classify(ctx, "checkout", err)
	}
	commit, err := peel(repo, tip.Hash())
	if err != nil {
		return "", err
	}
	if want != "" && want != tip.Hash().String() && want != commit.String() {
		c, err := peel(repo, plumbing.NewHash(want))
		switch {
		case err == nil:
			commit = c
		case depth > 0:
			return "", errMoved
		default:
			return "", fmt.Errorf("checkout: commit %s is not in the history of %s %s: %w", want, ref.Type, ref.Name, hubmesh.ErrNotFound)
		}
	}
	return commit.String(), checkoutHash(repo, commit)
}

// peel returns the commit h names, following annotated tags.
func peel(repo *git.Repository, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		if t, err := repo.TagObject(h); err == nil {
			h = t.Target
			continue
		}
		c, err := repo.CommitObject(h)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("checkout: %s is not a commit: %w: %w", h, hubmesh.ErrNotFound, err)
		}
		return c.Hash, nil
	}
	return plumbing.ZeroHash, fmt.Errorf("checkout: tag chain too long at %s: %w", h, hubmesh.ErrInvalid)
}

func checkoutHash(repo *git.Repository, commit plumbing.Hash) error {
	wt, err := repo.Worktree()
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: commit, Force: true}); err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	return nil
}

// checkoutLocal reads a repository on disk in-process: it copies the one
// commit and its tree into a new shallow repository in dir and checks it
// out, so no git binary and no transport is involved.
func checkoutLocal(ctx context.Context, path string, ref Ref, want, dir string) (string, error) {
	src, err := git.PlainOpen(path)
	if err != nil {
		if errors.Is(err, git.ErrRepositoryNotExists) {
			return "", fmt.Errorf("checkout: no git repository at %s: %w", path, hubmesh.ErrNotFound)
		}
		return "", fmt.Errorf("checkout: open %s: %w: %w", path, hubmesh.ErrInvalid, err)
	}
	name := plumbing.NewBranchReferenceName(ref.Name)
	if ref.Type == SourceTag {
		name = plumbing.NewTagReferenceName(ref.Name)
	}
	tip, err := src.Reference(name, true)
	if err != nil {
		return "", fmt.Errorf("checkout: %s %q not found in %s: %w", ref.Type, ref.Name, path, hubmesh.ErrNotFound)
	}
	h := tip.Hash()
	if want != "" {
		h = plumbing.NewHash(want)
	}
	commit, err := peel(src, h)
	if err != nil {
		return "", err
	}
	dst, err := git.PlainInit(dir, false)
	if err != nil {
		return "", fmt.Errorf("checkout: init %s: %w", dir, err)
	}
	c, err := src.CommitObject(commit)
	if err != nil {
		return "", fmt.Errorf("checkout: %w: %w", hubmesh.ErrNotFound, err)
	}
	if err := copyObject(src, dst, c.Hash); err != nil {
		return "", err
	}
	if err := copyTree(ctx, src, dst, c.TreeHash); err != nil {
		return "", err
	}
	if err := dst.Storer.SetShallow([]plumbing.Hash{commit}); err != nil {
		return "", fmt.Errorf("checkout: %w", err)
	}
	return commit.String(), checkoutHash(dst, commit)
}

func copyObject(src, dst *git.Repository, h plumbing.Hash) error {
	o, err := src.Storer.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return fmt.Errorf("checkout: object %s: %w: %w", h, hubmesh.ErrNotFound, err)
	}
	if _, err := dst.Storer.SetEncodedObject(o); err != nil {
		return fmt.Errorf("checkout: write object %s: %w", h, err)
	}
	return nil
}

func copyTree(ctx context.Context, src, dst *git.Repository, h plumbing.Hash) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if err := copyObject(src, dst, h); err != nil {
		return err
	}
	t, err := object.GetTree(src.Storer, h)
	if err != nil {
		return fmt.Errorf("checkout: tree %s: %w", h, err)
	}
	for _, e := range t.Entries {
		switch e.Mode {
		case filemode.Dir:
			err = copyTree(ctx, src, dst, e.Hash)
		case filemode.Submodule:
			// Submodules are not fetched: the commit lives in another repository.
		default:
			err = copyObject(src, dst, e.Hash)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// classify wraps a go-git error with the root sentinel it means.
func classify(ctx context.Context, what string, err error) error {
	var nomatch git.NoMatchingRefSpecError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w: %w", what, hubmesh.ErrUnavailable, ctx.Err())
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, hubmesh.ErrDenied),
		// x/crypto/ssh reports a refused key with a plain error only.
		strings.Contains(err.Error(), "ssh: unable to authenticate"):
		return fmt.Errorf("%s: credentials refused: %w: %w", what, hubmesh.ErrDenied, err)
	case errors.Is(err, transport.ErrRepositoryNotFound), errors.Is(err, transport.ErrEmptyRemoteRepository),
		errors.As(err, &nomatch), errors.Is(err, plumbing.ErrReferenceNotFound), errors.Is(err, plumbing.ErrObjectNotFound):
		return fmt.Errorf("%s: %w: %w", what, hubmesh.ErrNotFound, err)
	case errors.Is(err, git.ErrExactSHA1NotSupported):
		return fmt.Errorf("%s: %w: %w", what, hubmesh.ErrInvalid, err)
	}
	return fmt.Errorf("%s: %w: %w", what, hubmesh.ErrUnavailable, err)
}

// redact drops any user information from a URL for messages.
func redact(u string) string {
	if pu, err := url.Parse(u); err == nil && pu.User != nil {
		return pu.Redacted()
	}
	return u
}
