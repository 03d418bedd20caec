package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Social state of repositories: stars, pull counts and the official flag,
// and the log of changed repository records that the search index of a
// node follows. Keys (see keys.go):
//
//	star/<repo>\x00<user>      time starred (RFC 3339): the users who starred a repository
//	starred/<user>\x00<repo>   the same time: a user's starred repositories
//	pull/<repo>\x00<ref>       uint64 BE unix nanoseconds: last pull by tag or digest
//	official/<ns>              empty: every repository of namespace ns is official
//
// Star counts and pull counts live in the repository record (repoRecord),
// so one read gives the index everything it ranks by.

// Limits of AddPulls.
const (
	// MaxPullBatch is the most repositories one AddPulls carries.
	MaxPullBatch = 5000
	// MaxPullRefs is the most references (tags, digests) per repository
	// whose last pull time one AddPulls records.
	MaxPullRefs = 64
)

// Star records that User starred Repo at At. Starring again changes
// nothing, so the command is safe to retry. The user and the repository
// must exist.
type Star struct {
	User string    `json:"user"`
	Repo string    `json:"repo"`
	At   time.Time `json:"at"`
}

// Unstar removes User's star from Repo; removing a star that is not there
// changes nothing.
type Unstar struct {
	User string `json:"user"`
	Repo string `json:"repo"`
}

// PullStat is what one node counted for one repository since its last
// flush: the number of manifest GETs and the last time each reference (a
// tag or a digest) was pulled.
type PullStat struct {
	Count int64                `json:"count"`
	Last  map[string]time.Time `json:"last,omitempty"`
}

// AddPulls adds pull counts to repositories and raises their last-pulled
// times (which never go back). Repositories that no longer exist are
// skipped. Counts add up, so a retry after an unknown outcome may count
// some pulls twice: pull counts are statistics, not accounts.
type AddPulls struct {
	Pulls map[string]PullStat `json:"pulls"`
}

