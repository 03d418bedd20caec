package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/upstream"
)

// Federation: this mesh mirrors namespaces of another mesh (or of any OCI
// registry), pulling over the OCI API:
//
//	--federate A=https://hub-a:5000 --federate-namespaces A=alice,acme
//
// The leader's worker sweeps every link (every Config.FederateInterval,
// and at once when it becomes the leader): it lists the remote catalog
// from each namespace on (/v2/_catalog, which is in lexical order, so the
// listing starts at the namespace and stops past it), the tags of each
// repository, and copies every tag whose digest differs from the local
// one: the manifest (and the children of an index), then each blob,
// verified into the local store, then the blob links and the manifest
// through Raft. A push webhook of the remote mesh, POSTed to
// /api/v1/federation/<NAME>/hook and signed with the link's secret,
// asks for its repository to be copied at once (see RequestSync).
//
// Accounts stay separate: the remote is read with the credentials of the
// link (an account of the remote mesh, from --upstream-credentials-file,
// keyed by NAME); nothing of the remote's users, tokens or permissions is
// copied, and local accounts mean nothing there. A copied repository is
// created public, or private when the remote (a hubmesh, through
// /api/v1/repositories) says it is private.
//
// What is not mirrored: tags deleted on the remote stay here (a mirror
// keeps serving what it had; delete them by hand); repository settings
// beyond privacy at creation. A repository that exists here and was not
// created by the federation (its Source is not "federation:NAME") is never
// touched: a local push always wins. fedDescPrefix starts the description
// a federated repository gets, for people.
const fedDescPrefix = "Federated from "

const (
	// fedPoll bounds how long the worker sleeps before it looks again at
	// its leadership and at sync requests it may have missed.
	fedPoll = time.Second
	// fedPage is the page size of remote listings.
	fedPage = 500
	// fedFetchers bounds the blobs fetched at once.
	fedFetchers = 4
	// fedRepoWait bounds the copy of one repository.
	fedRepoWait = time.Hour
	// fedProbeWait bounds the /api/v1 privacy probe.
	fedProbeWait = 10 * time.Second
	// fedMaxPending bounds the sync requests waiting; more are left to
	// the sweep.
	fedMaxPending = 4096
)

// fedLinkConfig is one --federate link as configured.
type fedLinkConfig struct {
	name, url  string
	namespaces []string
}

// parseFederation reads --federate NAME=URL and --federate-namespaces
// NAME=NS[,NS...] (repeatable; the flag values are joined with commas, so
// an element without '=' continues the namespaces of the name before it).
// upstreams are the --upstream names, which must differ (the links share
// the credentials file with them).
func parseFederation(links, namespaces, upstreams []string) ([]fedLinkConfig, error) {
	var out []fedLinkConfig
	var errs []error
	byName := map[string]int{}
	taken := map[string]bool{}
	for _, u := range upstreams {
		if name, _, ok := strings.Cut(u, "="); ok {
			taken[strings.TrimSpace(name)] = true
		}
	}
	for _, e := range links {
		name, u, ok := strings.Cut(e, "=")
		name, u = strings.TrimSpace(name), strings.TrimSpace(u)
		switch {
		case !ok || name == "" || strings.ContainsAny(name, "/ :,;"):
			errs = append(errs, fmt.Errorf("federate %q: want NAME=URL, e.g. hub-a=https://hub-a:5000", e))
			continue
		case byName[name] > 0:
			errs = append(errs, fmt.Errorf("federate %q: name %s given twice", e, name))
			continue
		case taken[name]:
			errs = append(errs, fmt.Errorf("federate %q: %s is an --upstream name too", e, name))
			continue
		}
		if _, err := upstream.New(upstream.Config{Name: name, URL: u}); err != nil {
			errs = append(errs, fmt.Errorf("federate: %w", err))
			continue
		}
		out = append(out, fedLinkConfig{name: name, url: u})
		byName[name] = len(out)
	}
	cur := ""
	var elems []string
	for _, e := range namespaces {
		elems = append(elems, strings.Split(e, ",")...)
	}
	for _, e := range elems {
		e = strings.TrimSpace(e)
		ns := e
		if name, rest, ok := strings.Cut(e, "="); ok {
			cur, ns = strings.TrimSpace(name), strings.TrimSpace(rest)
		}
		switch {
		case cur == "":
			errs = append(errs, fmt.Errorf("federate-namespaces %q: want NAME=NAMESPACE[,NAMESPACE...]", e))
			continue
		case byName[cur] == 0:
			errs = append(errs, fmt.Errorf("federate-namespaces %q: %s is not a --federate name", e, cur))
			continue
		case ns == "" || strings.ContainsAny(ns, "/:*= ") || ns != strings.ToLower(ns):
			errs = append(errs, fmt.Errorf("federate-namespaces %q: %q is not a namespace (a lower-case user or organization name)", e, ns))
			continue
		}
		l := &out[byName[cur]-1]
		if !slices.Contains(l.namespaces, ns) {
			l.namespaces = append(l.namespaces, ns)
		}
	}
	for _, l := range out {
		if len(l.namespaces) == 0 {
			errs = append(errs, fmt.Errorf("federate %s: no namespaces; add --federate-namespaces %s=NAMESPACE[,NAMESPACE...]", l.name, l.name))
		}
	}
	return out, errors.Join(errs...)
}

