package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/hubmesh/hubmesh"
)

// ExchangeProtocolPrefix is prepended to the bitswap protocol IDs, so the
// exchange speaks /hubmesh/ipfs/bitswap/1.2.0 and never talks to IPFS
// nodes.
const ExchangeProtocolPrefix = "/hubmesh"

// Defaults of ExchangeConfig.
const (
	DefaultMaxWantsInFlight = 128
	DefaultStallTimeout     = 30 * time.Second
	// maxWantsInFlight stays well below the wants a bitswap server queues
	// per peer (1024 by default, raised to serverQueuedWants here): past
	// that it silently drops wants and the fetch stalls. The margin covers
	// the want-haves and re-sent wants bitswap adds on its own.
	maxWantsInFlight  = 256
	serverQueuedWants = 4096
	// rebroadcastDelay is how often a fetch asks every connected peer
	// whether it has one of the chunks still wanted.
	rebroadcastDelay = 200 * time.Millisecond
)

// ExchangeConfig configures NewExchange.
type ExchangeConfig struct {
	// IndexDir is the directory of the local chunk index (a pebble
	// database mapping chunk CIDs to ranges of blob files), conventionally
	// <data-dir>/chunks. Required. It is node-local state, never
	// replicated.
	IndexDir string
	// ChunkSize is the size of the chunks ChunkRoot cuts blobs into: a
	// multiple of 128 bytes (the hash block size of SHA-512). Zero means
	// DefaultChunkSize; at most MaxChunkSize. Fetch follows
	// whatever chunk size the root it is given says.
	ChunkSize int
	// MaxWantsInFlight bounds the chunks a fetch has asked for and not yet
	// received. Zero means DefaultMaxWantsInFlight; at most 256.
	MaxWantsInFlight int
	// StallTimeout is how long a fetch waits for the next chunk (or for
	// the chunk list, or to connect to a provider) before it fails with
	// hubmesh.ErrUnavailable. Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// Logger receives the exchange's logs. Required.
	Logger *slog.Logger

	// bufferedWrites makes fetches write through the page cache even
	// where O_DIRECT works (tests of that path).
	bufferedWrites bool
}

// Exchange shares blobs between nodes over libp2p with bitswap. Each blob
// is exchanged as chunks (see DefaultChunkSize) listed by a root block;
// the blocks are served straight from the Store's blob files through the
// chunk index, so nothing is stored twice. A node serves the chunks of
// every blob it holds whose chunk list it knows (ChunkRoot computes it,
// Fetch records it) and, while it fetches a blob, the chunks it already
// has of it, so nodes that fetch the same new blob at once help each
// other.
type Exchange struct {
	host   *Host
	store  *Store
	cfg    ExchangeConfig
	logger *slog.Logger
	index  *chunkIndex
	bstore *blobBlockstore
	bs     *bitswap.Bitswap

	ctx    context.Context // cancelled by Close; every transfer derives from it
	cancel context.CancelFunc
	roots  singleflight.Group

	mu        sync.Mutex
	transfers map[digest.Digest]*transfer
	closed    bool
	wg        sync.WaitGroup // running transfers

	closeOnce sync.Once
	closeErr  error
}

