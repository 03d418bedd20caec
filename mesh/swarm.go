package mesh

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/hubmesh/hubmesh"
)

// Fellow fetchers. Nodes that fetch the same blob at once (a layer pulled
// through several nodes together) split it between them instead of each
// asking the holders for every chunk: once its chunk list is known, a
// transfer asks every connected member whether it is fetching the blob
// too ("join"); those that are, and those that ask it, are its fellows.
// The fetchers, sorted by peer ID, own the chunks in turn (chunk i is
// owned by fetcher i mod n): each asks the holders (bitswap) for the
// chunks it owns and its fellows for theirs ("chunk"), in blob order, so
// that the blob still streams to its readers in order. A fellow answers a
// chunk it has at once, waits for one it is about to fetch, and refuses
// one it does not mean to fetch; a refused or failed chunk is asked from
// the holders. Every chunk is checked against its CID on arrival, however
// it came.
const swarmProtocol = "/hubmesh/swarm/1.0.0"

const (
	// swarmJoinWait bounds how long a transfer waits for the answers to
	// its join before it asks for chunks (the answers that come later
	// still count).
	swarmJoinWait = 250 * time.Millisecond
	// swarmChunkWait bounds how long a fellow waits for a chunk it is
	// about to fetch before it refuses.
	swarmChunkWait = 5 * time.Second
	// swarmPerFellow bounds the chunk requests a transfer has in flight
	// to one fellow.
	swarmPerFellow = 8
)

type swarmRequest struct {
	Op    string `json:"op"` // join | chunk
	Root  string `json:"root"`
	Index int    `json:"i,omitempty"`
}

type swarmJoinResponse struct {
	Fetching bool `json:"fetching"`
}

// liveTransfer returns the transfer in progress of the chunk list with
// sha2-256 sum.
func (bs *blobBlockstore) liveTransfer(sum [sha256.Size]byte) *transfer {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	return bs.liveRoots[sum]
}

// serveSwarm answers the swarmProtocol requests of fellow fetchers.
func (e *Exchange) serveSwarm(ctx context.Context, from string, raw []byte) ([]byte, error) {
	var req swarmRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("swarm request: %v: %w", err, hubmesh.ErrInvalid)
	}
	rc, err := cid.Decode(req.Root)
	if err != nil {
		return nil, fmt.Errorf("swarm request: root %q: %v: %w", req.Root, err, hubmesh.ErrInvalid)
	}
	sum, ok := sha256Of(rc)
	if !ok {
		return nil, fmt.Errorf("swarm request: root %s is not CIDv1 raw sha2-256: %w", req.Root, hubmesh.ErrInvalid)
	}
	pid, err := peer.Decode(from)
	if err != nil {
		return nil, fmt.Errorf("swarm request: caller %q: %v: %w", from, err, hubmesh.ErrInvalid)
	}
	t := e.bstore.liveTransfer(sum)
	switch req.Op {
	case "join":
		if t == nil {
			return json.Marshal(swarmJoinResponse{})
		}
		t.addFellow(pid)
		return json.Marshal(swarmJoinResponse{Fetching: true})
	case "chunk":
		if t != nil {
			if req.Index < 0 || req.Index >= len(t.list.sums) {
				return nil, fmt.Errorf("swarm request: chunk %d of %d: %w", req.Index, len(t.list.sums), hubmesh.ErrInvalid)
			}
			if data, ok := t.awaitChunk(ctx, req.Index, swarmChunkWait); ok {
				return data, nil
			}
		}
		// Not being fetched (any more): serve it if the blob is here.
		root, ok, err := e.bstore.root(sum)
		if err != nil || !ok {
			return nil, fmt.Errorf("swarm: chunk %d of %s: %w", req.Index, req.Root, hubmesh.ErrNotFound)
		}
		l, err := decodeChunkList(root)
		if err != nil || req.Index < 0 || req.Index >= len(l.sums) {
			return nil, fmt.Errorf("swarm: chunk %d of %s: %w", req.Index, req.Root, hubmesh.ErrNotFound)
		}
		data, err := e.bstore.read(ctx, l.chunkCID(req.Index))
		if err != nil {
			return nil, fmt.Errorf("swarm: chunk %d of %s: %w", req.Index, req.Root, hubmesh.ErrNotFound)
		}
		return data, nil
	default:
		return nil, fmt.Errorf("swarm request: unknown op %q: %w", req.Op, hubmesh.ErrInvalid)
	}
}

