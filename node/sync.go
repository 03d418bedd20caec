package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/hubmesh/hubmesh"
)

// Mirror sync: a node with a sync policy (Config.Sync) fetches and keeps
// the blobs of every manifest whose repository and tag match, as they are
// pushed anywhere in the cluster, so that they are local before anyone
// asks (and while the node is cut off from its cluster). It follows the
// changed-repository log of the replicated state, polled every
// syncPollEvery, and sweeps every matching repository at start and every
// syncSweepEvery, which also retries what failed.
const (
	syncPollEvery  = time.Second
	syncSweepEvery = 5 * time.Minute
	// syncFetchers bounds the blobs fetched at once.
	syncFetchers = 4
	// syncBlobWait bounds one blob fetch; a failed one is retried later.
	syncBlobWait = 10 * time.Minute
	// syncRetryMin and syncRetryMax bound the backoff of a repository
	// whose sync failed.
	syncRetryMin = 2 * time.Second
	syncRetryMax = 2 * time.Minute
	// syncMaxKnown bounds the manifests remembered as fully synced.
	syncMaxKnown = 1 << 16
	// syncMaxDepth bounds nested indexes.
	syncMaxDepth = 8
)

// syncRule is one sync pattern: a repository glob and a tag glob (path.Match
// syntax; "*" does not cross "/"). An empty tag glob matches every tag.
type syncRule struct {
	repo, tag string
}

// String formats r as it was given: REPO[:TAG].
func (r syncRule) String() string {
	if r.tag == "" {
		return r.repo
	}
	return r.repo + ":" + r.tag
}

// parseSyncRule reads REPO[:TAG], e.g. "acme/*:v*" or "library/*".
func parseSyncRule(s string) (syncRule, error) {
	s = strings.TrimSpace(s)
	r := syncRule{repo: s}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		r.repo, r.tag = s[:i], s[i+1:]
		if r.tag == "" {
			return r, fmt.Errorf("sync %q: empty tag pattern (leave out the ':' to match every tag)", s)
		}
	}
	if r.repo == "" || strings.HasPrefix(r.repo, "/") || strings.HasSuffix(r.repo, "/") {
		return r, fmt.Errorf("sync %q: want REPOSITORY[:TAG] patterns such as 'acme/*:v*' or 'library/*'", s)
	}
	if _, err := path.Match(r.repo, ""); err != nil {
		return r, fmt.Errorf("sync %q: bad repository pattern: %v", s, err)
	}
	if _, err := path.Match(r.tag, ""); err != nil {
		return r, fmt.Errorf("sync %q: bad tag pattern: %v", s, err)
	}
	return r, nil
}

// syncPolicy is a list of rules; an image is synced when any rule
// matches it.
type syncPolicy []syncRule

