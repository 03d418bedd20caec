package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
)

// blobProtocol carries the node-to-node blob requests: "root" asks a
// holder for the chunk root of a blob, "replicate" asks a node to fetch a
// blob and record itself as a replica.
const blobProtocol = "/hubmesh/blob/1.0.0"

// replicaWait bounds how long a manifest PUT waits for its blobs to reach
// min(R, voters) nodes before it fails with 503.
const replicaWait = 2 * time.Minute

type blobRequest struct {
	Op        string        `json:"op"` // root | replicate
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size,omitempty"`
	Providers []string      `json:"providers,omitempty"`
}

type blobResponse struct {
	Root string `json:"root,omitempty"`
}

// blobs is the content plane as the API sees it: the local store first,
// then the peers that hold a replica, streamed while the blob arrives. It
// also keeps pushes durable: blobs are copied to R nodes and a manifest is
// acknowledged only once they are.
type blobs struct {
	bg       context.Context // the node's lifetime
	inflight singleflight.Group
	self     string
	replicas int
	store    *mesh.Store
	ex       *mesh.Exchange
	host     *mesh.Host
	meta     *consensus.Node
	log      *slog.Logger
}

// Open implements registryapi.Blobs.
func (b *blobs) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	rc, size, err := b.store.Open(ctx, d)
	if err == nil || !errors.Is(err, hubmesh.ErrBlobUnknown) {
		return rc, size, err
	}
	info, err := b.meta.Blob(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	// Being fetched here already: join that transfer, whoever holds it.
	if r, err := b.ex.Attach(ctx, d); r != nil || err != nil {
		if err != nil {
			return nil, 0, err
		}
		return &forwardSeeker{r: r}, info.Size, nil
	}
	r, err := b.fetch(ctx, info)
	if err != nil {
		// A transfer that ended between the first look and now has
		// installed the blob: serve it rather than fail.
		if rc, size, serr := b.store.Open(ctx, d); serr == nil {
			return rc, size, nil
		}
		return nil, 0, err
	}
	return &forwardSeeker{r: r}, info.Size, nil
}

// fetch streams a blob this node lacks from the nodes that hold it.
func (b *blobs) fetch(ctx context.Context, info consensus.BlobInfo) (io.ReadCloser, error) {
	providers := b.others(info.Replicas)
	if len(providers) == 0 {
		return nil, fmt.Errorf("blob %s: no other node holds it: %w", info.Digest, hubmesh.ErrBlobUnknown)
	}
	root, err := b.root(ctx, info.Digest, providers)
	if err != nil {
		return nil, err
	}
	return b.ex.Fetch(ctx, info.Digest, info.Size, root, providers)
}

// Stat implements registryapi.Blobs.
func (b *blobs) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if size, err := b.store.Stat(ctx, d); err == nil || !errors.Is(err, hubmesh.ErrBlobUnknown) {
		return size, err
	}
	info, err := b.meta.Blob(ctx, d)
	if err != nil {
		return 0, err
	}
	if len(b.others(info.Replicas)) == 0 {
		return 0, fmt.Errorf("blob %s: no node holds it: %w", d, hubmesh.ErrBlobUnknown)
	}
	return info.Size, nil
}

// others returns the holders other than this node, those it is connected
// to first, in random order otherwise (to spread the load).
func (b *blobs) others(replicas []string) []string {
	var out []string
	for _, r := range replicas {
		if r != b.self {
			out = append(out, r)
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, c string) int {
		return boolRank(b.reachable(a)) - boolRank(b.reachable(c))
	})
	return out
}

// rootTimeout bounds one holder's answer to a chunk-root request, so that a
// holder that is down costs little before the next is asked.
const rootTimeout = 3 * time.Second

// root asks the holders, one after the other, for the chunk root of d.
func (b *blobs) root(ctx context.Context, d digest.Digest, providers []string) (string, error) {
	req, _ := json.Marshal(blobRequest{Op: "root", Digest: d})
	var errs []error
	for _, p := range providers {
		cctx, cancel := context.WithTimeout(ctx, rootTimeout)
		out, err := b.host.Call(cctx, p, blobProtocol, req)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var resp blobResponse
		if err := json.Unmarshal(out, &resp); err != nil || resp.Root == "" {
			errs = append(errs, fmt.Errorf("peer %s: bad root answer", p))
			continue
		}
		return resp.Root, nil
	}
	return "", fmt.Errorf("blob %s: no holder answered: %w", d, errors.Join(errs...))
}

