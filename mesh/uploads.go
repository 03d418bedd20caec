package mesh

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// UploadIdleTTL is how long an upload session may stay idle (no Get,
// Append or Commit) before Run expires it.
const UploadIdleTTL = time.Hour

// expireInterval is how often Run looks for idle sessions.
const expireInterval = time.Minute

// Uploads holds the blob upload sessions of this node. Sessions live in
// memory; the bytes they received live in <uploadsDir>/<id>. The directory
// is wiped when Uploads is created, so after a restart every old session
// id is unknown (hubmesh.ErrUploadUnknown).
//
// Uploads is safe for concurrent use.
type Uploads struct {
	dir    string
	store  *Store
	logger *slog.Logger

	// ex, when set, gets the chunk list of every committed upload (see
	// IndexChunks).
	ex atomic.Pointer[Exchange]

	mu       sync.Mutex
	sessions map[string]*Upload
}

// IndexChunks makes every session created from now on record the hash
// states of its content at each multiple of ex's chunk size while it
// hashes it, and hand them to ex when it commits: ex then has the blob's
// chunk list at once (ChunkRoot answers without reading the blob again),
// so the first peer that fetches a new blob waits for no hashing pass.
func (u *Uploads) IndexChunks(ex *Exchange) { u.ex.Store(ex) }

// NewUploads wipes and recreates uploadsDir and returns an empty session
// table whose commits go into store. uploadsDir must be on the same
// filesystem as the store, so that a commit is a rename; NewUploads checks
// that.
func NewUploads(uploadsDir string, store *Store, logger *slog.Logger) (*Uploads, error) {
	if store == nil || logger == nil {
		return nil, fmt.Errorf("new uploads: nil store or logger: %w", hubmesh.ErrInvalid)
	}
	if err := os.RemoveAll(uploadsDir); err != nil {
		return nil, fmt.Errorf("new uploads: wipe %s: %w", uploadsDir, err)
	}
	if err := os.MkdirAll(uploadsDir, 0o755); err != nil {
		return nil, fmt.Errorf("new uploads: %w", err)
	}
	if err := checkSameFS(uploadsDir, store.tmp); err != nil {
		return nil, fmt.Errorf("new uploads: %s and %s must be on one filesystem: %w", uploadsDir, store.dir, err)
	}
	return &Uploads{dir: uploadsDir, store: store, logger: logger, sessions: make(map[string]*Upload)}, nil
}

// checkSameFS proves that a rename from dir a to dir b works.
func checkSameFS(a, b string) error {
	f, err := os.CreateTemp(a, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	dst := filepath.Join(b, filepath.Base(f.Name()))
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Remove(dst)
}

// Create starts a session for repo that hashes with alg, the algorithm the
// client announced. An algorithm the store does not support fails with an
// error wrapping hubmesh.ErrInvalid.
func (u *Uploads) Create(ctx context.Context, repo string, alg digest.Algorithm) (*Upload, error) {
	h, err := newHash(alg)
	if err != nil {
		return nil, fmt.Errorf("create upload: %w", err)
	}
	id := uuid.NewString()
	path := filepath.Join(u.dir, id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create upload: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create upload: %w", err)
	}
	up := &Upload{owner: u, id: id, repo: repo, alg: alg, path: path, hash: h}
	if ex := u.ex.Load(); ex != nil {
		if a, ok := chainAlgOf(alg); ok {
			up.chunks = &chunkRecorder{h: h, alg: a, unit: int64(ex.cfg.ChunkSize)}
		}
	}
	up.touch()
	u.mu.Lock()
	u.sessions[id] = up
	u.mu.Unlock()
	return up, nil
}

// Get returns the session id of repo. An unknown id, or one that belongs
// to another repository, fails with an error wrapping
// hubmesh.ErrUploadUnknown.
func (u *Uploads) Get(ctx context.Context, repo, id string) (*Upload, error) {
	u.mu.Lock()
	up, ok := u.sessions[id]
	u.mu.Unlock()
	if !ok || up.repo != repo {
		return nil, fmt.Errorf("upload %q in %s: %w", id, repo, hubmesh.ErrUploadUnknown)
	}
	up.touch()
	return up, nil
}

// Len returns the number of open sessions.
func (u *Uploads) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sessions)
}

