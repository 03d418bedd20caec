package mesh

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/cockroachdb/pebble"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// chunkIndex is the local index that maps chunk and root CIDs to the blob
// files that hold them. It is node-local state (a pebble database, never
// replicated through Raft) and can be rebuilt from the blobs: losing an
// entry only means the node cannot serve that chunk to peers until
// Exchange.ChunkRoot is called for the blob again.
//
// Keys (root = the 32-byte sha2-256 of a chunk list; alg = chainAlg.id;
// name = the state or digest a chunk is named by, see chunk.go):
//
//	'v'                     → index format version (indexVersion)
//	'k' alg name digest     → uvarint offset, uvarint length, header   a chunk of blob digest
//	'r' root                → root block bytes                         a chunk list
//	'b' digest              → root                                     the chunk list of a blob
//
// An index of another version (or none, from before versions) is emptied
// when opened: its chunk names are not those the exchange speaks.
type chunkIndex struct {
	db     *pebble.DB
	logger *slog.Logger
}

// indexVersion is the version of the chunk index layout and chunk naming.
// Version 1 (no 'v' key) named chunks by their sha2-256.
const indexVersion = "2"

// pebbleLogger writes pebble's messages to slog. Fatalf is called by pebble
// on unrecoverable corruption and must not return: it logs, then panics.
type pebbleLogger struct{ l *slog.Logger }

// Infof implements pebble.Logger.
func (p pebbleLogger) Infof(format string, args ...any) { p.l.Debug(fmt.Sprintf(format, args...)) }

// Errorf logs an error reported by pebble.
func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error(fmt.Sprintf(format, args...)) }

// Fatalf implements pebble.Logger.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("pebble fatal error", "err", msg)
	panic("mesh: chunk index: pebble: " + msg)
}

func openChunkIndex(dir string, logger *slog.Logger) (*chunkIndex, error) {
	db, err := pebble.Open(dir, &pebble.Options{
		Logger:             pebbleLogger{logger.With("db", "chunk-index", "dir", dir)},
		FormatMajorVersion: pebble.FormatNewest,
	})
	if err != nil {
		return nil, fmt.Errorf("open chunk index %s: %w", dir, err)
	}
	x := &chunkIndex{db: db, logger: logger}
	if err := x.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open chunk index %s: %w", dir, err)
	}
	return x, nil
}

// migrate empties an index of another version and records this one.
func (x *chunkIndex) migrate() error {
	v, ok, err := x.get(versionKey)
	if err != nil || (ok && string(v) == indexVersion) {
		return err
	}
	b := x.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
		return err
	}
	if err := b.Set(versionKey, []byte(indexVersion), nil); err != nil {
		return err
	}
	if ok {
		x.logger.Info("chunk index: emptied an index of another version", "version", string(v))
	}
	return b.Commit(pebble.Sync)
}

var versionKey = []byte{'v'}

func (x *chunkIndex) close() error { return x.db.Close() }

func chunkPrefix(a *chainAlg, name string) []byte {
	k := make([]byte, 0, 2+len(name)+80)
	k = append(k, 'k', a.id)
	return append(k, name...)
}

func chunkKey(a *chainAlg, name string, d digest.Digest) []byte {
	return append(chunkPrefix(a, name), d...)
}

func rootKey(sum [sha256.Size]byte) []byte { return append([]byte{'r'}, sum[:]...) }

func blobKey(d digest.Digest) []byte { return append([]byte{'b'}, d...) }

// get returns a copy of the value of key, or nil and false when absent.
func (x *chunkIndex) get(key []byte) ([]byte, bool, error) {
	v, closer, err := x.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("chunk index: %w", err)
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, true, nil
}

// rootOf returns the root CID recorded for blob d.
func (x *chunkIndex) rootOf(d digest.Digest) (cid.Cid, bool, error) {
	v, ok, err := x.get(blobKey(d))
	if !ok || err != nil {
		return cid.Undef, false, err
	}
	if len(v) != sha256.Size {
		return cid.Undef, false, fmt.Errorf("chunk index: bad root entry for %s", d)
	}
	return rawCID([sha256.Size]byte(v)), true, nil
}

// rootBlock returns the root block whose sha2-256 is sum.
func (x *chunkIndex) rootBlock(sum [sha256.Size]byte) ([]byte, bool, error) {
	return x.get(rootKey(sum))
}

// chunkLoc is where a chunk lives: a range of a blob file, and the header
// its block starts with.
type chunkLoc struct {
	digest digest.Digest
	off, n int64
	header []byte
}