// serveRPC answers blobProtocol requests from other members.
func (b *blobs) serveRPC(ctx context.Context, from string, raw []byte) ([]byte, error) {
	var req blobRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("blob request: %v: %w", err, hubmesh.ErrInvalid)
	}
	if err := req.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob request: %v: %w", err, hubmesh.ErrInvalid)
	}
	switch req.Op {
	case "root":
		root, err := b.ex.ChunkRoot(ctx, req.Digest)
		if err != nil {
			return nil, err
		}
		return json.Marshal(blobResponse{Root: root})
	case "replicate":
		if err := b.fetchAndRecord(ctx, req.Digest, req.Size, req.Providers); err != nil {
			return nil, err
		}
		return json.Marshal(blobResponse{})
	default:
		return nil, fmt.Errorf("blob request: unknown op %q: %w", req.Op, hubmesh.ErrInvalid)
	}
}

// fetchAndRecord copies d here from providers and records this node as a
// replica.
func (b *blobs) fetchAndRecord(ctx context.Context, d digest.Digest, size int64, providers []string) error {
	if _, err := b.store.Stat(ctx, d); err != nil {
		providers = b.others(providers)
		root, err := b.root(ctx, d, providers)
		if err != nil {
			return err
		}
		if err := b.ex.Replicate(ctx, d, size, root, providers); err != nil {
			return err
		}
	}
	return b.meta.AddReplica(ctx, d, size, b.self)
}

// need is how many nodes must hold a blob before a push is acknowledged.
func (b *blobs) need() int {
	servers, _ := b.meta.Servers() // on error, no voters: need is 1
	return b.needOf(servers)
}

// needOf is need for a known Raft configuration: min(R, voters), at least 1.
func (b *blobs) needOf(servers []consensus.Server) int {
	voters := 0
	for _, s := range servers {
		if s.Suffrage == consensus.RoleVoter {
			voters++
		}
	}
	return max(1, min(b.replicas, voters))
}

// reaskFirst and reaskEvery are how long restore waits for the nodes it
// asked before it asks others too: soon the first time (a peer that just
// dropped off may still look connected), then less often.
const (
	reaskFirst = time.Second
	reaskEvery = 3 * time.Second
)

// ensureReplicas returns once d is on need() nodes, asking other voters
// to copy it when it is not. Concurrent callers for one blob (the early
// replication after the upload and the manifest PUT) share one effort, so
// a blob is not copied to more nodes than asked.
func (b *blobs) ensureReplicas(ctx context.Context, d digest.Digest) error {
	ch := b.inflight.DoChan(d.String(), func() (any, error) {
		rctx, cancel := context.WithTimeout(b.bg, replicaWait)
		defer cancel()
		return nil, b.restore(rctx, d, b.need(), nil)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("blob %s: waiting for replicas: %w: %w", d, hubmesh.ErrUnavailable, ctx.Err())
	}
}

// restore returns once d is on need nodes that are not in dead, asking
// voters that lack it (reachable ones first) to copy it, and asking more
// when the first ones do not deliver within reaskEvery.
func (b *blobs) restore(ctx context.Context, d digest.Digest, need int, dead map[string]bool) error {
	asked := map[string]bool{}
	var lastAsk time.Time
	wait := reaskFirst
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := b.meta.Blob(ctx, d)
		if errors.Is(err, hubmesh.ErrNotFound) {
			return nil // never pushed: the manifest PUT reports MANIFEST_BLOB_UNKNOWN
		}
		if err != nil {
			return err
		}
		live := slices.DeleteFunc(slices.Clone(info.Replicas), func(id string) bool { return dead[id] })
		if len(live) >= need {
			return nil
		}
		if len(live) == 0 {
			return fmt.Errorf("blob %s: no live node holds it: %w", d, hubmesh.ErrUnavailable)
		}
		if b.meta.Stats().LeaderID == "" {
			// Without quorum no replica can be recorded: fail now rather
			// than hold the client until the deadline.
			return fmt.Errorf("blob %s is on %d of %d nodes and there is no raft leader: %w", d, len(live), need, hubmesh.ErrUnavailable)
		}
		if lastAsk.IsZero() || time.Since(lastAsk) >= wait {
			if !lastAsk.IsZero() {
				wait = reaskEvery
			}
			info.Replicas = live
			b.askReplicas(ctx, info, need-len(live), asked, dead)
			lastAsk = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("blob %s is on %d of %d nodes: %w", d, len(live), need, hubmesh.ErrUnavailable)
		case <-tick.C:
		}
	}
}

