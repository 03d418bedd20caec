package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/registryapi"
	"github.com/hubmesh/hubmesh/upstream"
)

// Pull-through cache. With --upstream NAME=URL a node fills repositories
// on demand from external registries:
//
//	/v2/<NAME>/<repo>/...   always upstream NAME, repository <repo>
//	/v2/<repo>/...          the default upstream (the one named docker.io,
//	                        else the first), so that the node works as a
//	                        Docker daemon registry-mirrors entry; a name
//	                        without '/' becomes library/<name> on docker.io
//
// Only repositories that do not exist locally, or that the cache created
// (their Source is "upstream:NAME"), are filled; a
// repository pushed locally is never touched. Cached manifests, tags and
// blob links go through Raft under the name the client asked for, so the
// whole mesh sees them; blobs are fetched on the first request for them,
// verified, stored and recorded with this node as their replica. A
// cached tag older than the TTL is re-resolved with a manifest HEAD on
// the next request; when the upstream cannot be reached the cached
// manifest is served. Cached repositories are public reads; writes to
// them follow the local access rules like any repository.
//
// cacheDescPrefix starts the description a cache repository gets, for
// people; the cache recognises its repositories by their Source.
const cacheDescPrefix = "Pull-through cache of "

// Bounds of the work a request starts on the upstream. The work is shared
// by concurrent requests and outlives the one that started it (another
// request may be waiting for it), so it runs on the node's context.
const (
	upstreamManifestWait = 2 * time.Minute
	upstreamBlobWait     = time.Hour
	// maxIndexDepth bounds how deep indexes may nest (an index of indexes).
	maxIndexDepth = 2
)

// upstreamCreds is one entry of the credentials file.
type upstreamCreds struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// parseUpstreams checks NAME=URL entries and returns them in order.
func parseUpstreams(list []string) ([][2]string, error) {
	var out [][2]string
	var errs []error
	seen := map[string]bool{}
	for _, e := range list {
		name, u, ok := strings.Cut(e, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, "/ :") {
			errs = append(errs, fmt.Errorf("upstream %q: want NAME=URL, e.g. docker.io=https://registry-1.docker.io", e))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("upstream %q: name %s given twice", e, name))
			continue
		}
		seen[name] = true
		if _, err := upstream.New(upstream.Config{Name: name, URL: strings.TrimSpace(u)}); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, [2]string{name, strings.TrimSpace(u)})
	}
	return out, errors.Join(errs...)
}

// readUpstreamCreds reads the YAML credentials file: NAME: {username, password}.
func readUpstreamCreds(path string) (map[string]upstreamCreds, error) {
	return readYAMLMap[upstreamCreds]("upstream-credentials-file", path)
}

// readYAMLMap reads the YAML file at path, the value of flag, as a map of
// names to V, refusing unknown fields. An empty path gives nil.
func readYAMLMap[V any](flag, path string) (map[string]V, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	m := map[string]V{}
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return m, nil
}

// upstreams is the pull-through cache of a node; nil when no upstream is
// configured.
type upstreams struct {
	byName map[string]*upstream.Client
	def    *upstream.Client
	ttl    time.Duration
	meta   *consensus.Node
	blobs  *blobs
	bg     context.Context
	log    *slog.Logger
	now    func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	fresh  map[string]time.Time // repo:tag -> when the upstream last confirmed it
}