// chunkLocs returns every recorded location of the chunk named name.
func (x *chunkIndex) chunkLocs(a *chainAlg, name string) ([]chunkLoc, error) {
	prefix := chunkPrefix(a, name)
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: append(bytes.Clone(prefix), 0xff)})
	if err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	defer it.Close()
	var locs []chunkLoc
	for ok := it.First(); ok; ok = it.Next() {
		v := it.Value()
		off, n1 := binary.Uvarint(v)
		length, n2 := binary.Uvarint(v[max(n1, 0):])
		if n1 <= 0 || n2 <= 0 || len(v)-n1-n2 != chunkHeaderLen(a) {
			x.logger.Warn("chunk index: bad chunk entry", "key", fmt.Sprintf("%x", it.Key()))
			continue
		}
		locs = append(locs, chunkLoc{
			digest: digest.Digest(it.Key()[len(prefix):]), off: int64(off), n: int64(length),
			header: bytes.Clone(v[n1+n2:]),
		})
	}
	return locs, it.Error()
}

// add records the chunk list l (whose encoding is root) and its chunks,
// with an fsync when sync is set. The index can always be rebuilt from the
// blob files (ChunkRoot), so sync only saves that work after a crash.
func (x *chunkIndex) add(l *chunkList, root []byte, sync bool) error {
	sum := sha256.Sum256(root)
	b := x.db.NewBatch()
	defer b.Close()
	var v []byte
	for i, s := range l.sums {
		off, n := l.chunkRange(i)
		v = binary.AppendUvarint(v[:0], uint64(off))
		v = binary.AppendUvarint(v, uint64(n))
		v = append(v, l.header(i)...)
		if err := b.Set(chunkKey(l.alg, s, l.digest), v, nil); err != nil {
			return fmt.Errorf("chunk index: %w", err)
		}
	}
	if err := b.Set(rootKey(sum), root, nil); err != nil {
		return fmt.Errorf("chunk index: %w", err)
	}
	if err := b.Set(blobKey(l.digest), sum[:], nil); err != nil {
		return fmt.Errorf("chunk index: %w", err)
	}
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("chunk index: %w", err)
	}
	return nil
}

// forget removes what add recorded for blob d. Forgetting a blob that is
// not indexed does nothing.
func (x *chunkIndex) forget(d digest.Digest) error {
	root, ok, err := x.rootOf(d)
	if !ok || err != nil {
		return err
	}
	sum, _ := sha256Of(root)
	data, ok, err := x.rootBlock(sum)
	if err != nil {
		return err
	}
	b := x.db.NewBatch()
	defer b.Close()
	if ok {
		if l, err := decodeChunkList(data); err == nil {
			for _, s := range l.sums {
				if err := b.Delete(chunkKey(l.alg, s, d), nil); err != nil {
					return fmt.Errorf("chunk index: %w", err)
				}
			}
		}
	}
	// The root block names the blob digest, so it belongs to d alone.
	if err := b.Delete(rootKey(sum), nil); err != nil {
		return fmt.Errorf("chunk index: %w", err)
	}
	if err := b.Delete(blobKey(d), nil); err != nil {
		return fmt.Errorf("chunk index: %w", err)
	}
	return b.Commit(pebble.Sync)
}

// liveChunk is a chunk of a blob that is being fetched: it can be served
// to other peers once written to the transfer's temp file.
type liveChunk struct {
	t *transfer
	i int
}

// blobBlockstore is the blockstore bitswap serves from and checks against.
// Its blocks are not stored anywhere of their own: a chunk is a range of a
// blob file in the Store (found through the chunk index) or of the temp
// file of a fetch in progress, and a root is an index entry (or held by
// the fetch in progress). A chunk read from a blob file is checked
// against its CID before it is handed out, so a corrupt blob file is not
// served; the request is answered as if the block were absent and the
// corruption logged. Each chunk is hashed once per version of its file
// (see fileChecks): blob files are verified when stored and never
// rewritten, and the receiving peer checks every chunk's CID and the
// whole digest anyway, so re-hashing every chunk on every send would only
// cost CPU.
//
// Put, PutMany and DeleteBlock are refused: blocks enter only through
// Exchange (a fetched blob is installed whole into the Store) and leave
// with their blob.
type blobBlockstore struct {
	store  *Store
	index  *chunkIndex
	logger *slog.Logger

	checks fileChecks

	mu        sync.RWMutex
	live      map[string][]liveChunk // by chunk name
	liveRoots map[[sha256.Size]byte]*transfer
}

func newBlobBlockstore(store *Store, index *chunkIndex, logger *slog.Logger) *blobBlockstore {
	return &blobBlockstore{
		store: store, index: index, logger: logger,
		checks:    fileChecks{blobs: make(map[digest.Digest]*fileCheck)},
		live:      make(map[string][]liveChunk),
		liveRoots: make(map[[sha256.Size]byte]*transfer),
	}
}