// readFederateSecrets reads the YAML secrets file: NAME: secret.
func readFederateSecrets(path string) (map[string]string, error) {
	return readYAMLMap[string]("federate-secret-file", path)
}

// fedRemote is the registry of a link (*upstream.Client).
type fedRemote interface {
	manifestSource
	Catalog(ctx context.Context, last string, n int) ([]string, string, error)
	Tags(ctx context.Context, repo, last string, n int) ([]string, string, error)
	Resolve(ctx context.Context, repo, ref string) (upstream.Descriptor, error)
	Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error)
}

// fedStore is the replicated state the federation reads and writes
// (*consensus.Node).
type fedStore interface {
	manifestSink
	IsLeader() bool
	Repository(ctx context.Context, name string) (hubmesh.Repository, error)
	CreateRepository(ctx context.Context, r hubmesh.Repository) error
	UpdateRepository(ctx context.Context, name string, upd hubmesh.RepositoryUpdate) (hubmesh.Repository, error)
	LinkBlobs(ctx context.Context, repo string, descs []hubmesh.Descriptor) error
}

// fedContent is the local blob store (*mesh.Store): Put verifies.
type fedContent interface {
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	Put(ctx context.Context, d digest.Digest, r io.Reader) (int64, error)
}

// fedLink is one link to another mesh.
type fedLink struct {
	fedLinkConfig
	user, pass string
	secret     string
	remote     fedRemote
}

// fedKey names a repository of a link.
type fedKey struct{ link, repo string }

// federation mirrors the namespaces of its links while its node leads.
type federation struct {
	links   []*fedLink
	byName  map[string]*fedLink
	store   fedStore
	content fedContent
	// replicate, when set, starts copying a blob just stored to the other
	// nodes the replication factor asks for (it does not wait).
	replicate func(d digest.Digest)
	probe     *http.Client
	every     time.Duration
	log       *slog.Logger
	now       func() time.Time

	wake    chan struct{}
	mu      sync.Mutex
	pending map[fedKey]struct{}

	// Worker state: when the next sweep is due (zero: at once), the
	// backoff after a sweep that failed, local repositories warned about.
	nextSweep time.Time
	backoff   time.Duration
	skipped   map[string]bool
}

// newFederation builds the federation of cfg, or returns nil when cfg
// has no link.
func newFederation(cfg Config, store fedStore, content fedContent, log *slog.Logger) (*federation, error) {
	links, err := parseFederation(cfg.Federate, cfg.FederateNamespaces, cfg.Upstreams)
	if err != nil || len(links) == 0 {
		return nil, err
	}
	creds, err := readUpstreamCreds(cfg.UpstreamCredentialsFile)
	if err != nil {
		return nil, err
	}
	secrets, err := readFederateSecrets(cfg.FederateSecretFile)
	if err != nil {
		return nil, err
	}
	f := &federation{
		byName: map[string]*fedLink{}, store: store, content: content,
		probe: &http.Client{Timeout: fedProbeWait}, every: cfg.FederateInterval, log: log, now: time.Now,
		wake: make(chan struct{}, 1), pending: map[fedKey]struct{}{}, skipped: map[string]bool{},
	}
	for _, lc := range links {
		c := creds[lc.name]
		cl, err := upstream.New(upstream.Config{Name: lc.name, URL: lc.url, Username: c.Username, Password: c.Password})
		if err != nil {
			return nil, err
		}
		l := &fedLink{fedLinkConfig: lc, user: c.Username, pass: c.Password, secret: secrets[lc.name], remote: cl}
		f.links = append(f.links, l)
		f.byName[lc.name] = l
	}
	known := map[string]bool{}
	for _, e := range append(slices.Clone(cfg.Upstreams), cfg.Federate...) {
		name, _, _ := strings.Cut(e, "=")
		known[strings.TrimSpace(name)] = true
	}
	for name := range creds {
		if !known[name] {
			return nil, fmt.Errorf("upstream-credentials-file: %s is not an --upstream or --federate name", name)
		}
	}
	for name := range secrets {
		if f.byName[name] == nil {
			return nil, fmt.Errorf("federate-secret-file: %s is not a --federate name", name)
		}
	}
	return f, nil
}