// addFellow records p as fetching the blob of t too.
func (t *transfer) addFellow(p peer.ID) {
	if p == t.e.host.h.ID() || slices.Contains(t.providers, p) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.fetchers, p) {
		t.fetchers = append(t.fetchers, p)
		slices.Sort(t.fetchers)
	}
}

// dropFellow forgets fellow p (it failed to answer).
func (t *transfer) dropFellow(p peer.ID) {
	if p == t.e.host.h.ID() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fetchers = slices.DeleteFunc(t.fetchers, func(q peer.ID) bool { return q == p })
}

// ownerLocked returns the fetcher that asks the holders for chunk i. t.mu
// is held.
func (t *transfer) ownerLocked(i int) peer.ID {
	if len(t.fetchers) == 0 {
		return t.e.host.h.ID()
	}
	return t.fetchers[i%len(t.fetchers)]
}

// owner is ownerLocked for callers that do not hold t.mu.
func (t *transfer) owner(i int) peer.ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ownerLocked(i)
}

// awaitChunk returns the block of chunk i once it is written, waiting at
// most wait while this node means to fetch it from the holders; it
// reports false at once when this node leaves chunk i to a fellow.
func (t *transfer) awaitChunk(ctx context.Context, i int, wait time.Duration) ([]byte, bool) {
	self := t.e.host.h.ID()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if data, ok := t.readChunk(i); ok {
			return data, true
		}
		t.mu.Lock()
		mine := t.viaHolders[i] || t.ownerLocked(i) == self
		running, ch := t.state == transferRunning, t.changed
		t.mu.Unlock()
		if !mine || !running {
			return nil, false
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// join tells the connected members (other than the holders) that this
// node fetches the blob of t, and records those that fetch it too. It
// waits at most swarmJoinWait for their answers.
func (t *transfer) join() {
	e := t.e
	self := e.host.h.ID()
	t.mu.Lock()
	if !slices.Contains(t.fetchers, self) {
		t.fetchers = append(t.fetchers, self)
		slices.Sort(t.fetchers)
	}
	t.mu.Unlock()
	req, _ := json.Marshal(swarmRequest{Op: "join", Root: t.root.String()})
	var wg sync.WaitGroup
	for _, p := range e.host.h.Network().Peers() {
		if p == self || slices.Contains(t.providers, p) || !e.host.gater.allowed(p) {
			continue
		}
		wg.Add(1)
		e.wg.Add(1) // the transfer holds e.wg, so Close has not begun waiting
		go func() {
			defer e.wg.Done()
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
			defer cancel()
			out, err := e.host.Call(ctx, p.String(), swarmProtocol, req)
			if err != nil {
				e.logger.Debug("swarm join", "blob", t.d, "peer", p, "err", err)
				return
			}
			var resp swarmJoinResponse
			if json.Unmarshal(out, &resp) == nil && resp.Fetching {
				t.addFellow(p)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(swarmJoinWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	case <-t.ctx.Done():
	}
}

// fellowChunk is the outcome of asking a fellow for a chunk.
type fellowChunk struct {
	i    int
	from peer.ID
	data []byte
	err  error
}

// askFellow asks fellow p for the block of chunk i.
func (t *transfer) askFellow(ctx context.Context, p peer.ID, i int) fellowChunk {
	req, _ := json.Marshal(swarmRequest{Op: "chunk", Root: t.root.String(), Index: i})
	cctx, cancel := context.WithTimeout(ctx, swarmChunkWait+t.e.cfg.StallTimeout/2)
	defer cancel()
	out, err := t.e.host.Call(cctx, p.String(), swarmProtocol, req)
	return fellowChunk{i: i, from: p, data: out, err: err}
}