// newUpstreams builds the cache from cfg, or returns nil when cfg names
// no upstream.
func newUpstreams(cfg Config, meta *consensus.Node, b *blobs, bg context.Context, log *slog.Logger) (*upstreams, error) {
	list, err := parseUpstreams(cfg.Upstreams)
	if err != nil || len(list) == 0 {
		return nil, err
	}
	creds, err := readUpstreamCreds(cfg.UpstreamCredentialsFile)
	if err != nil {
		return nil, err
	}
	u := &upstreams{byName: map[string]*upstream.Client{}, ttl: cfg.UpstreamTTL, meta: meta, blobs: b,
		bg: bg, log: log, now: time.Now, fresh: map[string]time.Time{}}
	names := map[string]bool{}
	for _, e := range list {
		names[e[0]] = true
	}
	for _, e := range cfg.Federate { // the federation's accounts live in the same file
		name, _, _ := strings.Cut(e, "=")
		names[strings.TrimSpace(name)] = true
	}
	for name := range creds {
		if !names[name] {
			return nil, fmt.Errorf("upstream-credentials-file: %s is not an --upstream or --federate name", name)
		}
	}
	for _, e := range list {
		c, err := upstream.New(upstream.Config{Name: e[0], URL: e[1], Username: creds[e[0]].Username, Password: creds[e[0]].Password})
		if err != nil {
			return nil, err
		}
		u.byName[e[0]] = c
		if u.def == nil || e[0] == "docker.io" {
			u.def = c
		}
	}
	return u, nil
}

// route maps a local repository name to its upstream and the name there.
func (u *upstreams) route(repo string) (*upstream.Client, string) {
	if first, rest, ok := strings.Cut(repo, "/"); ok {
		if c := u.byName[first]; c != nil {
			return c, dockerName(c, rest)
		}
	}
	return u.def, dockerName(u.def, repo)
}

// dockerName is repo as docker.io names it: official images live in library/.
func dockerName(c *upstream.Client, repo string) string {
	if c.Name() == "docker.io" && !strings.Contains(repo, "/") {
		return "library/" + repo
	}
	return repo
}

// eligible reports whether repo may be filled from an upstream: the cache
// created it, or it does not exist here and either names an upstream
// explicitly (NAME/...) or lies in a namespace no local user or
// organization owns. A repository in an owned namespace is never filled:
// the cache would otherwise create it public before its owner pushes (a
// private repository would land in a public one, and the upstream's tags
// would replace the owner's after the TTL).
func (u *upstreams) eligible(ctx context.Context, repo string) (*upstream.Client, string, bool) {
	r, err := u.meta.Repository(ctx, repo)
	switch {
	case err == nil:
		if !strings.HasPrefix(r.Source, hubmesh.SourceUpstream) {
			return nil, "", false
		}
	case !errors.Is(err, hubmesh.ErrNotFound):
		return nil, "", false
	default:
		first, _, nested := strings.Cut(repo, "/")
		if _, explicit := u.byName[first]; !explicit || !nested {
			if name := hubmesh.RepoOf(repo); name != "" {
				ns, err := u.meta.Namespace(ctx, name)
				if err != nil || ns.Kind != "" {
					return nil, "", false
				}
			}
		}
	}
	c, name := u.route(repo)
	return c, name, true
}

func (u *upstreams) isFresh(repo, tag string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.fresh[repo+":"+tag]
	return ok && u.now().Sub(t) < u.ttl
}

func (u *upstreams) markFresh(repo, tag string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fresh[repo+":"+tag] = u.now()
}

// shared runs fn once for key among concurrent callers, on the node's
// context bounded by limit, and waits for it under ctx.
func (u *upstreams) shared(ctx context.Context, key string, limit time.Duration, fn func(context.Context) (any, error)) (any, error) {
	ch := u.flight.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(u.bg, limit)
		defer cancel()
		return fn(fctx)
	})
	select {
	case res := <-ch:
		return res.Val, res.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for upstream: %w: %w", hubmesh.ErrUnavailable, ctx.Err())
	}
}