// Run expires sessions idle for longer than UploadIdleTTL until ctx ends.
// It returns nil when ctx ends.
func (u *Uploads) Run(ctx context.Context) error {
	t := time.NewTicker(expireInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if n := u.ExpireIdle(now); n > 0 {
				u.logger.Info("expired idle uploads", "count", n)
			}
		}
	}
}

// ExpireIdle ends every session that was last used more than
// UploadIdleTTL before now and is not busy, deletes its data and returns
// how many it ended. Run calls it periodically.
func (u *Uploads) ExpireIdle(now time.Time) int {
	cutoff := now.Add(-UploadIdleTTL).UnixNano()
	u.mu.Lock()
	var idle []*Upload
	for _, up := range u.sessions {
		if up.lastUsed.Load() < cutoff {
			idle = append(idle, up)
		}
	}
	u.mu.Unlock()
	n := 0
	for _, up := range idle {
		if !up.mu.TryLock() {
			continue // an append or commit is running: not idle
		}
		if !up.done && up.lastUsed.Load() < cutoff {
			up.endLocked()
			n++
		}
		up.mu.Unlock()
	}
	return n
}

// Upload is one blob upload session. Its methods are safe for concurrent
// use; Append, Commit and Cancel are serialised.
type Upload struct {
	owner *Uploads
	id    string
	repo  string
	alg   digest.Algorithm
	path  string

	lastUsed atomic.Int64 // unix nanoseconds
	size     atomic.Int64 // bytes received; written only under mu

	mu   sync.Mutex
	hash hash.Hash // running hash of alg over the size bytes received
	// chunks, when set, feeds hash and records its states (see
	// Uploads.IndexChunks).
	chunks *chunkRecorder
	done   bool // committed, cancelled or expired
}

// ID returns the session id.
func (up *Upload) ID() string { return up.id }

// Size returns the number of bytes received so far.
func (up *Upload) Size() int64 { return up.size.Load() }

func (up *Upload) touch() { up.lastUsed.Store(time.Now().UnixNano()) }

func (up *Upload) unknown() error {
	return fmt.Errorf("upload %q in %s: %w", up.id, up.repo, hubmesh.ErrUploadUnknown)
}

// Append writes the content of r at offset, which must equal Size() (else
// an error wrapping hubmesh.ErrRangeInvalid), and returns the new size.
// When reading r or writing fails part way, the data written by this call
// is cut off again and the session stays at its previous size and hash, so
// the client can retry from there.
func (up *Upload) Append(ctx context.Context, offset int64, r io.Reader) (int64, error) {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.done {
		return 0, up.unknown()
	}
	up.touch()
	defer up.touch()
	prev := up.size.Load()
	if offset != prev {
		return prev, fmt.Errorf("upload %q: append at offset %d, expected %d: %w", up.id, offset, prev, hubmesh.ErrRangeInvalid)
	}
	state, err := up.hash.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return prev, fmt.Errorf("upload %q: save hash state: %w", up.id, err)
	}
	f, err := os.OpenFile(up.path, os.O_WRONLY, 0)
	if err != nil {
		return prev, fmt.Errorf("upload %q: %w", up.id, err)
	}
	if _, err = f.Seek(prev, io.SeekStart); err == nil {
		var n int64
		var h io.Writer = up.hash
		if up.chunks != nil {
			h = up.chunks
		}
		n, err = copyHashed(ctx, f, h, r)
		if err == nil {
			up.size.Store(prev + n)
		}
	}
	if err == nil {
		err = f.Close()
		if err == nil {
			return up.size.Load(), nil
		}
		up.size.Store(prev)
	} else {
		f.Close()
	}
	if rerr := up.rollback(prev, state); rerr != nil {
		up.owner.logger.Error("upload rollback failed; session ended", "upload", up.id, "err", rerr)
		up.endLocked()
		return prev, fmt.Errorf("upload %q: %w (rollback: %v)", up.id, err, rerr)
	}
	return prev, fmt.Errorf("upload %q: append: %w", up.id, err)
}