// NewExchange opens the chunk index and starts bitswap (client and
// server) on host, serving blocks of store. There is no content routing:
// wants go to connected peers, and Fetch connects to the providers it is
// given first.
func NewExchange(ctx context.Context, host *Host, store *Store, cfg ExchangeConfig) (*Exchange, error) {
	switch {
	case cfg.Logger == nil:
		return nil, fmt.Errorf("new exchange: nil logger: %w", hubmesh.ErrInvalid)
	case host == nil || store == nil:
		return nil, fmt.Errorf("new exchange: nil host or store: %w", hubmesh.ErrInvalid)
	case cfg.IndexDir == "":
		return nil, fmt.Errorf("new exchange: empty index dir: %w", hubmesh.ErrInvalid)
	case cfg.ChunkSize < 0 || cfg.ChunkSize > MaxChunkSize || cfg.ChunkSize%chunkAlign != 0:
		return nil, fmt.Errorf("new exchange: chunk size %d not a multiple of %d in [%[2]d, %d]: %w", cfg.ChunkSize, chunkAlign, MaxChunkSize, hubmesh.ErrInvalid)
	case cfg.MaxWantsInFlight < 0 || cfg.MaxWantsInFlight > maxWantsInFlight:
		return nil, fmt.Errorf("new exchange: max wants in flight %d not in [1, %d]: %w", cfg.MaxWantsInFlight, maxWantsInFlight, hubmesh.ErrInvalid)
	case cfg.StallTimeout < 0:
		return nil, fmt.Errorf("new exchange: negative stall timeout: %w", hubmesh.ErrInvalid)
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxWantsInFlight == 0 {
		cfg.MaxWantsInFlight = DefaultMaxWantsInFlight
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	logger := cfg.Logger
	index, err := openChunkIndex(cfg.IndexDir, logger)
	if err != nil {
		return nil, fmt.Errorf("new exchange: %w", err)
	}
	e := &Exchange{
		host:      host,
		store:     store,
		cfg:       cfg,
		logger:    logger,
		index:     index,
		transfers: make(map[digest.Digest]*transfer),
	}
	e.bstore = newBlobBlockstore(store, index, logger)
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	net := bsnet.NewFromIpfsHost(host.h, bsnet.Prefix(ExchangeProtocolPrefix))
	e.bs = bitswap.New(e.ctx, net, nil, e.bstore,
		// Received blocks are never in the blockstore before they arrive;
		// checking costs a lookup per block for a statistic.
		bitswap.WithoutDuplicatedBlockStats(),
		// No simulated DONT_HAVEs: bitswap would fake one for every
		// want-block not answered within twice the recent message latency
		// (50 ms at least), which a peer streaming a deep queue of 1 MiB
		// chunks misses all the time; after 16 of them the peer is dropped
		// from the session and the fetch stalls. Hubmesh peers answer
		// DONT_HAVE themselves, a lost peer disconnects, and a peer that
		// stops answering is caught by StallTimeout.
		bitswap.SetSimulateDontHavesOnTimeout(false),
		// A session asks only the peers that answered it. Providers that
		// were not connected yet when it asked for the chunk list join
		// when it broadcasts one of its wants as a want-have, which it
		// does every RebroadcastDelay (a minute by default): this often,
		// several providers serve one blob within a fraction of a second.
		bitswap.RebroadcastDelay(rebroadcastDelay),
		// Tuning for 1 MiB blocks on fast links: let a peer have several
		// blocks in the send pipeline instead of one (the default 1 MiB),
		// and read and send blocks with more workers.
		bitswap.MaxOutstandingBytesPerPeer(16<<20),
		bitswap.EngineTaskWorkerCount(16),
		bitswap.TaskWorkerCount(16),
		// One 1 MiB chunk per message; two would pass bitswap's 4 MiB
		// message limit with 2 MiB chunks.
		bitswap.WithTargetMessageSize(1<<20),
		// Answer a want-have for a small block (a chunk list) with the
		// block itself: the client sends at most one wantlist message per
		// peer every 20 ms, so this saves that much on every fetch. Chunks
		// are larger and are still only sent to the peer that wants them
		// (a want-have answered with a block would duplicate traffic when
		// several peers hold the blob).
		bitswap.WithWantHaveReplaceSize(min(64<<10, cfg.ChunkSize/2)),
		bitswap.MaxQueuedWantlistEntriesPerPeer(serverQueuedWants),
	)
	host.Handle(swarmProtocol, e.serveSwarm)
	return e, nil
}

// Close stops every fetch in progress (their readers fail), stops bitswap
// and closes the chunk index. Blobs already installed stay.
func (e *Exchange) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		e.host.Handle(swarmProtocol, nil)
		e.cancel()
		e.wg.Wait()
		e.closeErr = errors.Join(e.bs.Close(), e.index.close())
	})
	return e.closeErr
}

