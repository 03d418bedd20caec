package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	bsexchange "github.com/ipfs/boxo/exchange"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// transfer is one blob being fetched from peers into a temp file of the
// store. Chunks are written at their offsets as they arrive, in any
// order; avail is the length of the prefix that is complete, which
// readers may read. Each chunk is verified as it arrives (see chunk.go),
// which verifies the whole blob once every chunk is there. The temp file descriptor is shared:
// readers use ReadAt on it, so they keep working after the file is renamed
// into the store, and it is closed when its last user lets go.
type transfer struct {
	e         *Exchange
	d         digest.Digest
	size      int64
	root      cid.Cid
	providers []peer.ID
	ctx       context.Context
	cancel    context.CancelFunc
	started   time.Time

	// ready is closed once the chunk list is known and the temp file
	// created (list, f, tmpPath set), or that failed (readyErr set).
	ready    chan struct{}
	readyErr error
	list     *chunkList
	rootData []byte
	f        *os.File
	tmpPath  string
	sess     bsexchange.Fetcher
	// direct writes the chunks with O_DIRECT (see direct.go); nil: they
	// go through f. Only run uses it. rdirect reads them back the same
	// way, for readers that the chunks kept in mem have left behind, and
	// is closed with f. bufs is set when the transfer writes directly.
	direct  *directWriter
	rdirect *os.File
	bufs    *chunkBufs

	// finished is closed when the transfer ends, after state and err are
	// set.
	finished chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever avail or state changes
	written []bool        // chunks written to the temp file
	next    int           // first chunk not yet written: avail ends there
	avail   int64
	state   transferState
	err     error // why the transfer failed
	users   int   // readers and Replicate callers
	refs    int   // holders of f: run, readers, chunk reads in progress
	// fetchers are the nodes fetching the blob at once, this one
	// included, sorted (see swarm.go); empty until the fetch starts.
	fetchers []peer.ID
	// viaHolders marks the chunks asked from the holders (bitswap).
	viaHolders []bool
	// mem holds the bytes of the chunks written last, by index, when
	// they are written with O_DIRECT (at most memChunks of them, until
	// the transfer ends).
	mem map[int][]byte
	// directReads: chunks not in mem are read through rdirect; cleared
	// when a direct write or read failed.
	directReads bool
}

type transferState int

const (
	transferRunning transferState = iota
	transferDone                  // verified and installed in the store
	transferFailed
)

func newTransfer(e *Exchange, d digest.Digest, size int64, root cid.Cid, providers []peer.ID) *transfer {
	ctx, cancel := context.WithCancel(e.ctx)
	return &transfer{
		e: e, d: d, size: size, root: root, providers: providers,
		ctx: ctx, cancel: cancel, started: time.Now(),
		ready: make(chan struct{}), finished: make(chan struct{}), changed: make(chan struct{}),
		refs: 1, // run's
	}
}

// enter counts a new user. e.mu is held.
func (t *transfer) enter() {
	t.mu.Lock()
	t.users++
	t.refs++
	t.mu.Unlock()
}

// leave undoes enter. When the last user leaves before the chunk list
// arrived, nobody is waiting for the blob and the transfer is abandoned;
// once chunks flow it goes on, so that the blob is kept.
func (t *transfer) leave() {
	t.mu.Lock()
	t.users--
	abandon := t.users == 0 && t.list == nil
	t.unref()
	t.mu.Unlock()
	if abandon {
		t.cancel()
	}
}

// unref drops a reference to f and closes it after the last one. t.mu is
// held.
func (t *transfer) unref() {
	t.refs--
	if t.refs == 0 {
		t.mem = nil
	}
	if t.refs == 0 && t.rdirect != nil {
		if err := t.rdirect.Close(); err != nil {
			t.e.logger.Warn("close fetch temp file", "blob", t.d, "err", err)
		}
		t.rdirect = nil
	}
	if t.refs == 0 && t.f != nil {
		if err := t.f.Close(); err != nil {
			t.e.logger.Warn("close fetch temp file", "blob", t.d, "err", err)
		}
		t.f = nil
	}
}