// rollback restores the file length and hash state saved before a failed
// append.
func (up *Upload) rollback(size int64, state []byte) error {
	if err := os.Truncate(up.path, size); err != nil {
		return err
	}
	if up.chunks != nil {
		up.chunks.truncate(size)
	}
	return up.hash.(encoding.BinaryUnmarshaler).UnmarshalBinary(state)
}

// Commit checks that the content received has digest d, moves it into the
// store (fsynced), ends the session and returns the blob's descriptor.
// When d uses another algorithm than the session, the data is hashed
// again with d's. A mismatch fails with an error wrapping
// hubmesh.ErrDigestMismatch and leaves the session usable; an invalid or
// unsupported d fails with hubmesh.ErrInvalid.
func (up *Upload) Commit(ctx context.Context, d digest.Digest) (hubmesh.Descriptor, error) {
	if err := checkDigest(d); err != nil {
		return hubmesh.Descriptor{}, fmt.Errorf("commit upload %q: %w", up.id, err)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.done {
		return hubmesh.Descriptor{}, up.unknown()
	}
	up.touch()
	size := up.size.Load()
	var got digest.Digest
	if d.Algorithm() == up.alg {
		got = digest.NewDigest(up.alg, up.hash)
	} else {
		var err error
		if got, err = hashFile(ctx, up.path, d.Algorithm()); err != nil {
			return hubmesh.Descriptor{}, fmt.Errorf("commit upload %q: %w", up.id, err)
		}
	}
	if got != d {
		return hubmesh.Descriptor{}, fmt.Errorf("commit upload %q: content has digest %s, not %s: %w", up.id, got, d, hubmesh.ErrDigestMismatch)
	}
	if err := syncFile(up.path); err != nil {
		return hubmesh.Descriptor{}, fmt.Errorf("commit upload %q: %w", up.id, err)
	}
	written, _ := os.Stat(up.path)
	if err := up.owner.store.adopt(up.path, d, size); err != nil {
		// adopt removed the data: the session cannot continue.
		up.endLocked()
		return hubmesh.Descriptor{}, fmt.Errorf("commit upload %q: %w", up.id, err)
	}
	up.done = true
	up.owner.forget(up.id)
	if ex := up.owner.ex.Load(); ex != nil && up.chunks != nil && d.Algorithm() == up.alg && written != nil {
		if err := ex.indexStates(d, size, written, up.chunks); err != nil {
			// ChunkRoot computes the list when a peer first asks.
			up.owner.logger.Warn("index the chunks of a committed upload", "blob", d, "err", err)
		}
	}
	return hubmesh.Descriptor{Digest: d, Size: size}, nil
}

// Cancel ends the session and deletes what it received. Cancelling a
// session that already ended fails with hubmesh.ErrUploadUnknown.
func (up *Upload) Cancel(ctx context.Context) error {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.done {
		return up.unknown()
	}
	up.endLocked()
	return nil
}

// endLocked ends the session and deletes its data. up.mu must be held.
func (up *Upload) endLocked() {
	up.done = true
	up.owner.forget(up.id)
	if err := os.Remove(up.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		up.owner.logger.Warn("remove upload data", "upload", up.id, "err", err)
	}
}

func (u *Uploads) forget(id string) {
	u.mu.Lock()
	delete(u.sessions, id)
	u.mu.Unlock()
}

// hashFile returns the digest of the file at path under alg.
func hashFile(ctx context.Context, path string, alg digest.Algorithm) (digest.Digest, error) {
	h, err := newHash(alg)
	if err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := copyHashed(ctx, io.Discard, h, f); err != nil {
		return "", err
	}
	return digest.NewDigest(alg, h), nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