// maxFileChecks bounds the blob files fileChecks remembers; past it an
// arbitrary one is forgotten (its chunks are hashed again when served).
const maxFileChecks = 4096

// fileChecks remembers which chunks of which blob files were found to
// match their CIDs, together with the identity of the file they were read
// from (device and inode, size, modification time, as seen before the
// read). A chunk counts as checked only while its blob file still has
// that identity: a file replaced, truncated or written to since is hashed
// again. Chunks hashed while computing a chunk list (ChunkRoot) or while
// fetching a blob count as checked. Nothing is persisted: after a restart
// every chunk is hashed again the first time it is served.
type fileChecks struct {
	mu    sync.Mutex
	blobs map[digest.Digest]*fileCheck
}

// fileCheck is what fileChecks knows of one blob file.
type fileCheck struct {
	info os.FileInfo
	all  bool               // every chunk matched
	offs map[int64]struct{} // else: the offsets of chunks that matched
}

// sameFile reports whether a and b describe one unchanged file.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// checked reports whether the chunk at off of blob d, whose file is now
// described by info, matched its CID before.
func (c *fileChecks) checked(d digest.Digest, info os.FileInfo, off int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	fc := c.blobs[d]
	if fc == nil || !sameFile(fc.info, info) {
		return false
	}
	if fc.all {
		return true
	}
	_, ok := fc.offs[off]
	return ok
}

// mark records that the chunk at off (every chunk when off < 0) of blob d,
// read from the file described by info, matched its CID.
func (c *fileChecks) mark(d digest.Digest, info os.FileInfo, off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fc := c.blobs[d]
	if fc == nil || !sameFile(fc.info, info) {
		if fc == nil && len(c.blobs) >= maxFileChecks {
			for k := range c.blobs {
				delete(c.blobs, k)
				break
			}
		}
		fc = &fileCheck{info: info}
		c.blobs[d] = fc
	}
	switch {
	case fc.all:
	case off < 0:
		fc.all, fc.offs = true, nil
	default:
		if fc.offs == nil {
			fc.offs = make(map[int64]struct{})
		}
		fc.offs[off] = struct{}{}
	}
}

// forget drops what c knows of blob d.
func (c *fileChecks) forget(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.blobs, d)
}

var errReadOnly = fmt.Errorf("blocks are added only by fetching whole blobs: %w", hubmesh.ErrInvalid)

func notFound(c cid.Cid) error { return ipld.ErrNotFound{Cid: c} }

// addLive makes the chunks of t servable as they are written.
func (bs *blobBlockstore) addLive(t *transfer) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	bs.liveRoots[sha256.Sum256(t.rootData)] = t
	for i, s := range t.list.sums {
		bs.live[s] = append(bs.live[s], liveChunk{t: t, i: i})
	}
}

// dropLive undoes addLive.
func (bs *blobBlockstore) dropLive(t *transfer) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if sum := sha256.Sum256(t.rootData); bs.liveRoots[sum] == t {
		delete(bs.liveRoots, sum)
	}
	for _, s := range t.list.sums {
		refs := bs.live[s]
		kept := refs[:0]
		for _, r := range refs {
			if r.t != t {
				kept = append(kept, r)
			}
		}
		if len(kept) == 0 {
			delete(bs.live, s)
		} else {
			bs.live[s] = kept
		}
	}
}

// liveRoot returns the chunk list with sha2-256 sum of a fetch in
// progress.
func (bs *blobBlockstore) liveRoot(sum [sha256.Size]byte) ([]byte, bool) {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	if t := bs.liveRoots[sum]; t != nil {
		return t.rootData, true
	}
	return nil, false
}

// root returns the chunk list with sha2-256 sum, from the index or from a
// fetch in progress.
func (bs *blobBlockstore) root(sum [sha256.Size]byte) ([]byte, bool, error) {
	if root, ok, err := bs.index.rootBlock(sum); err != nil || ok {
		return root, ok, err
	}
	root, ok := bs.liveRoot(sum)
	return root, ok, nil
}

// liveRefs returns the in-progress locations of the chunk named sum.
func (bs *blobBlockstore) liveRefs(sum string) []liveChunk {
	bs.mu.RLock()
	defer bs.mu.RUnlock()
	return append([]liveChunk(nil), bs.live[sum]...)
}

