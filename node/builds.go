package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/build"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/registryapi"
)

// Automated builds on a node: the API adapter and the logs (buildlog.go),
// the builder (builder.go), and here the poller and the storage of logs.

const (
	// pollTick is how often the poller looks for repositories due.
	pollTick = 5 * time.Second
	// minPollInterval is the shortest interval a repository is polled at.
	minPollInterval = 5 * time.Second
	// pollListTimeout bounds listing the refs of one source.
	pollListTimeout = 30 * time.Second
	// maxPollBuilds is the most builds one poll of a repository queues
	// (the bound of one QueueBuilds command).
	maxPollBuilds = 16
	// pollHistory is how many of a repository's latest builds a poll
	// compares the remote refs with.
	pollHistory = 100
	// engineWait bounds the builder's first ping of the Docker daemon.
	engineWait = 10 * time.Second
)

// pollStore is what the poller needs from the metadata plane
// (consensus.Node).
type pollStore interface {
	AllBuildSettings() ([]hubmesh.BuildSettings, error)
	Builds(ctx context.Context, repo string, p hubmesh.Page) ([]hubmesh.Build, error)
	QueueBuilds(ctx context.Context, b []hubmesh.Build) ([]hubmesh.Build, error)
}

// buildPoller queues builds for new commits of the autobuild rules'
// branches and tags of repositories whose settings ask for polling
// (PollSeconds). It runs on every builder; builders do not coordinate,
// but each compares the remote with the build history (a fresh read)
// before it queues, and polls at a random phase, so a new commit is
// rarely built twice.
type buildPoller struct {
	store pollStore
	list  func(ctx context.Context, src build.Source) (map[string]string, error)
	now   func() time.Time
	log   *slog.Logger

	next map[string]time.Time // repository -> when it is polled next
	// queued remembers what this poller queued (repository, ref and tags
	// -> commit), so that a commit whose build failed is not queued again
	// at every poll.
	queued map[string]string
	// baselined holds the repositories whose tags this poller has seen
	// once. Tags that exist when a poller first looks are not built: a
	// regex rule over a repository with hundreds of old release tags must
	// not queue a build of each. Tags that appear later are.
	baselined map[string]bool
}

func newBuildPoller(store pollStore, log *slog.Logger) *buildPoller {
	return &buildPoller{store: store, list: build.ListRefs, now: time.Now, log: log,
		next: map[string]time.Time{}, queued: map[string]string{}, baselined: map[string]bool{}}
}

// Run polls until ctx ends.
func (p *buildPoller) Run(ctx context.Context) error {
	t := time.NewTicker(pollTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		p.round(ctx)
	}
}

// round polls the repositories that are due.
func (p *buildPoller) round(ctx context.Context) {
	all, err := p.store.AllBuildSettings()
	if err != nil {
		p.log.Warn("build poll: settings", "err", err)
		return
	}
	now := p.now()
	seen := map[string]bool{}
	for _, s := range all {
		if s.PollSeconds <= 0 || ctx.Err() != nil {
			continue
		}
		seen[s.Repo] = true
		every := max(time.Duration(s.PollSeconds)*time.Second, minPollInterval)
		next, ok := p.next[s.Repo]
		if !ok {
			// First sight: start at a random phase, so that builders
			// started together do not poll together.
			next = now.Add(rand.N(every))
		}
		if now.Before(next) {
			p.next[s.Repo] = next
			continue
		}
		p.next[s.Repo] = now.Add(every)
		n, err := p.poll(ctx, s)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("build poll", "repo", s.Repo, "err", err)
			}
			continue
		}
		if n > 0 {
			p.log.Info("build poll queued builds", "repo", s.Repo, "builds", n)
		}
	}
	for repo := range p.next {
		if !seen[repo] {
			delete(p.next, repo)
			delete(p.baselined, repo)
		}
	}
	for k := range p.queued {
		if !seen[strings.SplitN(k, "\x00", 2)[0]] {
			delete(p.queued, k)
		}
	}
}