// HookSecret implements registryapi.Federation: the webhook secret of
// link name ("" when none is configured).
func (f *federation) HookSecret(name string) (string, error) {
	l := f.byName[name]
	if l == nil {
		return "", fmt.Errorf("federation link %q: %w", name, hubmesh.ErrNotFound)
	}
	return l.secret, nil
}

// RequestSync implements registryapi.Federation: repo of link name is
// copied soon by the leader's worker; it does not wait. A repository
// outside the link's namespaces wraps hubmesh.ErrDenied. On a follower
// the request waits here until the node leads, and the leader's sweep
// copies the repository meanwhile.
func (f *federation) RequestSync(name, repo string) error {
	l := f.byName[name]
	if l == nil {
		return fmt.Errorf("federation link %q: %w", name, hubmesh.ErrNotFound)
	}
	if !slices.Contains(l.namespaces, hubmesh.RepoOf(repo)) {
		return fmt.Errorf("repository %q is outside the namespaces federated from %s: %w", repo, name, hubmesh.ErrDenied)
	}
	f.mu.Lock()
	if len(f.pending) < fedMaxPending {
		f.pending[fedKey{name, repo}] = struct{}{}
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return nil
}

// Run mirrors until ctx ends. Only the leader works; a node that becomes
// the leader sweeps at once.
func (f *federation) Run(ctx context.Context) error {
	if f == nil || len(f.links) == 0 {
		return nil
	}
	for _, l := range f.links {
		f.log.Info("federation on", "link", l.name, "url", l.url, "namespaces", strings.Join(l.namespaces, ","), "every", f.every)
	}
	tick := time.NewTicker(min(fedPoll, f.every))
	defer tick.Stop()
	for {
		if f.store.IsLeader() {
			f.step(ctx)
		} else {
			f.nextSweep = time.Time{}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-f.wake:
		}
	}
}

// step copies what was asked for, then sweeps every link when a sweep is
// due.
func (f *federation) step(ctx context.Context) {
	f.mu.Lock()
	pending := f.pending
	f.pending = map[fedKey]struct{}{}
	f.mu.Unlock()
	for k := range pending {
		if ctx.Err() != nil {
			return
		}
		if err := f.syncRepo(ctx, f.byName[k.link], k.repo); err != nil && ctx.Err() == nil {
			f.log.Warn("federation: copy failed; the sweep retries", "link", k.link, "repo", k.repo, "err", err)
		}
	}
	if f.now().Before(f.nextSweep) {
		return
	}
	failed := false
	for _, l := range f.links {
		if err := f.sweep(ctx, l); err != nil && ctx.Err() == nil {
			failed = true
			f.log.Warn("federation sweep", "link", l.name, "err", err)
		}
	}
	// A sweep that failed is retried sooner than the next one is due.
	wait := f.every
	if failed {
		f.backoff = min(max(2*f.backoff, syncRetryMin), f.every)
		wait = f.backoff
	} else {
		f.backoff = 0
	}
	f.nextSweep = f.now().Add(wait)
}

// sweep copies every repository of l's namespaces, reporting every failure.
func (f *federation) sweep(ctx context.Context, l *fedLink) error {
	var errs []error
	for _, ns := range l.namespaces {
		repos, err := f.remoteRepos(ctx, l, ns)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace %s: %w", ns, err))
			continue
		}
		for _, repo := range repos {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := f.syncRepo(ctx, l, repo); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", repo, err))
			}
		}
	}
	return errors.Join(errs...)
}

// remoteRepos lists the remote repositories of namespace ns. The catalog
// is in lexical order: it is read from ns on and no further than the
// names under ns/.
func (f *federation) remoteRepos(ctx context.Context, l *fedLink, ns string) ([]string, error) {
	prefix := ns + "/"
	var out []string
	last := ns
	for {
		page, next, err := l.remote.Catalog(ctx, last, fedPage)
		if err != nil {
			return out, err
		}
		for _, r := range page {
			switch {
			case strings.HasPrefix(r, prefix):
				out = append(out, r)
			case r > prefix:
				return out, nil
			}
		}
		if next == "" || len(page) == 0 || next <= last {
			return out, nil
		}
		last = next
	}
}