// SetOfficial sets or clears the official flag of one repository (Repo)
// or of a whole namespace (Namespace), exactly one of them. A namespace
// need not be owned by anyone ("library"); the flag covers the
// repositories created in it later too.
type SetOfficial struct {
	Repo      string `json:"repo,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Official  bool   `json:"official"`
}

// Type implements Command.
func (*Star) Type() Type { return TypeStar }

// Type implements Command.
func (*Unstar) Type() Type { return TypeUnstar }

// Type implements Command.
func (*AddPulls) Type() Type { return TypeAddPulls }

// Type implements Command.
func (*SetOfficial) Type() Type { return TypeSetOfficial }

var (
	prefixStar     = []byte("star/")
	prefixStarred  = []byte("starred/")
	prefixPull     = []byte("pull/")
	prefixOfficial = []byte("official/")
)

func starKey(repo, user string) []byte    { return key(prefixStar, repo, user) }
func starredKey(user, repo string) []byte { return key(prefixStarred, user, repo) }
func pullKey(repo, ref string) []byte     { return key(prefixPull, repo, ref) }
func officialKey(ns string) []byte        { return key(prefixOfficial, ns) }

// checkNamespace checks a namespace: one component of a repository name.
func checkNamespace(ns string) error {
	if ns == "" || strings.Contains(ns, "/") || checkRepo(ns) != nil {
		return fmt.Errorf("%w: namespace %q", hubmesh.ErrInvalid, ns)
	}
	return nil
}

// checkRef checks a reference: a tag or a digest.
func checkRef(ref string) error {
	if strings.Contains(ref, ":") {
		return checkDigest("reference", digest.Digest(ref))
	}
	return checkTag(ref)
}

func (c *Star) validate() error {
	if err := checkName("user", c.User); err != nil {
		return err
	}
	return checkRepo(c.Repo)
}

func (c *Unstar) validate() error {
	if err := checkName("user", c.User); err != nil {
		return err
	}
	return checkRepo(c.Repo)
}

func (c *AddPulls) validate() error {
	if len(c.Pulls) > MaxPullBatch {
		return fmt.Errorf("%w: pulls of %d repositories, at most %d", hubmesh.ErrInvalid, len(c.Pulls), MaxPullBatch)
	}
	for repo, st := range c.Pulls {
		if err := checkRepo(repo); err != nil {
			return err
		}
		if st.Count < 0 {
			return fmt.Errorf("%w: pulls of %s: negative count %d", hubmesh.ErrInvalid, repo, st.Count)
		}
		if len(st.Last) > MaxPullRefs {
			return fmt.Errorf("%w: pulls of %s: %d references, at most %d", hubmesh.ErrInvalid, repo, len(st.Last), MaxPullRefs)
		}
		for ref := range st.Last {
			if err := checkRef(ref); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *SetOfficial) validate() error {
	switch {
	case c.Repo != "" && c.Namespace == "":
		return checkRepo(c.Repo)
	case c.Repo == "" && c.Namespace != "":
		return checkNamespace(c.Namespace)
	}
	return fmt.Errorf("%w: set official: name exactly one repository or one namespace", hubmesh.ErrInvalid)
}

// repoView is the API view of rec, official when its namespace is.
func (tx *txn) repoView(repo string, rec *repoRecord) hubmesh.Repository {
	r := rec.repository(repo)
	if !r.IsOfficial {
		if ns := hubmesh.RepoOf(repo); ns != "" {
			r.IsOfficial = tx.has(officialKey(ns))
		}
	}
	return r
}

func (c *Star) apply(tx *txn) (any, error) {
	if !tx.has(userKey(c.User)) {
		return nil, fmt.Errorf("star: user %s: %w", c.User, hubmesh.ErrNotFound)
	}
	var rec repoRecord
	if !tx.getJSON(repoKey(c.Repo), &rec) {
		return nil, fmt.Errorf("star: repository %s: %w", c.Repo, hubmesh.ErrRepoUnknown)
	}
	if tx.has(starKey(c.Repo, c.User)) {
		return nil, nil
	}
	at := []byte(c.At.UTC().Format(time.RFC3339Nano))
	tx.set(starKey(c.Repo, c.User), at)
	tx.set(starredKey(c.User, c.Repo), at)
	rec.StarCount++
	tx.setJSON(repoKey(c.Repo), rec)
	return nil, nil
}

func (c *Unstar) apply(tx *txn) (any, error) {
	if !tx.has(starKey(c.Repo, c.User)) {
		return nil, nil
	}
	tx.unstar(c.User, c.Repo)
	return nil, nil
}

// unstar removes an existing star and lowers the repository's count.
func (tx *txn) unstar(user, repo string) {
	tx.del(starKey(repo, user))
	tx.del(starredKey(user, repo))
	var rec repoRecord
	if tx.getJSON(repoKey(repo), &rec) && rec.StarCount > 0 {
		rec.StarCount--
		tx.setJSON(repoKey(repo), rec)
	}
}

func (c *AddPulls) apply(tx *txn) (any, error) {
	// Map order is random; keep the writes in one order.
	for _, repo := range slices.Sorted(maps.Keys(c.Pulls)) {
		var rec repoRecord
		if !tx.getJSON(repoKey(repo), &rec) {
			continue // deleted since it was pulled
		}
		st := c.Pulls[repo]
		if st.Count > 0 {
			rec.PullCount += st.Count
			tx.setJSON(repoKey(repo), rec)
		}
		refs := make([]string, 0, len(st.Last))
		for ref := range st.Last {
			refs = append(refs, ref)
		}
		slices.Sort(refs)
		for _, ref := range refs {
			at := st.Last[ref].UnixNano()
			k := pullKey(repo, ref)
			if old, ok := tx.get(k); ok && int64(readU64(old)) >= at {
				continue
			}
			tx.set(k, u64(uint64(at)))
		}
	}
	return nil, nil
}

func (c *SetOfficial) apply(tx *txn) (any, error) {
	if c.Repo != "" {
		var rec repoRecord
		if !tx.getJSON(repoKey(c.Repo), &rec) {
			return nil, fmt.Errorf("repository %s: %w", c.Repo, hubmesh.ErrRepoUnknown)
		}
		if rec.IsOfficial != c.Official {
			rec.IsOfficial = c.Official
			tx.setJSON(repoKey(c.Repo), rec)
		}
		return nil, nil
	}
	k := officialKey(c.Namespace)
	switch had := tx.has(k); {
	case c.Official && !had:
		tx.set(k, nil)
	case !c.Official && had:
		tx.del(k)
	default:
		return nil, nil
	}
	// The records of the namespace did not change, but what they read as
	// did: the index must look at them again.
	for _, rk := range tx.keys(append(bytes.Clone(prefixRepo), c.Namespace+"/"...)) {
		tx.markRepo(string(rk[len(prefixRepo):]))
	}
	return nil, nil
}

// deleteRepoSocial removes the stars and pull times of the repositories
// of s (the stars from their users' lists too), and the official flag of
// a deleted namespace.
func (tx *txn) deleteRepoSocial(s repoSet) {
	for _, k := range tx.keys(s.under(prefixStar)) {
		repo, user := split2(string(k[len(prefixStar):]))
		tx.del(k)
		tx.del(starredKey(user, repo))
	}
	for _, k := range tx.keys(s.under(prefixPull)) {
		tx.del(k)
	}
	if s.ns != "" && tx.has(officialKey(s.ns)) {
		tx.del(officialKey(s.ns))
	}
}

// deleteStarsOf removes every star of user.
func (tx *txn) deleteStarsOf(user string) {
	pre := scope(prefixStarred, user)
	for _, k := range tx.keys(pre) {
		tx.unstar(user, string(k[len(pre):]))
	}
}

// noteRepo records that k, when it is a repository record, was written.
func (tx *txn) noteRepo(k []byte) {
	if bytes.HasPrefix(k, prefixRepo) {
		tx.markRepo(string(k[len(prefixRepo):]))
	}
}

func (tx *txn) markRepo(repo string) {
	if tx.repos == nil {
		tx.repos = make(map[string]struct{})
	}
	tx.repos[repo] = struct{}{}
}

// ---- reads ----

// readRepository reads the record of name from r, official when its
// namespace is.
func readRepository(r reader, name string) (hubmesh.Repository, bool, error) {
	var rec repoRecord
	ok, err := readJSON(r, repoKey(name), &rec)
	if err != nil || !ok {
		return hubmesh.Repository{}, ok, err
	}
	repo := rec.repository(name)
	if ns := hubmesh.RepoOf(name); !repo.IsOfficial && ns != "" {
		if repo.IsOfficial, err = has(r, officialKey(ns)); err != nil {
			return hubmesh.Repository{}, false, err
		}
	}
	return repo, true, nil
}

// Star records that user starred repo at at (idempotent). An unknown user
// wraps hubmesh.ErrNotFound, an unknown repository hubmesh.ErrRepoUnknown.
func (n *Node) Star(ctx context.Context, user, repo string, at time.Time) error {
	return n.propose(ctx, &Star{User: user, Repo: repo, At: at})
}

// Unstar removes user's star from repo (idempotent).
func (n *Node) Unstar(ctx context.Context, user, repo string) error {
	return n.propose(ctx, &Unstar{User: user, Repo: repo})
}

// Starred lists the repositories user starred, in name order, page p of
// them.
func (n *Node) Starred(ctx context.Context, user string, p hubmesh.Page) ([]string, error) {
	if err := checkName("user", user); err != nil {
		return nil, err
	}
	return n.fsm.readSuffixes(scope(prefixStarred, user), p)
}

// Starrers lists the users who starred repo, in name order.
func (n *Node) Starrers(ctx context.Context, repo string, p hubmesh.Page) ([]string, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	return n.fsm.readSuffixes(scope(prefixStar, repo), p)
}

// AddPulls adds pull statistics, in as few commands as MaxPullBatch
// allows (none for an empty map). References beyond MaxPullRefs per
// repository keep only the most recent.
func (n *Node) AddPulls(ctx context.Context, pulls map[string]PullStat) error {
	return applyInBatches(ctx, n, pulls, MaxPullBatch, func(b map[string]PullStat) Command {
		for repo, st := range b {
			if len(st.Last) > MaxPullRefs {
				st.Last = newestRefs(st.Last, MaxPullRefs)
				b[repo] = st
			}
		}
		return &AddPulls{Pulls: b}
	})
}

// newestRefs keeps the n most recent entries of last.
func newestRefs(last map[string]time.Time, n int) map[string]time.Time {
	refs := slices.SortedFunc(maps.Keys(last), func(a, b string) int { return last[b].Compare(last[a]) })
	out := make(map[string]time.Time, n)
	for _, ref := range refs[:n] {
		out[ref] = last[ref]
	}
	return out
}

// SetOfficial sets or clears the official flag of repository repo, or of
// namespace ns (exactly one of them). An unknown repository wraps
// hubmesh.ErrRepoUnknown.
func (n *Node) SetOfficial(ctx context.Context, repo, ns string, official bool) error {
	return n.propose(ctx, &SetOfficial{Repo: repo, Namespace: ns, Official: official})
}

// OfficialNamespaces lists the namespaces flagged official, in name order.
func (n *Node) OfficialNamespaces(ctx context.Context) ([]string, error) {
	return n.fsm.readSuffixes(prefixOfficial, hubmesh.Page{})
}

// PullTimes returns the last time each reference (tag or digest) of repo
// was pulled, as far as the flushed statistics tell.
func (n *Node) PullTimes(ctx context.Context, repo string) (map[string]time.Time, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	pre := scope(prefixPull, repo)
	out := map[string]time.Time{}
	err := n.fsm.read(func(r reader) error {
		return scan(r, pre, nil, 0, func(k, v []byte) error {
			out[string(k[len(pre):])] = time.Unix(0, int64(readU64(v))).UTC()
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ScanRepositories calls fn with every repository, in name order, from
// one consistent snapshot of the local state, and returns the applied
// index the snapshot is at least as new as: pass it to
// ChangedRepositories to follow the changes from there.
func (n *Node) ScanRepositories(fn func(hubmesh.Repository) error) (uint64, error) {
	applied := n.fsm.applied.Load() // before the snapshot: it holds at least this
	err := n.fsm.readSnapshot(func(r reader) error {
		official := map[string]bool{}
		if err := scan(r, prefixOfficial, nil, 0, func(k, _ []byte) error {
			official[string(k[len(prefixOfficial):])] = true
			return nil
		}); err != nil {
			return err
		}
		return scan(r, prefixRepo, nil, 0, func(k, v []byte) error {
			var rec repoRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("corrupt value of %q: %w", k, err)
			}
			name := string(k[len(prefixRepo):])
			repo := rec.repository(name)
			repo.IsOfficial = repo.IsOfficial || official[repo.Namespace]
			return fn(repo)
		})
	})
	if err != nil {
		return 0, err
	}
	return applied, nil
}

// LookupRepositories reads the named repositories from one snapshot of
// the local state (no read barrier); names that do not exist are absent
// from the result.
func (n *Node) LookupRepositories(names []string) (map[string]hubmesh.Repository, error) {
	out := make(map[string]hubmesh.Repository, len(names))
	err := n.fsm.readSnapshot(func(r reader) error {
		for _, name := range names {
			repo, ok, err := readRepository(r, name)
			if err != nil {
				return err
			}
			if ok {
				out[name] = repo
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ChangedRepositories returns the repositories whose records changed
// after applied index since, and the index the answer is complete up to
// (pass it as since next time). ok is false when the log no longer
// reaches back to since — it overflowed, or a snapshot replaced the
// state — and the caller must start over from ScanRepositories.
func (n *Node) ChangedRepositories(since uint64) (repos []string, upTo uint64, ok bool) {
	return n.fsm.repos.since(since)
}

// RepositoryChanges is signalled (coalesced, never blocking the FSM) after
// repository records changed or a snapshot was restored. It has one
// consumer: the node's search index. A signal may be missed only while
// the consumer is busy, and it calls ChangedRepositories then anyway.
func (n *Node) RepositoryChanges() <-chan struct{} { return n.fsm.repos.signal() }

// maxRepoLog bounds the changed-repository log kept in memory.
const maxRepoLog = 1 << 16

// repoLog is the in-memory log of changed repository names by applied
// index. Changes at or below floor may be missing from it; everything
// after floor up to covered is in it.
type repoLog struct {
	mu      sync.Mutex
	floor   uint64
	covered uint64
	entries []repoChange // ascending index
	notify  chan struct{}
}

type repoChange struct {
	index uint64
	repo  string
}

func (l *repoLog) signal() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.notify == nil {
		l.notify = make(chan struct{}, 1)
	}
	return l.notify
}

func (l *repoLog) wake() {
	if l.notify == nil {
		l.notify = make(chan struct{}, 1)
	}
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// reset forgets every change: the state is now at applied, and readers
// behind it must rebuild.
func (l *repoLog) reset(applied uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.floor, l.covered, l.entries = applied, applied, nil
	l.wake()
}

// add records the repositories changed by the batch that ends at index.
func (l *repoLog) add(index uint64, repos map[string]struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.covered = index
	if len(repos) == 0 {
		return
	}
	for _, r := range slices.Sorted(maps.Keys(repos)) {
		l.entries = append(l.entries, repoChange{index: index, repo: r})
	}
	if len(l.entries) > maxRepoLog {
		drop := len(l.entries) - maxRepoLog/2
		l.floor = max(l.floor, l.entries[drop-1].index)
		l.entries = slices.Clone(l.entries[drop:])
	}
	l.wake()
}

func (l *repoLog) since(since uint64) ([]string, uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if since < l.floor {
		return nil, l.covered, false
	}
	i, _ := slices.BinarySearchFunc(l.entries, since+1, func(c repoChange, idx uint64) int {
		switch {
		case c.index < idx:
			return -1
		case c.index > idx:
			return 1
		}
		return 0
	})
	seen := make(map[string]bool, len(l.entries)-i)
	var out []string
	for _, c := range l.entries[i:] {
		if !seen[c.repo] {
			seen[c.repo] = true
			out = append(out, c.repo)
		}
	}
	return out, max(l.covered, since), true
}