// poll lists the remote refs of s and queues a build for every autobuild
// target whose commit was not built (or queued) yet. It returns how many
// builds it queued.
func (p *buildPoller) poll(ctx context.Context, s hubmesh.BuildSettings) (int, error) {
	rules, err := build.RulesOf(s.Rules)
	if err != nil {
		return 0, err
	}
	lctx, cancel := context.WithTimeout(ctx, pollListTimeout)
	refs, err := p.list(lctx, build.SourceOf(s.Source))
	cancel()
	if err != nil {
		return 0, err
	}
	hist, err := p.store.Builds(ctx, s.Repo, hubmesh.Page{N: pollHistory})
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(refs))
	for name := range refs {
		names = append(names, name)
	}
	slices.Sort(names)
	var queue []hubmesh.Build
	now := p.now().UTC()
	first := !p.baselined[s.Repo]
	p.baselined[s.Repo] = true
	for _, ref := range names {
		st, name := build.SourceBranch, ""
		if n, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
			name = n
		} else if n, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
			st, name = build.SourceTag, n
		} else {
			continue
		}
		commit := refs[ref]
		for _, t := range build.Match(rules, st, name) {
			key := s.Repo + "\x00" + string(st) + ":" + name + "\x00" + strings.Join(t.Tags, ",")
			if !t.Autobuild || p.queued[key] == commit || built(hist, t, commit) {
				continue
			}
			if first && st == build.SourceTag {
				p.queued[key] = commit // existing when first seen: not built
				continue
			}
			if len(queue) == maxPollBuilds {
				break
			}
			p.queued[key] = commit
			queue = append(queue, hubmesh.Build{
				Repo: s.Repo, Trigger: hubmesh.TriggerPoll, SourceType: string(t.SourceType), SourceName: t.SourceName,
				Commit: commit, Tags: t.Tags, Dockerfile: t.Dockerfile, Context: t.Context, BuildCache: t.BuildCache,
				Created: now,
			})
		}
	}
	if len(queue) == 0 {
		return 0, nil
	}
	if _, err := p.store.QueueBuilds(ctx, queue); err != nil {
		for _, b := range queue {
			delete(p.queued, s.Repo+"\x00"+b.SourceType+":"+b.SourceName+"\x00"+strings.Join(b.Tags, ","))
		}
		return 0, err
	}
	return len(queue), nil
}

// built reports whether the latest build of t's source ref and tags in
// hist (newest first) is of commit, or is still to check out its commit:
// then a poll has nothing new to build.
func built(hist []hubmesh.Build, t build.Target, commit string) bool {
	for _, b := range hist {
		if b.SourceType != string(t.SourceType) || b.SourceName != t.SourceName || !slices.Equal(b.Tags, t.Tags) {
			continue
		}
		if b.State == hubmesh.BuildCancelled {
			continue
		}
		if b.Commit == commit {
			return true
		}
		if b.Commit == "" && !hubmesh.BuildFinished(b.State) {
			return true // the tip is about to be built
		}
		return false
	}
	return false
}

// logStore stores finished build logs as blobs of their repository, with
// this node as a replica, and copies them to R nodes like pushed blobs.
type logStore struct {
	store *mesh.Store
	links interface {
		LinkBlob(ctx context.Context, repo string, desc hubmesh.Descriptor) error
	}
}

// keep implements builder.keep.
func (s logStore) keep(ctx context.Context, repo string, d digest.Digest, size int64, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := s.store.Put(ctx, d, f); err != nil {
		return fmt.Errorf("store log %s: %w", d, err)
	}
	return s.links.LinkBlob(ctx, repo, hubmesh.Descriptor{MediaType: buildLogMediaType, Digest: d, Size: size})
}

// setUpBuilder makes this node a builder (--builder): it checks that the
// Docker daemon answers, so that a node that cannot build fails at start
// with one clear line, and prepares the builder and the poller that Run
// starts once the node serves.
func (n *Node) setUpBuilder(ctx context.Context, access *registryapi.Auth, logger *slog.Logger) error {
	engine, err := build.NewEngine(n.cfg.BuilderDockerHost)
	if err != nil {
		return fmt.Errorf("builder-docker-host: %w", err)
	}
	n.closers = append(n.closers, engine.Close)
	pctx, cancel := context.WithTimeout(ctx, engineWait)
	defer cancel()
	if err := engine.Ping(pctx); err != nil {
		return fmt.Errorf("builder: the Docker daemon at %s does not answer (--builder-docker-host): %w", n.cfg.BuilderDockerHost, err)
	}
	workDir := filepath.Join(n.cfg.DataDir, dirBuilds, "work")
	if err := os.RemoveAll(workDir); err != nil { // left by a crash
		return fmt.Errorf("builder: %w", err)
	}
	registry := n.cfg.BuilderRegistry
	if registry == "" {
		registry = loopbackAddr(n.ln.Addr().String())
	}
	log := logger.With("component", "builder")
	steps := &dockerSteps{settings: n.meta, engine: engine, registry: registry, token: access.BuildToken, workDir: workDir, log: log}
	n.builder = newBuilder(n.host.ID(), n.meta, n.buildLogs, n.cfg, log)
	n.builder.steps = steps.run
	n.builder.keep = logStore{store: n.store, links: replicatingLinks{Node: n.meta, blobs: n.blobs, bg: n.bg}}.keep
	n.poller = newBuildPoller(n.meta, log)
	return nil
}

// loopbackAddr is addr with an unspecified host replaced by 127.0.0.1.
func loopbackAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// localBuildSettings reads build settings from this node's state only: the
// push check asks for them on every push, and a miss (no automated builds,
// nearly every repository) must not cost a round trip to the leader.
type localBuildSettings struct{ meta *consensus.Node }

func (l localBuildSettings) BuildSettings(_ context.Context, repo string) (hubmesh.BuildSettings, error) {
	return l.meta.LocalBuildSettings(repo)
}