// parseSyncPolicy reads every pattern, reporting every bad one.
func parseSyncPolicy(patterns []string) (syncPolicy, error) {
	var p syncPolicy
	var errs []error
	for _, s := range patterns {
		r, err := parseSyncRule(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p = append(p, r)
	}
	return p, errors.Join(errs...)
}

// repo tells whether some rule may match tags of repo.
func (p syncPolicy) repo(repo string) bool {
	for _, r := range p {
		if ok, _ := path.Match(r.repo, repo); ok {
			return true
		}
	}
	return false
}

// match tells whether repo:tag is to be synced.
func (p syncPolicy) match(repo, tag string) bool {
	for _, r := range p {
		if ok, _ := path.Match(r.repo, repo); !ok {
			continue
		}
		if r.tag == "" {
			return true
		}
		if ok, _ := path.Match(r.tag, tag); ok {
			return true
		}
	}
	return false
}

// syncSource is the replicated state the syncer reads (consensus.Node).
type syncSource interface {
	ScanRepositories(fn func(hubmesh.Repository) error) (uint64, error)
	ChangedRepositories(since uint64) (repos []string, upTo uint64, ok bool)
	Tags(ctx context.Context, repo string, p hubmesh.Page) ([]string, error)
	GetManifest(ctx context.Context, repo, ref string) (*hubmesh.Manifest, error)
}

// blobKeeper fetches a blob from the peers that hold it into the local
// store, unless it is there (*blobs).
type blobKeeper interface {
	keep(ctx context.Context, d digest.Digest) error
}

// syncer runs a sync policy.
type syncer struct {
	policy syncPolicy
	src    syncSource
	blobs  blobKeeper
	log    *slog.Logger

	since     uint64
	scanned   bool
	lastSweep time.Time
	retry     map[string]syncRetry       // repositories whose last sync failed
	known     map[digest.Digest]struct{} // manifests whose blobs are all here
	now       func() time.Time
}

type syncRetry struct {
	at      time.Time
	backoff time.Duration
}

func newSyncer(policy syncPolicy, src syncSource, blobs blobKeeper, log *slog.Logger) *syncer {
	return &syncer{policy: policy, src: src, blobs: blobs, log: log,
		retry: map[string]syncRetry{}, known: map[digest.Digest]struct{}{}, now: time.Now}
}

// Run syncs until ctx ends. Without a policy it returns at once.
func (s *syncer) Run(ctx context.Context) error {
	if len(s.policy) == 0 {
		return nil
	}
	s.log.Info("mirror sync on", "patterns", fmt.Sprint(s.policy))
	tick := time.NewTicker(syncPollEvery)
	defer tick.Stop()
	for {
		s.step(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// step syncs what changed since the last step, every repository due for
// a retry, and everything when a sweep is due or the change log cannot
// say what changed.
func (s *syncer) step(ctx context.Context) {
	now := s.now()
	repos := map[string]bool{}
	if !s.scanned || now.Sub(s.lastSweep) >= syncSweepEvery {
		if !s.sweep(repos) {
			return
		}
		s.lastSweep = now
	} else {
		names, upTo, ok := s.src.ChangedRepositories(s.since)
		if !ok {
			if !s.sweep(repos) {
				return
			}
			s.lastSweep = now
		} else {
			for _, n := range names {
				repos[n] = true
			}
			s.since = upTo
		}
	}
	for repo, r := range s.retry {
		if !now.Before(r.at) {
			repos[repo] = true
		}
	}
	for repo := range repos {
		if ctx.Err() != nil {
			return
		}
		if !s.policy.repo(repo) {
			delete(s.retry, repo)
			continue
		}
		if err := s.syncRepo(ctx, repo); err != nil {
			if ctx.Err() != nil {
				return
			}
			r := s.retry[repo]
			r.backoff = min(max(2*r.backoff, syncRetryMin), syncRetryMax)
			r.at = s.now().Add(r.backoff)
			s.retry[repo] = r
			s.log.Warn("mirror sync failed; will retry", "repo", repo, "retry_in", r.backoff, "err", err)
			continue
		}
		delete(s.retry, repo)
	}
}

// sweep adds every repository to repos and restarts the change log from
// the state it read. It reports false when the scan failed.
func (s *syncer) sweep(repos map[string]bool) bool {
	applied, err := s.src.ScanRepositories(func(r hubmesh.Repository) error {
		repos[r.Name] = true // the full name, namespace/name
		return nil
	})
	if err != nil {
		s.log.Warn("mirror sync: scan repositories", "err", err)
		return false
	}
	s.since, s.scanned = applied, true
	return true
}

// syncRepo fetches the blobs of every matching tag of repo.
func (s *syncer) syncRepo(ctx context.Context, repo string) error {
	var tags []string
	p := hubmesh.Page{N: 1000}
	for {
		page, err := s.src.Tags(ctx, repo, p)
		if errors.Is(err, hubmesh.ErrNotFound) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		for _, t := range page {
			if s.policy.match(repo, t) {
				tags = append(tags, t)
			}
		}
		if len(page) < p.N {
			break
		}
		p.Last = page[len(page)-1]
	}
	var errs []error
	for _, tag := range tags {
		n, err := s.syncRef(ctx, repo, tag, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %w", repo, tag, err))
			continue
		}
		if n > 0 {
			s.log.Info("mirror synced", "repo", repo, "tag", tag, "blobs", n)
		}
	}
	return errors.Join(errs...)
}

// syncRef fetches the blobs of repo's manifest ref and of its children,
// and returns how many it fetched.
func (s *syncer) syncRef(ctx context.Context, repo, ref string, depth int) (int, error) {
	if depth > syncMaxDepth {
		return 0, fmt.Errorf("indexes nested more than %d deep: %w", syncMaxDepth, hubmesh.ErrInvalid)
	}
	m, err := s.src.GetManifest(ctx, repo, ref)
	if err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) {
			return 0, nil // untagged or deleted meanwhile
		}
		return 0, err
	}
	if _, ok := s.known[m.Digest]; ok {
		return 0, nil
	}
	fetched := 0
	for _, c := range m.Children {
		n, err := s.syncRef(ctx, repo, c.Digest.String(), depth+1)
		fetched += n
		if err != nil {
			return fetched, err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(syncFetchers)
	counts := make([]int, len(m.Blobs))
	for i, b := range m.Blobs {
		g.Go(func() error {
			bctx, cancel := context.WithTimeout(gctx, syncBlobWait)
			defer cancel()
			got, err := s.keepCounted(bctx, b.Digest)
			if got {
				counts[i] = 1
			}
			return err
		})
	}
	err = g.Wait()
	for _, c := range counts {
		fetched += c
	}
	if err != nil {
		return fetched, err
	}
	if len(s.known) >= syncMaxKnown {
		clear(s.known)
	}
	s.known[m.Digest] = struct{}{}
	return fetched, nil
}

// keepCounted keeps d and reports whether it had to be fetched.
func (s *syncer) keepCounted(ctx context.Context, d digest.Digest) (bool, error) {
	err := s.blobs.keep(ctx, d)
	if errors.Is(err, errAlreadyHere) {
		return false, nil
	}
	return err == nil, err
}

// errAlreadyHere is what keep returns when the blob was local already.
var errAlreadyHere = errors.New("blob is here already")

// keep fetches blob d from the nodes that hold it into the local store
// and keeps it there, without recording this node as a replica (a mirror
// does not count towards the replication factor). It returns
// errAlreadyHere when the store holds d.
func (b *blobs) keep(ctx context.Context, d digest.Digest) error {
	if _, err := b.store.Stat(ctx, d); err == nil {
		return errAlreadyHere
	}
	info, err := b.meta.Blob(ctx, d)
	if err != nil {
		return err
	}
	providers := b.others(info.Replicas)
	if len(providers) == 0 {
		return fmt.Errorf("blob %s: no other node holds it: %w", d, hubmesh.ErrUnavailable)
	}
	root, err := b.root(ctx, d, providers)
	if err != nil {
		return err
	}
	return b.ex.Replicate(ctx, d, info.Size, root, providers)
}