// askReplicas asks up to n voters that lack the blob, have not been asked
// and are not dead to fetch it from its live holders. Reachable voters go
// first; when every candidate was asked, the round starts over.
func (b *blobs) askReplicas(ctx context.Context, info consensus.BlobInfo, n int, asked, dead map[string]bool) {
	servers, err := b.meta.Servers()
	if err != nil {
		b.log.Warn("replicate: raft configuration", "err", err)
		return
	}
	var cands []string
	for _, s := range servers {
		if s.Suffrage == consensus.RoleVoter && !dead[s.ID] && !slices.Contains(info.Replicas, s.ID) {
			cands = append(cands, s.ID)
		}
	}
	fresh := slices.DeleteFunc(slices.Clone(cands), func(id string) bool { return asked[id] })
	if len(fresh) == 0 {
		clear(asked)
		fresh = cands
	}
	rand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	slices.SortStableFunc(fresh, func(a, c string) int {
		return boolRank(b.reachable(a)) - boolRank(b.reachable(c))
	})
	req, _ := json.Marshal(blobRequest{Op: "replicate", Digest: info.Digest, Size: info.Size, Providers: info.Replicas})
	for _, peer := range fresh[:min(n, len(fresh))] {
		asked[peer] = true
		go func() {
			if peer == b.self {
				if err := b.fetchAndRecord(ctx, info.Digest, info.Size, info.Replicas); err != nil {
					b.log.Warn("replicate here", "digest", info.Digest, "err", err)
				}
				return
			}
			if _, err := b.host.Call(ctx, peer, blobProtocol, req); err != nil {
				b.log.Warn("replicate on peer", "digest", info.Digest, "peer", peer, "err", err)
			}
		}()
	}
}

func (b *blobs) reachable(id string) bool { return id == b.self || b.host.Connected(id) }

// boolRank orders true before false.
func boolRank(v bool) int {
	if v {
		return 0
	}
	return 1
}

// forwardSeeker lets the API seek once, forward, on a blob that is still
// arriving: it reads and discards up to the offset.
type forwardSeeker struct {
	r   io.ReadCloser
	pos int64
}

func (f *forwardSeeker) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.pos += int64(n)
	return n, err
}

func (f *forwardSeeker) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart || off < f.pos {
		return f.pos, fmt.Errorf("seek on a blob that is still arriving: only forward from the start: %w", hubmesh.ErrRangeInvalid)
	}
	n, err := io.CopyN(io.Discard, f.r, off-f.pos)
	f.pos += n
	return f.pos, err
}

func (f *forwardSeeker) Close() error { return f.r.Close() }

// durableManifests acknowledges a manifest only once every blob it
// references is on min(R, voters) nodes.
type durableManifests struct {
	*consensus.Node
	blobs *blobs
}

// PutManifest implements registryapi.Manifests.
func (m durableManifests) PutManifest(ctx context.Context, man *hubmesh.Manifest, tags []string) error {
	if m.blobs.need() > 1 {
		wctx, cancel := context.WithTimeout(ctx, replicaWait)
		defer cancel()
		g, gctx := errgroup.WithContext(wctx)
		for _, b := range man.Blobs {
			d := b.Digest
			g.Go(func() error { return m.blobs.ensureReplicas(gctx, d) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return m.Node.PutManifest(ctx, man, tags)
}

// replicatingLinks starts copying a blob to other nodes as soon as it is
// linked, so that the manifest PUT that follows finds it replicated.
type replicatingLinks struct {
	*consensus.Node
	blobs *blobs
	bg    context.Context // the node's lifetime
}

// LinkBlob implements registryapi.BlobLinks.
func (l replicatingLinks) LinkBlob(ctx context.Context, repo string, desc hubmesh.Descriptor) error {
	if err := l.Node.LinkBlob(ctx, repo, desc); err != nil {
		return err
	}
	servers, err := l.Node.Servers()
	if err != nil || len(servers) < 2 {
		return nil // a node alone: no peer will ask for this blob
	}
	// Other nodes will ask for the chunk list of this blob (to copy it, or
	// to serve a pull): compute it now, not on the first ask.
	go func() {
		if _, err := l.blobs.ex.ChunkRoot(l.bg, desc.Digest); err != nil && l.bg.Err() == nil {
			l.blobs.log.Warn("chunk list", "digest", desc.Digest, "err", err)
		}
	}()
	if l.blobs.needOf(servers) > 1 {
		go func() {
			if err := l.blobs.ensureReplicas(l.bg, desc.Digest); err != nil {
				l.blobs.log.Warn("early replication", "digest", desc.Digest, "err", err)
			}
		}()
	}
	return nil
}