// ChunkRoot returns the CID of the chunk list of blob d, which must be in
// the store, computing it (by reading the blob once) and recording it and
// the blob's chunks in the chunk index the first time. From then on the
// node serves the blob's chunks to peers. It fails with an error wrapping
// hubmesh.ErrBlobUnknown when the blob is absent.
func (e *Exchange) ChunkRoot(ctx context.Context, d digest.Digest) (string, error) {
	if _, err := e.store.Stat(ctx, d); err != nil {
		return "", fmt.Errorf("chunk root: %w", err)
	}
	root, ok, err := e.index.rootOf(d)
	if err != nil {
		return "", fmt.Errorf("chunk root of %s: %w", d, err)
	}
	if ok {
		return root.String(), nil
	}
	// The work is shared by every caller asking for d, so it runs under the
	// exchange's lifetime, not the first caller's: one caller giving up
	// must not fail the others. Each caller still stops waiting at its ctx.
	ch := e.roots.DoChan(string(d), func() (any, error) {
		// info is what the file was before it is read: the chunks
		// hashed here need no hashing when served while it stays so.
		f, info, err := e.store.openFile(d)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		l, err := chunkBlob(e.ctx, d, info.Size(), int64(e.cfg.ChunkSize), f)
		if err != nil {
			return nil, err
		}
		data := l.encode()
		if err := e.index.add(l, data, true); err != nil {
			return nil, err
		}
		e.bstore.checks.mark(d, info, -1)
		return blockCID(data), nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", fmt.Errorf("chunk root of %s: %w", d, res.Err)
		}
		return res.Val.(cid.Cid).String(), nil
	case <-ctx.Done():
		return "", fmt.Errorf("chunk root of %s: %w: %w", d, hubmesh.ErrUnavailable, ctx.Err())
	}
}

// indexStates indexes the chunk list of blob d, just committed to the
// store from an upload whose file written describes and whose hash states
// rec recorded, unless the list is indexed already. When the store kept
// another file for d (it had the blob), the chunks are not marked as
// checked: that file was not hashed here.
func (e *Exchange) indexStates(d digest.Digest, size int64, written os.FileInfo, rec *chunkRecorder) error {
	if rec.unit != int64(e.cfg.ChunkSize) {
		return nil
	}
	if _, ok, err := e.index.rootOf(d); err != nil || ok {
		return err
	}
	l, err := rec.list(d, size)
	if err != nil {
		return err
	}
	// No fsync: this is on the push path, and a list lost in a crash is
	// computed again when a peer asks.
	if err := e.index.add(l, l.encode(), false); err != nil {
		return err
	}
	if f, info, err := e.store.openFile(d); err == nil {
		f.Close()
		if os.SameFile(info, written) {
			e.bstore.checks.mark(d, info, -1)
		}
	}
	return nil
}

// Forget drops blob d from the chunk index, so the node stops offering its
// chunks; call it when the blob is deleted from the store. Forgetting a
// blob that was never indexed does nothing.
func (e *Exchange) Forget(ctx context.Context, d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	e.bstore.checks.forget(d)
	if err := e.index.forget(d); err != nil {
		return fmt.Errorf("forget %s: %w", d, err)
	}
	return nil
}