// read returns the verified bytes of block c, or an ipld.ErrNotFound.
func (bs *blobBlockstore) read(ctx context.Context, c cid.Cid) ([]byte, error) {
	if sum, ok := sha256Of(c); ok {
		root, ok, err := bs.root(sum)
		if err != nil || ok {
			return root, err
		}
		return nil, notFound(c)
	}
	alg, name, ok := chunkSumOf(c)
	if !ok {
		return nil, notFound(c)
	}
	locs, err := bs.index.chunkLocs(alg, name)
	if err != nil {
		return nil, err
	}
	for _, loc := range locs {
		data, info, err := bs.readRange(loc)
		if err != nil {
			if !errors.Is(err, hubmesh.ErrBlobUnknown) {
				bs.logger.Warn("read chunk", "cid", c, "blob", loc.digest, "err", err)
			}
			continue
		}
		if bs.checks.checked(loc.digest, info, loc.off) {
			return data, nil
		}
		if string(chainSum(alg, data)) != name {
			bs.logger.Error("blob file does not match its chunk list; not serving it", "blob", loc.digest, "offset", loc.off, "cid", c)
			continue
		}
		bs.checks.mark(loc.digest, info, loc.off)
		return data, nil
	}
	for _, lc := range bs.liveRefs(name) {
		if data, ok := lc.t.readChunk(lc.i); ok && string(chainSum(alg, data)) == name {
			return data, nil
		}
	}
	return nil, notFound(c)
}

// chainSum returns the name of the chunk block data.
func chainSum(a *chainAlg, data []byte) []byte {
	h := &chainHasher{alg: a}
	h.Write(data)
	return h.Sum(nil)
}

// readRange reads the block of loc: its header, then its range of the
// blob file. It also returns what the file was (see fileChecks) before
// the read.
func (bs *blobBlockstore) readRange(loc chunkLoc) ([]byte, os.FileInfo, error) {
	f, info, err := bs.store.openFile(loc.digest)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if size := info.Size(); loc.off+loc.n > size {
		return nil, nil, fmt.Errorf("chunk at %d+%d beyond the blob's %d bytes", loc.off, loc.n, size)
	}
	buf := make([]byte, int64(len(loc.header))+loc.n)
	copy(buf, loc.header)
	if _, err := f.ReadAt(buf[len(loc.header):], loc.off); err != nil {
		return nil, nil, fmt.Errorf("read %d bytes at %d: %w", loc.n, loc.off, err)
	}
	return buf, info, nil
}

// size returns the size of block c without reading it, or an
// ipld.ErrNotFound. A chunk counts as present when its blob file exists.
func (bs *blobBlockstore) size(ctx context.Context, c cid.Cid) (int, error) {
	if sum, ok := sha256Of(c); ok {
		root, ok, err := bs.root(sum)
		if err != nil || ok {
			return len(root), err
		}
		return 0, notFound(c)
	}
	alg, name, ok := chunkSumOf(c)
	if !ok {
		return 0, notFound(c)
	}
	locs, err := bs.index.chunkLocs(alg, name)
	if err != nil {
		return 0, err
	}
	for _, loc := range locs {
		if size, err := bs.store.Stat(ctx, loc.digest); err == nil && loc.off+loc.n <= size {
			return len(loc.header) + int(loc.n), nil
		}
	}
	for _, lc := range bs.liveRefs(name) {
		if lc.t.chunkWritten(lc.i) {
			_, n := lc.t.list.chunkRange(lc.i)
			return chunkHeaderLen(alg) + int(n), nil
		}
	}
	return 0, notFound(c)
}

// Get implements blockstore.Blockstore.
func (bs *blobBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	data, err := bs.read(ctx, c)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// GetSize implements blockstore.Blockstore.
func (bs *blobBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	return bs.size(ctx, c)
}

// Has implements blockstore.Blockstore.
func (bs *blobBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	_, err := bs.size(ctx, c)
	if ipld.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// Put implements blockstore.Blockstore; it is refused.
func (bs *blobBlockstore) Put(context.Context, blocks.Block) error { return errReadOnly }

// PutMany implements blockstore.Blockstore; it is refused.
func (bs *blobBlockstore) PutMany(context.Context, []blocks.Block) error { return errReadOnly }

// DeleteBlock implements blockstore.Blockstore; it is refused.
func (bs *blobBlockstore) DeleteBlock(context.Context, cid.Cid) error { return errReadOnly }

// AllKeysChan implements blockstore.Blockstore. The exchange never
// announces its blocks (there is no DHT), so listing is not supported.
func (bs *blobBlockstore) AllKeysChan(context.Context) (<-chan cid.Cid, error) {
	return nil, fmt.Errorf("listing blocks is not supported: %w", hubmesh.ErrInvalid)
}