// syncRepo copies every tag of repo whose remote digest differs from the
// local one. The local copy of a repository that became private on the
// remote is made private first.
func (f *federation) syncRepo(ctx context.Context, l *fedLink, repo string) error {
	ctx, cancel := context.WithTimeout(ctx, fedRepoWait)
	defer cancel()
	r, err := f.store.Repository(ctx, repo)
	switch {
	case err == nil && r.Source != hubmesh.SourceFederation+l.name:
		if !f.skipped[repo] {
			f.skipped[repo] = true
			f.log.Warn("federation: a local repository has this name; not overwritten", "link", l.name, "repo", repo, "source", r.Source)
		}
		return nil
	case err == nil:
		if err := f.followPrivacy(ctx, l, r); err != nil {
			return err
		}
	case !errors.Is(err, hubmesh.ErrNotFound):
		return err
	}
	var tags []string
	last := ""
	for {
		page, next, err := l.remote.Tags(ctx, repo, last, fedPage)
		if errors.Is(err, hubmesh.ErrNotFound) {
			return nil // gone there, or not readable with the link's account
		}
		if err != nil {
			return err
		}
		tags = append(tags, page...)
		if next == "" || len(page) == 0 || next <= last {
			break
		}
		last = next
	}
	var errs []error
	for _, tag := range tags {
		if err := f.syncTag(ctx, l, repo, tag); err != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %w", repo, tag, err))
		}
	}
	return errors.Join(errs...)
}

// syncTag copies repo:tag unless the local tag names the remote digest.
func (f *federation) syncTag(ctx context.Context, l *fedLink, repo, tag string) error {
	desc, err := l.remote.Resolve(ctx, repo, tag)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	if local, err := f.store.GetManifest(ctx, repo, tag); err == nil && local.Digest == desc.Digest {
		return nil
	}
	how := copyHow{
		what: "federated manifest", now: f.now, log: f.log.With("link", l.name),
		prepare: func(ctx context.Context) error { return f.ensureRepo(ctx, l, repo) },
		blobs: func(ctx context.Context, d digest.Digest, blobs []hubmesh.Descriptor) error {
			return f.copyBlobs(ctx, l, repo, d, blobs)
		},
	}
	_, err = copyManifest(ctx, l.remote, f.store, how, repo, repo, desc.Digest.String(), []string{tag}, 0)
	return err
}