// Fetch returns the content of blob d, fetching it from peers when the
// store lacks it. size is the blob's size and root its chunk list CID (as
// recorded in the blob's metadata); providers are the peer IDs of nodes
// that hold it, whose addresses must be known to the host (AddAddrs).
//
// Fetch returns once the chunk list has arrived; the reader then yields
// the blob's bytes in order as the chunks arrive, without waiting for the
// whole blob. Chunks are asked from all providers at once, at most
// MaxWantsInFlight at a time. When every chunk is there the whole blob is
// checked against d and installed into the store, so it is kept; only
// then does the reader return io.EOF. If the blob does not match d, or the
// transfer fails (no chunk for StallTimeout, Close), the reader returns an
// error instead. The transfer goes on when the reader is closed early;
// concurrent Fetch and Replicate calls for one blob share one transfer.
//
// Fetch fails with an error wrapping hubmesh.ErrUnavailable when no
// provider can be reached or none sends the chunk list before ctx ends (or
// StallTimeout passes), and hubmesh.ErrInvalid when the arguments are
// malformed or the chunk list does not describe d and size. ctx also
// bounds the reader: reads fail once it is done.
func (e *Exchange) Fetch(ctx context.Context, d digest.Digest, size int64, root string, providers []string) (io.ReadCloser, error) {
	t, err := e.join(ctx, d, size, root, providers)
	if err != nil {
		return nil, err
	}
	if t == nil {
		rc, _, err := e.store.Open(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
		return rc, nil
	}
	return t.reader(ctx)
}

// Attach returns a reader of the transfer of d that is under way on this
// node, or nil (and no error) when there is none. A pull that arrives while
// the blob is still being fetched here needs no holder to answer again:
// the holders may be gone while the chunks are all here.
func (e *Exchange) Attach(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	e.mu.Lock()
	t := e.transfers[d]
	if t != nil {
		t.enter()
	}
	e.mu.Unlock()
	if t == nil {
		return nil, nil
	}
	return t.reader(ctx)
}

// reader waits for the chunk list of t and returns a reader of the blob as
// it arrives. The caller has entered t; on error it has left again.
func (t *transfer) reader(ctx context.Context) (io.ReadCloser, error) {
	select {
	case <-t.ready:
	case <-ctx.Done():
		t.leave()
		return nil, fmt.Errorf("fetch %s: chunk list %s not received: %w: %w", t.d, t.root, hubmesh.ErrUnavailable, ctx.Err())
	}
	if err := t.readyErr; err != nil {
		t.leave()
		return nil, err
	}
	return &fetchReader{t: t, ctx: ctx, chunkIdx: -1}, nil
}

// Replicate makes sure blob d is in the store, fetching it from providers
// like Fetch if it is not, and returns once it is stored (verified and
// durable) or the transfer failed. ctx bounds the wait; the transfer goes
// on after ctx ends while another caller waits for it.
func (e *Exchange) Replicate(ctx context.Context, d digest.Digest, size int64, root string, providers []string) error {
	t, err := e.join(ctx, d, size, root, providers)
	if err != nil || t == nil {
		return err
	}
	defer t.leave()
	select {
	case <-t.finished:
		return t.finalErr()
	case <-ctx.Done():
		return fmt.Errorf("replicate %s: %w: %w", d, hubmesh.ErrUnavailable, ctx.Err())
	}
}

// join validates the arguments of Fetch and Replicate and returns the
// transfer of d, started if none is running, with the caller counted as
// one of its users. It returns nil when the store holds d.
func (e *Exchange) join(ctx context.Context, d digest.Digest, size int64, root string, providers []string) (*transfer, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("fetch %s: negative size %d: %w", d, size, hubmesh.ErrSizeInvalid)
	}
	rc, err := cid.Decode(root)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: chunk list CID %q: %v: %w", d, root, err, hubmesh.ErrInvalid)
	}
	if _, ok := sha256Of(rc); !ok {
		return nil, fmt.Errorf("fetch %s: chunk list CID %s is not CIDv1 raw sha2-256: %w", d, root, hubmesh.ErrInvalid)
	}
	peers := make([]peer.ID, 0, len(providers))
	for _, p := range providers {
		id, err := peer.Decode(p)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: provider %q: %v: %w", d, p, err, hubmesh.ErrInvalid)
		}
		if id != e.host.h.ID() {
			peers = append(peers, id)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("fetch %s: exchange closed: %w", d, hubmesh.ErrUnavailable)
	}
	if t := e.transfers[d]; t != nil {
		t.enter()
		return t, nil
	}
	// Under e.mu: a transfer installs its blob before it leaves the map,
	// so a blob absent here is not about to appear without a transfer.
	if _, err := e.store.Stat(ctx, d); err == nil {
		return nil, nil
	} else if !errors.Is(err, hubmesh.ErrBlobUnknown) {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("fetch %s: no other node holds it: %w", d, hubmesh.ErrUnavailable)
	}
	t := newTransfer(e, d, size, rc, peers)
	t.enter()
	e.transfers[d] = t
	e.wg.Add(1)
	go t.run()
	return t, nil
}