// broadcast wakes everyone waiting for a change. t.mu is held.
func (t *transfer) broadcast() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// finalErr returns the outcome of a finished transfer.
func (t *transfer) finalErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// chunkWritten reports whether chunk i is in the temp file.
func (t *transfer) chunkWritten(i int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.f != nil && t.written[i]
}

// readChunk returns the block of chunk i (header and bytes from the temp
// file) if it was written.
func (t *transfer) readChunk(i int) ([]byte, bool) {
	t.mu.Lock()
	if t.f == nil || !t.written[i] {
		t.mu.Unlock()
		return nil, false
	}
	t.refs++
	f := t.f
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.unref()
		t.mu.Unlock()
	}()
	off, n := t.list.chunkRange(i)
	hdr := t.list.header(i)
	buf := make([]byte, int64(len(hdr))+n)
	copy(buf, hdr)
	if t.bufs != nil {
		tmp := t.bufs.get(t.bufs.size)
		b, ok := t.chunkBytes(i, tmp)
		if ok {
			copy(buf[len(hdr):], b)
		}
		t.bufs.put(tmp)
		if ok {
			return buf, true
		}
	}
	if _, err := f.ReadAt(buf[len(hdr):], off); err != nil {
		return nil, false
	}
	return buf, true
}

// chunkBytes returns the bytes of the written chunk i, copied into dst
// (aligned, of at least the chunk size rounded up to directAlign): from
// memory while the transfer keeps the chunk there, else read from the
// temp file with O_DIRECT. It reports false when the transfer does not
// write directly or the read failed; the caller then reads through f.
func (t *transfer) chunkBytes(i int, dst []byte) ([]byte, bool) {
	off, n := t.list.chunkRange(i)
	t.mu.Lock()
	if b, ok := t.mem[i]; ok {
		m := copy(dst[:n], b)
		t.mu.Unlock()
		return dst[:m], int64(m) == n
	}
	rd := t.rdirect
	if rd == nil || !t.directReads || !t.written[i] {
		t.mu.Unlock()
		return nil, false
	}
	t.refs++ // rd stays open while this read holds its reference
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.unref()
		t.mu.Unlock()
	}()
	// The last chunk's padding is cut off once the blob is installed: a
	// read past the end is short by that much.
	m, err := rd.ReadAt(dst[:alignUp(n)], off)
	if int64(m) < n {
		t.e.logger.Debug("direct read of a fetched chunk failed; reading through the page cache", "blob", t.d, "chunk", i, "err", err)
		t.mu.Lock()
		t.directReads = false
		t.mu.Unlock()
		return nil, false
	}
	return dst[:n], true
}

// waitAvail waits until more than off bytes are readable and returns how
// many, or returns the transfer's error once it failed. A transfer that
// is done has all size bytes available.
func (t *transfer) waitAvail(ctx context.Context, off int64) (int64, transferState, error) {
	for {
		t.mu.Lock()
		avail, state, err, ch := t.avail, t.state, t.err, t.changed
		t.mu.Unlock()
		if state == transferFailed {
			return avail, state, err
		}
		if avail > off || state == transferDone {
			return avail, state, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return avail, state, ctx.Err()
		}
	}
}

// run fetches the blob and installs it, then ends the transfer.
func (t *transfer) run() {
	defer t.e.wg.Done()
	defer t.cancel()
	log := t.e.logger.With("blob", t.d, "size", t.size)
	err := t.start()
	t.readyErr = err
	close(t.ready)
	if err == nil {
		err = t.fetch()
	}
	if err == nil {
		err = t.install()
	}
	t.finish(err)
	if err != nil {
		log.Warn("blob fetch failed", "err", err)
		return
	}
	el := time.Since(t.started)
	log.Info("blob fetched from peers", "chunks", len(t.list.sums), "elapsed", el,
		"mib_per_s", float64(t.size)/(1<<20)/max(el.Seconds(), 1e-9))
}

