package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/search"
)

// The search index of a node is derived from the replicated state: built
// from a full scan at start and whenever the change log cannot say what
// changed (after a snapshot restore, or when this node fell too far
// behind), and updated from the log of changed repositories as commands
// apply. A missed signal costs at most resyncEvery of staleness: the loop
// also polls.
const resyncEvery = 5 * time.Second

// repoFeed is what the index follows (consensus.Node).
type repoFeed interface {
	ScanRepositories(fn func(hubmesh.Repository) error) (uint64, error)
	ChangedRepositories(since uint64) (repos []string, upTo uint64, ok bool)
	RepositoryChanges() <-chan struct{}
	LookupRepositories(names []string) (map[string]hubmesh.Repository, error)
}

// searchIndex keeps a search.Index in step with the replicated state.
type searchIndex struct {
	feed  repoFeed
	ix    *search.Index
	log   *slog.Logger
	since uint64
	built bool
}

func newSearchIndex(feed repoFeed, log *slog.Logger) *searchIndex {
	return &searchIndex{feed: feed, ix: search.New(), log: log}
}

// Search implements registryapi.Searcher.
func (s *searchIndex) Search(q search.Query) search.Result { return s.ix.Search(q) }

// Run builds the index, then follows the changes until ctx ends.
func (s *searchIndex) Run(ctx context.Context) error {
	changes := s.feed.RepositoryChanges()
	tick := time.NewTicker(resyncEvery)
	defer tick.Stop()
	for {
		if err := s.sync(); err != nil {
			s.log.Warn("search index update failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-tick.C:
		}
	}
}

// sync applies what changed since the last call, or rebuilds.
func (s *searchIndex) sync() error {
	if !s.built {
		return s.rebuild()
	}
	names, upTo, ok := s.feed.ChangedRepositories(s.since)
	if !ok {
		return s.rebuild()
	}
	if len(names) == 0 {
		s.since = upTo
		return nil
	}
	repos, err := s.feed.LookupRepositories(names)
	if err != nil {
		return err
	}
	var ups []search.Doc
	var gone []string
	for _, name := range names {
		if r, ok := repos[name]; ok {
			ups = append(ups, search.FromRepository(r))
		} else {
			gone = append(gone, name)
		}
	}
	s.ix.Update(ups, gone)
	s.since = upTo
	return nil
}

func (s *searchIndex) rebuild() error {
	start := time.Now()
	var docs []search.Doc
	applied, err := s.feed.ScanRepositories(func(r hubmesh.Repository) error {
		docs = append(docs, search.FromRepository(r))
		return nil
	})
	if err != nil {
		return err
	}
	s.ix.Replace(docs)
	s.since, s.built = applied, true
	s.log.Debug("search index built", "repositories", len(docs), "applied", applied, "took", time.Since(start))
	return nil
}

// Pull counts are aggregated per node and flushed in one AddPulls command
// per pullFlushEvery (DESIGN.md: never a Raft write per pull).
const (
	pullFlushEvery = 10 * time.Second
	// maxPendingPulls bounds the repositories counted between flushes;
	// pulls of further repositories wait for the next period uncounted.
	maxPendingPulls = 100000
)

// pullSink is what the counter flushes to (consensus.Node).
type pullSink interface {
	AddPulls(ctx context.Context, pulls map[string]consensus.PullStat) error
}

// pullCounter implements registryapi.PullStats.
type pullCounter struct {
	sink    pullSink
	log     *slog.Logger
	mu      sync.Mutex
	pending map[string]consensus.PullStat
	dropped int
}

func newPullCounter(sink pullSink, log *slog.Logger) *pullCounter {
	return &pullCounter{sink: sink, log: log, pending: map[string]consensus.PullStat{}}
}

// Pulled counts one manifest pull of repo by ref (a tag or a digest).
func (p *pullCounter) Pulled(repo, ref string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.pending[repo]
	if !ok && len(p.pending) >= maxPendingPulls {
		p.dropped++
		return
	}
	st.Count++
	if st.Last == nil {
		st.Last = map[string]time.Time{}
	}
	if _, known := st.Last[ref]; !known && len(st.Last) >= consensus.MaxPullRefs {
		oldest := ""
		for r, t := range st.Last {
			if oldest == "" || t.Before(st.Last[oldest]) {
				oldest = r
			}
		}
		delete(st.Last, oldest)
	}
	if at.After(st.Last[ref]) {
		st.Last[ref] = at.UTC()
	}
	p.pending[repo] = st
}

// Run flushes every pullFlushEvery until ctx ends, then once more.
func (p *pullCounter) Run(ctx context.Context) error {
	tick := time.NewTicker(pullFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			p.flush(fctx)
			cancel()
			return nil
		case <-tick.C:
			p.flush(ctx)
		}
	}
}

// flush proposes the pending counts. Counts of a failed proposal go back
// (a retry after an unknown outcome may count them twice: statistics).
func (p *pullCounter) flush(ctx context.Context) {
	p.mu.Lock()
	batch := p.pending
	p.pending = map[string]consensus.PullStat{}
	if p.dropped > 0 {
		p.log.Warn("pulls not counted: too many repositories pulled between flushes", "pulls", p.dropped)
		p.dropped = 0
	}
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := p.sink.AddPulls(ctx, batch); err != nil {
		p.log.Debug("pull count flush deferred", "repositories", len(batch), "err", err)
		p.mu.Lock()
		for repo, st := range batch {
			cur := p.pending[repo]
			cur.Count += st.Count
			if cur.Last == nil {
				cur.Last = st.Last
			} else {
				for ref, t := range st.Last {
					if t.After(cur.Last[ref]) {
						cur.Last[ref] = t
					}
				}
			}
			p.pending[repo] = cur
		}
		p.mu.Unlock()
	}
}