// manifest resolves ref in repo on the upstream and caches what it names;
// local is the cached manifest for ref, if any.
func (u *upstreams) manifest(ctx context.Context, c *upstream.Client, repo, urepo, ref string, local *hubmesh.Manifest) (*hubmesh.Manifest, error) {
	v, err := u.shared(ctx, "m\x00"+repo+"\x00"+ref, upstreamManifestWait, func(ctx context.Context) (any, error) {
		var tags []string
		target := ref
		if !strings.Contains(ref, ":") {
			tags = []string{ref}
			desc, err := c.Resolve(ctx, urepo, ref)
			if err != nil {
				return nil, err
			}
			if local != nil && desc.Digest == local.Digest {
				u.markFresh(repo, ref)
				return local, nil
			}
			target = desc.Digest.String()
		}
		m, err := u.fill(ctx, c, repo, urepo, target, tags, 0)
		if err != nil {
			return nil, err
		}
		if len(tags) > 0 {
			u.markFresh(repo, ref)
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*hubmesh.Manifest), nil
}

// fill fetches manifest ref (a digest, or a tag) of urepo and records it
// in repo with tags, after the child manifests of an index and the blob
// links of an image manifest (blob content comes on first request).
func (u *upstreams) fill(ctx context.Context, c *upstream.Client, repo, urepo, ref string, tags []string, depth int) (*hubmesh.Manifest, error) {
	how := copyHow{
		what: "cached manifest", now: u.now, log: u.log,
		prepare: func(ctx context.Context) error { return u.ensureRepo(ctx, c, repo) },
		blobs: func(ctx context.Context, d digest.Digest, blobs []hubmesh.Descriptor) error {
			// Linked with no holder: the content is not here yet, and a
			// member told this node holds it would ask for content it
			// lacks. The first request for a blob that no node holds
			// fetches it from the upstream (cachingLinks), and blob()
			// then records the holder (AddReplica).
			if err := u.meta.LinkUnheldBlobs(ctx, repo, blobs); err != nil {
				return fmt.Errorf("cache %s@%s: link blobs: %w", repo, d, err)
			}
			return nil
		},
	}
	return copyManifest(ctx, c, u.meta, how, repo, urepo, ref, tags, depth)
}

// manifestSource is a registry copyManifest reads (*upstream.Client).
type manifestSource interface {
	Name() string
	Manifest(ctx context.Context, repo, ref string) (string, []byte, digest.Digest, error)
}

// manifestSink is where copyManifest records (*consensus.Node).
type manifestSink interface {
	GetManifest(ctx context.Context, repo, ref string) (*hubmesh.Manifest, error)
	PutManifest(ctx context.Context, m *hubmesh.Manifest, tags []string) error
}

// copyHow is what the users of copyManifest (the pull-through cache, the
// federation) do differently.
type copyHow struct {
	// prepare runs for each manifest before anything of it is recorded
	// (it creates the repository).
	prepare func(ctx context.Context) error
	// blobs makes the blobs of image manifest d known in the repository
	// before the manifest is recorded.
	blobs func(ctx context.Context, d digest.Digest, blobs []hubmesh.Descriptor) error
	now   func() time.Time
	log   *slog.Logger
	// what names the copy in the log line ("cached manifest").
	what string
}

// copyManifest fetches manifest ref (a digest, or a tag) of urepo on src
// and records it in repo with tags, after the child manifests of an index
// (those missing here) and the blobs of an image manifest (how.blobs).
// depth counts nested indexes.
func copyManifest(ctx context.Context, src manifestSource, dst manifestSink, how copyHow, repo, urepo, ref string, tags []string, depth int) (*hubmesh.Manifest, error) {
	mt, payload, d, err := src.Manifest(ctx, urepo, ref)
	if err != nil {
		return nil, err
	}
	refs, err := upstream.ParseRefs(payload, mt)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %s@%s: %w", src.Name(), urepo, d, err)
	}
	if err := how.prepare(ctx); err != nil {
		return nil, err
	}
	if len(refs.Children) > 0 {
		if depth >= maxIndexDepth {
			return nil, fmt.Errorf("upstream %s: %s@%s: indexes nested too deep: %w", src.Name(), urepo, d, hubmesh.ErrInvalid)
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(4)
		for _, ch := range refs.Children {
			g.Go(func() error {
				if _, err := dst.GetManifest(gctx, repo, ch.Digest.String()); err == nil {
					return nil
				}
				_, err := copyManifest(gctx, src, dst, how, repo, urepo, ch.Digest.String(), nil, depth+1)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	if len(refs.Blobs) > 0 {
		if err := how.blobs(ctx, d, refs.Blobs); err != nil {
			return nil, err
		}
	}
	m := &hubmesh.Manifest{
		Repo: repo, Digest: d, MediaType: refs.MediaType, Payload: payload,
		ArtifactType: refs.ArtifactType, Annotations: refs.Annotations, Subject: refs.Subject,
		Blobs: refs.Blobs, Children: refs.Children, Created: how.now().UTC(),
	}
	// Straight to Raft: copied content can be fetched again, so it does
	// not wait for replicas the way a push does.
	if err := dst.PutManifest(ctx, m, tags); err != nil {
		return nil, fmt.Errorf("copy %s@%s: %w", repo, d, err)
	}
	how.log.Info(how.what, "repo", repo, "upstream", src.Name(), "digest", d, "tags", tags)
	return m, nil
}

// ensureRepo creates repo as a public cache repository if it is missing.
func (u *upstreams) ensureRepo(ctx context.Context, c *upstream.Client, repo string) error {
	if _, err := u.meta.Repository(ctx, repo); err == nil {
		return nil
	}
	now := u.now().UTC()
	err := u.meta.CreateRepository(ctx, hubmesh.Repository{
		Name: repo, Namespace: hubmesh.RepoOf(repo), Created: now, Updated: now,
		Description: cacheDescPrefix + c.Name(), Source: hubmesh.SourceUpstream + c.Name(),
	})
	if err != nil && !errors.Is(err, hubmesh.ErrExists) {
		return fmt.Errorf("cache repository %s: %w", repo, err)
	}
	return nil
}

// blob fetches blob d of urepo into the local store, links it in repo
// (when link is nil) and records this node as a replica (a blob linked by
// fill has none until then).
func (u *upstreams) blob(ctx context.Context, c *upstream.Client, repo, urepo string, d digest.Digest, link *hubmesh.Descriptor) (hubmesh.Descriptor, error) {
	v, err := u.shared(ctx, "b\x00"+repo+"\x00"+d.String(), upstreamBlobWait, func(ctx context.Context) (any, error) {
		size, err := u.blobs.store.Stat(ctx, d)
		if err == nil && link == nil {
			// The content is here, but not linked in repo: it may belong to
			// a private repository. Link it only if the upstream really has
			// it in urepo; local presence alone proves nothing.
			rc, _, uerr := c.Blob(ctx, urepo, d)
			if uerr != nil {
				return nil, uerr
			}
			rc.Close()
		}
		if err != nil {
			rc, _, err := c.Blob(ctx, urepo, d)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			if size, err = u.blobs.store.Put(ctx, d, rc); err != nil {
				if errors.Is(err, hubmesh.ErrDigestMismatch) {
					return nil, fmt.Errorf("upstream %s: blob %s: %w", c.Name(), d, err)
				}
				return nil, fmt.Errorf("upstream %s: blob %s: %v: %w", c.Name(), d, err, hubmesh.ErrUnavailable)
			}
		}
		desc := hubmesh.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: size}
		if link != nil {
			desc = *link
			if err := u.meta.AddReplica(ctx, d, size, u.blobs.self); err != nil {
				return nil, fmt.Errorf("cache blob %s: %w", d, err)
			}
		} else if err := u.meta.LinkBlob(ctx, repo, desc); err != nil {
			return nil, fmt.Errorf("cache blob %s: %w", d, err)
		}
		u.log.Info("cached blob", "repo", repo, "upstream", c.Name(), "digest", d, "size", size)
		return desc, nil
	})
	if err != nil {
		return hubmesh.Descriptor{}, err
	}
	return v.(hubmesh.Descriptor), nil
}

// cachingManifests fills manifest misses and stale tags from the upstream.
type cachingManifests struct {
	registryapi.Manifests
	up *upstreams
}

// GetManifest implements registryapi.Manifests.
func (m cachingManifests) GetManifest(ctx context.Context, repo, ref string) (*hubmesh.Manifest, error) {
	local, err := m.Manifests.GetManifest(ctx, repo, ref)
	if err != nil && !errors.Is(err, hubmesh.ErrNotFound) {
		return nil, err
	}
	byDigest := strings.Contains(ref, ":")
	if err == nil && (byDigest || m.up.isFresh(repo, ref)) {
		return local, nil
	}
	c, urepo, ok := m.up.eligible(ctx, repo)
	if !ok {
		return local, err
	}
	got, uerr := m.up.manifest(ctx, c, repo, urepo, ref, local)
	switch {
	case uerr == nil:
		return got, nil
	case local != nil:
		// Upstream unreachable or the tag gone there: the cache still
		// serves, and asks again after the TTL rather than on every pull.
		m.up.markFresh(repo, ref)
		m.up.log.Warn("serving cached tag; upstream check failed", "repo", repo, "tag", ref, "upstream", c.Name(), "err", uerr)
		return local, nil
	case errors.Is(uerr, hubmesh.ErrNotFound):
		return nil, uerr
	default:
		// Answered as unknown (404) rather than 503 so that the client
		// sees why: a 5xx carries no message.
		return nil, fmt.Errorf("%s:%s is not cached here and upstream %s failed (%v): %w", repo, ref, c.Name(), uerr, hubmesh.ErrManifestUnknown)
	}
}

// cachingLinks fetches blob content that no node holds yet from the upstream.
type cachingLinks struct {
	registryapi.BlobLinks
	up *upstreams
}

// StatBlob implements registryapi.BlobLinks. A blob of a cached manifest
// is linked before any node holds it; the first request for it fetches
// it whole into the local store (verified) before it is served.
func (l cachingLinks) StatBlob(ctx context.Context, repo string, d digest.Digest) (hubmesh.Descriptor, error) {
	desc, err := l.BlobLinks.StatBlob(ctx, repo, d)
	var link *hubmesh.Descriptor
	switch {
	case err == nil:
		if _, serr := l.up.blobs.Stat(ctx, d); serr == nil || !errors.Is(serr, hubmesh.ErrNotFound) {
			return desc, nil
		}
		link = &desc
	case !errors.Is(err, hubmesh.ErrNotFound):
		return desc, err
	}
	c, urepo, ok := l.up.eligible(ctx, repo)
	if !ok {
		return desc, err
	}
	got, uerr := l.up.blob(ctx, c, repo, urepo, d, link)
	switch {
	case uerr == nil:
		return got, nil
	case errors.Is(uerr, hubmesh.ErrNotFound):
		return hubmesh.Descriptor{}, uerr
	default:
		return hubmesh.Descriptor{}, fmt.Errorf("blob %s of %s is not cached here and upstream %s failed (%v): %w", d, repo, c.Name(), uerr, hubmesh.ErrBlobUnknown)
	}
}

// cachingIdentities makes repositories an upstream may fill public reads
// until they exist here (they are then created public).
type cachingIdentities struct {
	registryapi.Identities
	up *upstreams
}

// AccessFacts implements registryapi.Identities: a missing repository is
// a public read only where the cache may fill it (see eligible).
func (i cachingIdentities) AccessFacts(ctx context.Context, user, repo string) (hubmesh.AccessFacts, error) {
	f, err := i.Identities.AccessFacts(ctx, user, repo)
	if err != nil || f.RepoExists {
		return f, err
	}
	if _, _, ok := i.up.eligible(ctx, repo); !ok {
		return f, nil
	}
	f.RepoExists, f.RepoPrivate = true, false
	return f, nil
}