// start connects to the providers, fetches and checks the chunk list and
// creates the temp file.
func (t *transfer) start() error {
	e := t.e
	ctx, cancel := context.WithTimeout(t.ctx, e.cfg.StallTimeout)
	defer cancel()
	if err := t.connect(ctx); err != nil {
		return err
	}
	// The session sees every block of the blob: bitswap learns there
	// which peers answer and spreads the wants over them.
	sess := e.bs.NewSession(t.ctx)
	blk, err := sess.GetBlock(ctx, t.root)
	if err != nil {
		return fmt.Errorf("fetch %s: chunk list %s not received from %d providers: %w: %w", t.d, t.root, len(t.providers), hubmesh.ErrUnavailable, err)
	}
	l, err := decodeChunkList(blk.RawData())
	if err != nil {
		return fmt.Errorf("fetch %s: %w", t.d, err)
	}
	if l.digest != t.d || l.size != t.size {
		return fmt.Errorf("fetch %s (%d bytes): chunk list %s describes %s (%d bytes): %w", t.d, t.size, t.root, l.digest, l.size, hubmesh.ErrInvalid)
	}
	f, err := os.CreateTemp(e.store.tmp, "fetch-*")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", t.d, err)
	}
	if err := preallocate(f, l.size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("fetch %s: reserve %d bytes: %w", t.d, l.size, err)
	}
	if !e.cfg.bufferedWrites && l.chunkSize%directAlign == 0 && len(l.sums) > 0 {
		if t.direct = openDirectWriter(f.Name()); t.direct != nil {
			t.bufs = newChunkBufs(int(l.chunkSize))
			t.rdirect = openDirectReader(f.Name())
		}
	}
	t.mu.Lock()
	t.list, t.rootData, t.f, t.tmpPath = l, blk.RawData(), f, f.Name()
	t.written = make([]bool, len(l.sums))
	t.viaHolders = make([]bool, len(l.sums))
	if t.direct != nil {
		t.mem = make(map[int][]byte, memChunks+1)
		t.directReads = t.rdirect != nil
	}
	t.mu.Unlock()
	t.sess = sess
	e.bstore.addLive(t)
	return nil
}

// connect dials the providers at once and succeeds when at least one
// connection stands, or fails when every dial failed or ctx ended.
func (t *transfer) connect(ctx context.Context) error {
	// Return at the first connection that stands: a provider that is down
	// must not hold the fetch for a whole dial timeout. The other dials go
	// on after connect returns, bounded by the transfer and StallTimeout,
	// not by ctx: a provider that connects a little later still joins the
	// swarm, and bitswap asks it for the chunks the first one lacks.
	results := make(chan error, len(t.providers))
	for _, p := range t.providers {
		t.e.wg.Add(1) // the transfer holds e.wg, so Close has not begun waiting
		go func() {
			defer t.e.wg.Done()
			dctx, cancel := context.WithTimeout(t.ctx, t.e.cfg.StallTimeout)
			defer cancel()
			results <- t.e.host.Connect(dctx, p.String())
		}()
	}
	var errs []error
	for range t.providers {
		select {
		case err := <-results:
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("fetch %s: no provider reachable: %w: %w", t.d, hubmesh.ErrUnavailable, ctx.Err())
		}
	}
	return fmt.Errorf("fetch %s: no provider reachable: %w", t.d, errors.Join(errs...))
}