// copyBlobs fetches the blobs of manifest d that the local store lacks
// (verified as they are written), then links them all in repo with this
// node as their holder, in one command.
func (f *federation) copyBlobs(ctx context.Context, l *fedLink, repo string, d digest.Digest, blobs []hubmesh.Descriptor) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fedFetchers)
	for _, b := range blobs {
		g.Go(func() error { return f.copyBlob(gctx, l, repo, b) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := f.store.LinkBlobs(ctx, repo, blobs); err != nil {
		return fmt.Errorf("federate %s@%s: link blobs: %w", repo, d, err)
	}
	if f.replicate != nil {
		for _, b := range blobs {
			f.replicate(b.Digest)
		}
	}
	return nil
}

func (f *federation) copyBlob(ctx context.Context, l *fedLink, repo string, b hubmesh.Descriptor) error {
	if _, err := f.content.Stat(ctx, b.Digest); err == nil {
		return nil
	}
	rc, _, err := l.remote.Blob(ctx, repo, b.Digest)
	if err != nil {
		return err
	}
	defer rc.Close()
	size, err := f.content.Put(ctx, b.Digest, rc)
	switch {
	case errors.Is(err, hubmesh.ErrDigestMismatch):
		return fmt.Errorf("%s: blob %s: %w", l.name, b.Digest, err)
	case err != nil:
		return fmt.Errorf("%s: blob %s: %v: %w", l.name, b.Digest, err, hubmesh.ErrUnavailable)
	case size != b.Size:
		return fmt.Errorf("%s: blob %s has %d bytes, the manifest says %d: %w", l.name, b.Digest, size, b.Size, hubmesh.ErrInvalid)
	}
	f.log.Debug("federated blob", "link", l.name, "repo", repo, "digest", b.Digest, "size", size)
	return nil
}

// followPrivacy makes the local copy r private when the remote says its
// repository is private (the other way round is left to the local admins).
func (f *federation) followPrivacy(ctx context.Context, l *fedLink, r hubmesh.Repository) error {
	private, err := f.remotePrivate(ctx, l, r.Name)
	if err != nil || !private || r.IsPrivate {
		return err
	}
	yes := true
	if _, err := f.store.UpdateRepository(ctx, r.Name, hubmesh.RepositoryUpdate{IsPrivate: &yes, At: f.now().UTC()}); err != nil {
		return fmt.Errorf("federated repository %s: make private: %w", r.Name, err)
	}
	f.log.Info("federation: repository became private on the remote; made private here", "link", l.name, "repo", r.Name)
	return nil
}

// ensureRepo creates repo if it is missing: private when the remote says
// its repository is, else public. An existing repository that is not this
// link's copy (pushed here, cached, or another link's) is never written:
// that is an ErrExists error.
func (f *federation) ensureRepo(ctx context.Context, l *fedLink, repo string) error {
	source := hubmesh.SourceFederation + l.name
	r, err := f.store.Repository(ctx, repo)
	switch {
	case err == nil && r.Source == source:
		return nil
	case err == nil:
		return fmt.Errorf("federated repository %s: %w: a local repository (source %q) has this name", repo, hubmesh.ErrExists, r.Source)
	case !errors.Is(err, hubmesh.ErrNotFound):
		return fmt.Errorf("federated repository %s: %w", repo, err)
	}
	private, err := f.remotePrivate(ctx, l, repo)
	if err != nil {
		return err
	}
	now := f.now().UTC()
	err = f.store.CreateRepository(ctx, hubmesh.Repository{
		Name: repo, Namespace: hubmesh.RepoOf(repo), IsPrivate: private, Created: now, Updated: now,
		Description: fedDescPrefix + l.name, Source: source,
	})
	if errors.Is(err, hubmesh.ErrExists) {
		// Created meanwhile: fine only when it is this link's copy.
		if r, err := f.store.Repository(ctx, repo); err != nil || r.Source != source {
			return fmt.Errorf("federated repository %s: %w: created meanwhile by someone else", repo, hubmesh.ErrExists)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("federated repository %s: %w", repo, err)
	}
	return nil
}

// remotePrivate asks a hubmesh remote whether repo is private there
// (GET /api/v1/repositories/<repo> with the link's account). The answer
// is "public" only on a 200 saying is_private:false, or on a 404 (a
// remote without that API, which is not a hubmesh). Any other answer
// (401, 403, 429, 5xx, a 200 without is_private) is an ErrUnavailable
// error, retried by the next sweep, so that a private repository is never
// made public by a failed probe.
func (f *federation) remotePrivate(ctx context.Context, l *fedLink, repo string) (bool, error) {
	u, err := url.Parse(strings.TrimSuffix(l.url, "/") + "/api/v1/repositories/" + repo)
	if err != nil {
		return false, fmt.Errorf("federate %s: %v: %w", l.name, err, hubmesh.ErrInvalid)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("federate %s: %v: %w", l.name, err, hubmesh.ErrInvalid)
	}
	if l.user != "" {
		req.SetBasicAuth(l.user, l.pass)
	}
	resp, err := f.probe.Do(req)
	if err != nil {
		return false, fmt.Errorf("federate %s: repository settings: %v: %w", l.name, err, hubmesh.ErrUnavailable)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("federate %s: repository settings of %s: HTTP %d: %w", l.name, repo, resp.StatusCode, hubmesh.ErrUnavailable)
	}
	var r struct {
		IsPrivate *bool `json:"is_private"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil || r.IsPrivate == nil {
		return false, fmt.Errorf("federate %s: repository settings of %s: no is_private in the answer: %w", l.name, repo, hubmesh.ErrUnavailable)
	}
	return *r.IsPrivate, nil
}

// replicateSoon starts copying d, just stored here, to as many nodes as
// the replication factor asks for, without waiting (a copied manifest does
// not wait for replicas the way a push does).
func (b *blobs) replicateSoon(d digest.Digest) {
	servers, err := b.meta.Servers()
	if err != nil || b.needOf(servers) < 2 {
		return
	}
	go func() {
		if err := b.ensureReplicas(b.bg, d); err != nil && b.bg.Err() == nil {
			b.log.Warn("federated blob replication", "digest", d, "err", err)
		}
	}()
}