// fetch asks for the chunks, at most MaxWantsInFlight at a time, checks
// each (bitswap hashed it under its CID; its header must continue the
// chain where the chunk list says) and writes it at its offset as it
// arrives. It returns once every chunk is written: the blob's digest is
// then verified.
func (t *transfer) fetch() error {
	e, l := t.e, t.list
	if len(l.sums) == 0 {
		if !bytes.Equal(l.alg.new().Sum(nil), digestBytes(t.d)) {
			return fmt.Errorf("fetch %s: an empty blob has another digest: %w", t.d, hubmesh.ErrDigestMismatch)
		}
		return nil
	}
	order := make([]cid.Cid, len(l.sums))
	at := make(map[string]int, len(l.sums))
	for i, s := range l.sums {
		if _, dup := at[s]; dup {
			return fmt.Errorf("fetch %s: chunk list %s names two chunks alike: %w", t.d, t.root, hubmesh.ErrInvalid)
		}
		at[s] = i
		order[i] = l.chunkCID(i)
	}
	hl := chunkHeaderLen(l.alg)
	// Learn which other nodes fetch this blob now (see swarm.go).
	t.join()
	self := e.host.h.ID()

	ctx, cancel := context.WithCancel(t.ctx)
	got := make(chan blocks.Block, e.cfg.MaxWantsInFlight)
	// Each chunk is asked from a fellow at most once: room for all.
	fromFellows := make(chan fellowChunk, len(order))
	var forwarders sync.WaitGroup
	defer func() {
		cancel()
		forwarders.Wait()
	}()
	// Chunks are asked for in small batches, one batch at a time: bitswap
	// sends the wants of one request in no particular order, but a peer
	// serves the wants of earlier requests first. Small batches spaced by
	// arrivals keep the chunks arriving nearly in order, which is what
	// the readers need: a blob asked for in one request of 128 chunks
	// came in random order, its first byte after half of them.
	window := e.cfg.MaxWantsInFlight
	batch := min(window, wantBatch)
	// mayAsk: a chunk arrived since the last request (or none was made).
	next, inflight, remaining, mayAsk := 0, 0, len(order), true
	var queued, retry []int // for the holders: planned; refused by a fellow
	perFellow := make(map[peer.ID]int)
	unsynced := 0
	stall := time.NewTimer(e.cfg.StallTimeout)
	defer stall.Stop()
	// accept checks chunk b (its CID was computed from its bytes, by
	// bitswap or here) and writes it.
	accept := func(b blocks.Block) error {
		_, name, _ := chunkSumOf(b.Cid())
		i, ok := at[name]
		if !ok {
			return nil // not ours, or a duplicate already written
		}
		// Its bytes continue the chain from the state in its header. That
		// state must be the one the list has before chunk i.
		data := b.RawData()
		if len(data) < hl || !bytes.Equal(data[:hl], l.header(i)) {
			return fmt.Errorf("fetch %s: chunk %d does not continue the chunk list's chain: %w", t.d, i, hubmesh.ErrDigestMismatch)
		}
		delete(at, name)
		inflight--
		remaining--
		mayAsk = true
		if err := t.write(i, data[hl:]); err != nil {
			return err
		}
		// Start writing the chunks to disk as they come (every
		// writebackEvery bytes), so that the fsync before install finds
		// little left to do. Direct writes are on disk already.
		if unsynced += len(data) - hl; unsynced >= writebackEvery && t.direct == nil {
			startWriteback(t.f)
			unsynced = 0
		}
		// Peers that asked this node for the chunk get it now.
		if err := e.bs.Server.NotifyNewBlocks(ctx, b); err != nil {
			e.logger.Debug("notify new block", "cid", b.Cid(), "err", err)
		}
		stall.Reset(e.cfg.StallTimeout)
		return nil
	}
	for remaining > 0 {
		// Plan the next chunks in blob order: those this node owns go to
		// the holders, the others to the fellow that owns them.
		for len(queued) < batch {
			if len(retry) > 0 {
				queued = append(queued, retry[0])
				retry = retry[1:]
				continue
			}
			if next >= len(order) || inflight >= window {
				break
			}
			i, owner := next, t.owner(next)
			if owner != self {
				if perFellow[owner] >= swarmPerFellow {
					break
				}
				perFellow[owner]++
				forwarders.Go(func() { fromFellows <- t.askFellow(ctx, owner, i) })
			} else {
				queued = append(queued, i)
			}
			next++
			inflight++
		}
		if mayAsk && len(queued) > 0 {
			keys := make([]cid.Cid, len(queued))
			t.mu.Lock()
			for j, i := range queued {
				keys[j] = order[i]
				t.viaHolders[i] = true
			}
			t.mu.Unlock()
			queued = queued[:0]
			ch, err := t.sess.GetBlocks(ctx, keys)
			if err != nil {
				return fmt.Errorf("fetch %s: %w: %w", t.d, hubmesh.ErrUnavailable, err)
			}
			mayAsk = false
			forwarders.Go(func() {
				for b := range ch {
					select {
					case got <- b:
					case <-ctx.Done():
						return
					}
				}
			})
			continue
		}
		select {
		case b := <-got:
			if err := accept(b); err != nil {
				return err
			}
		case fc := <-fromFellows:
			perFellow[fc.from]--
			if _, ok := at[l.sums[fc.i]]; !ok {
				continue // arrived otherwise
			}
			err := fc.err
			var b blocks.Block
			if err == nil {
				// Checked here as bitswap checks what it receives: the
				// bytes must hash, from the state in their header, to
				// the chunk's name.
				if len(fc.data) < hl || string(chainSum(l.alg, fc.data)) != l.sums[fc.i] {
					err = fmt.Errorf("chunk %d does not match its CID: %w", fc.i, hubmesh.ErrDigestMismatch)
				} else {
					b, err = blocks.NewBlockWithCid(fc.data, order[fc.i])
				}
			}
			if err != nil {
				if !errors.Is(err, hubmesh.ErrNotFound) {
					e.logger.Debug("chunk from fellow fetcher", "blob", t.d, "peer", fc.from, "chunk", fc.i, "err", err)
					t.dropFellow(fc.from)
				}
				retry = append(retry, fc.i)
				mayAsk = true
				continue
			}
			if err := accept(b); err != nil {
				return err
			}
		case <-stall.C:
			return fmt.Errorf("fetch %s: no chunk arrived for %s (%d of %d chunks missing): %w",
				t.d, e.cfg.StallTimeout, remaining, len(order), hubmesh.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("fetch %s: %w: %w", t.d, hubmesh.ErrUnavailable, context.Cause(ctx))
		}
	}
	return nil
}

// wantBatch is how many chunks a fetch asks for in one request.
const wantBatch = 8

// write stores the bytes of chunk i in the temp file and advances avail.
func (t *transfer) write(i int, data []byte) error {
	off, n := t.list.chunkRange(i)
	if int64(len(data)) != n {
		return fmt.Errorf("fetch %s: chunk %d has %d bytes, want %d: %w", t.d, i, len(data), n, hubmesh.ErrInvalid)
	}
	var kept []byte
	if t.direct != nil {
		buf := t.bufs.get(int(n))
		copy(buf, data)
		if err := t.direct.writeChunk(buf, off); err != nil {
			// The filesystem took the open but not the write: go on
			// through the page cache.
			t.e.logger.Debug("direct write refused; writing through the page cache", "blob", t.d, "err", err)
			t.closeDirect()
			t.mu.Lock()
			t.directReads = false // the chunks to come are in the page cache
			t.mu.Unlock()
		} else {
			kept = buf
		}
	}
	if kept == nil {
		if _, err := t.f.WriteAt(data, off); err != nil {
			return fmt.Errorf("fetch %s: write temp file: %w", t.d, err)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if kept != nil && t.mem != nil {
		t.mem[i] = kept
		if len(t.mem) > memChunks {
			// Readers go in order: drop the lowest chunk before i (read
			// already, most likely), or else the farthest one.
			drop, below := -1, false
			for j := range t.mem {
				switch {
				case j == i:
				case j < i && (!below || j < drop):
					drop, below = j, true
				case !below && j > drop:
					drop = j
				}
			}
			t.bufs.put(t.mem[drop])
			delete(t.mem, drop)
		}
	}
	t.written[i] = true
	for t.next < len(t.written) && t.written[t.next] {
		t.next++
	}
	t.avail = min(int64(t.next)*t.list.chunkSize, t.size)
	// Wake the readers, and the fellows waiting for chunk i.
	t.broadcast()
	return nil
}

// closeDirect stops writing with O_DIRECT; later chunks go through f.
func (t *transfer) closeDirect() {
	if t.direct == nil {
		return
	}
	if err := t.direct.close(); err != nil {
		t.e.logger.Warn("close direct fetch temp file", "blob", t.d, "err", err)
	}
	t.direct = nil
}

// install makes the verified temp file durable, moves it into the store
// and records its chunks, so that this node serves the blob from now on.
func (t *transfer) install() error {
	t.closeDirect()
	if t.bufs != nil {
		// Direct writes pad the last chunk to a whole page (also when a
		// refused direct write sent the later chunks through f).
		if err := t.f.Truncate(t.size); err != nil {
			return fmt.Errorf("fetch %s: truncate: %w", t.d, err)
		}
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("fetch %s: sync: %w", t.d, err)
	}
	// Every chunk written matched its CID and the whole file its digest.
	// adopt renames the file (same inode, same modification time) unless
	// the store already has the blob, whose file is then not this one.
	info, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", t.d, err)
	}
	if err := t.e.store.adopt(t.tmpPath, t.d, t.size); err != nil {
		return fmt.Errorf("fetch %s: install: %w", t.d, err)
	}
	t.tmpPath = "" // adopt took it
	t.e.bstore.checks.mark(t.d, info, -1)
	if err := t.e.index.add(t.list, t.rootData, true); err != nil {
		// The blob is stored; only serving it to peers is affected until
		// ChunkRoot indexes it again.
		t.e.logger.Warn("index fetched blob", "blob", t.d, "err", err)
	}
	return nil
}

// finish ends the transfer with err (nil: done): readers see the outcome,
// the transfer leaves the exchange and the temp file goes.
func (t *transfer) finish(err error) {
	t.closeDirect()
	// Unlink the temp file before anyone learns the outcome, so that a
	// caller who saw the transfer end never finds it behind. Readers that
	// hold it open keep reading: the open file outlives its name.
	if t.tmpPath != "" {
		if rerr := os.Remove(t.tmpPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			t.e.logger.Warn("remove fetch temp file", "path", t.tmpPath, "err", rerr)
		}
	}
	t.mu.Lock()
	// Readers still at it read the rest from the file.
	t.mem = nil
	if err != nil {
		t.state, t.err = transferFailed, err
	} else {
		t.state = transferDone
		t.avail = t.size
	}
	t.broadcast()
	t.mu.Unlock()
	close(t.finished)

	t.e.mu.Lock()
	delete(t.e.transfers, t.d)
	t.e.mu.Unlock()
	if t.list != nil {
		t.e.bstore.dropLive(t)
	}
	t.mu.Lock()
	t.unref()
	t.mu.Unlock()
}

// fetchReader reads a blob as its transfer fills the temp file.
type fetchReader struct {
	t      *transfer
	ctx    context.Context
	off    int64
	closed bool
	// chunk holds chunk chunkIdx (chunkLen bytes) when the transfer
	// writes directly; chunkIdx is -1 before the first.
	chunk    []byte
	chunkIdx int
	chunkLen int
}

// Read implements io.Reader. It blocks until bytes past the read offset
// have arrived, and returns io.EOF only after the whole blob was verified
// and installed.
func (r *fetchReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("read blob %s: reader closed: %w", r.t.d, hubmesh.ErrInvalid)
	}
	if len(p) == 0 {
		return 0, nil
	}
	avail, state, err := r.t.waitAvail(r.ctx, r.off)
	if err != nil {
		return 0, err
	}
	if r.off >= avail && state == transferDone {
		return 0, io.EOF
	}
	n := min(int64(len(p)), avail-r.off)
	if bufs := r.t.bufs; bufs != nil {
		// The chunks are not in the page cache: read them a whole chunk
		// at a time, from the transfer's memory or with O_DIRECT.
		cs := r.t.list.chunkSize
		i := int(r.off / cs)
		if r.chunkIdx != i {
			if r.chunk == nil {
				r.chunk = alignedBuf(bufs.size)
			}
			if b, ok := r.t.chunkBytes(i, r.chunk); ok {
				r.chunkIdx, r.chunkLen = i, len(b)
			}
		}
		if r.chunkIdx == i {
			m := copy(p[:n], r.chunk[r.off-int64(i)*cs:r.chunkLen])
			r.off += int64(m)
			return m, nil
		}
	}
	// f stays open while this reader holds its reference.
	m, err := r.t.f.ReadAt(p[:n], r.off)
	r.off += int64(m)
	if err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
		return m, fmt.Errorf("read blob %s: %w", r.t.d, err)
	}
	return m, nil
}

// Close implements io.Closer. It does not stop the transfer.
func (r *fetchReader) Close() error {
	if !r.closed {
		r.closed = true
		r.t.leave()
	}
	return nil
}
