package mesh

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// copyBufSize is the size of the pooled buffers used to move blob bytes.
// Large buffers mean few, large write syscalls and hash calls per blob.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// supportedAlgs are the digest algorithms the store accepts, in the order
// their directories are created.
var supportedAlgs = []digest.Algorithm{digest.SHA256, digest.SHA512}

// newHash returns a fresh hash for alg, or an error wrapping
// hubmesh.ErrInvalid if the store does not support alg.
func newHash(alg digest.Algorithm) (hash.Hash, error) {
	switch alg {
	case digest.SHA256:
		return sha256.New(), nil
	case digest.SHA512:
		return sha512.New(), nil
	default:
		return nil, fmt.Errorf("unsupported digest algorithm %q: %w", alg, hubmesh.ErrInvalid)
	}
}

// checkDigest rejects anything that is not a well-formed digest of a
// supported algorithm. A digest that passes consists of a known algorithm
// name and lower-case hex only, so it is safe to use in a path.
func checkDigest(d digest.Digest) error {
	// Validate first: Algorithm panics on a string without a separator.
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %v: %w", d, err, hubmesh.ErrInvalid)
	}
	if _, err := newHash(d.Algorithm()); err != nil {
		return fmt.Errorf("digest %q: %w", d, err)
	}
	return nil
}

// Store is the node's local content-addressed blob store. A blob lives at
// <dir>/<alg>/<first two hex digits>/<hex> and is only ever created by
// renaming a fully written, verified and fsynced temp file into place, so
// every file in the tree is complete and matches its name.
//
// Store satisfies registryapi.Blobs. It is safe for concurrent use.
type Store struct {
	dir    string
	tmp    string
	logger *slog.Logger

	// mu serialises the check-and-rename (and delete) of final paths so
	// that the counters count each blob exactly once.
	mu    sync.Mutex
	files atomic.Int64
	bytes atomic.Int64
}

// OpenStore opens (creating if needed) the blob store rooted at dir. It
// wipes dir/tmp (leftovers of puts and fetches interrupted by a crash),
// creates the prefix directories and counts the blobs present once, for
// Size.
func OpenStore(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		return nil, fmt.Errorf("open blob store: nil logger: %w", hubmesh.ErrInvalid)
	}
	s := &Store{dir: dir, tmp: filepath.Join(dir, "tmp"), logger: logger}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	if err := os.RemoveAll(s.tmp); err != nil {
		return nil, fmt.Errorf("open blob store: wipe temp dir: %w", err)
	}
	if err := os.Mkdir(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	for _, alg := range supportedAlgs {
		if err := os.MkdirAll(filepath.Join(dir, string(alg)), 0o755); err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	if err := s.count(); err != nil {
		return nil, fmt.Errorf("open blob store: %w", err)
	}
	logger.Debug("blob store open", "dir", dir, "blobs", s.files.Load(), "bytes", s.bytes.Load())
	return s, nil
}

// count sets the counters from what is on disk.
func (s *Store) count() error {
	var files, size int64
	for _, alg := range supportedAlgs {
		err := filepath.WalkDir(filepath.Join(s.dir, string(alg)), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			files++
			size += info.Size()
			return nil
		})
		if err != nil {
			return err
		}
	}
	s.files.Store(files)
	s.bytes.Store(size)
	return nil
}

// path returns the final path of d, which must have passed checkDigest.
func (s *Store) path(d digest.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.dir, string(d.Algorithm()), enc[:2], enc)
}

// Open returns the content of d and its size. The reader is an *os.File so
// that net/http can serve it with sendfile. It fails with an error wrapping
// hubmesh.ErrBlobUnknown when the blob is absent and hubmesh.ErrInvalid
// when d is not a valid digest of a supported algorithm.
func (s *Store) Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	f, info, err := s.openFile(d)
	if err != nil {
		return nil, 0, err
	}
	return f, info.Size(), nil
}

// openFile opens the file of blob d and returns it with what it was when
// opened (the exchange keys its chunk checks on that). It fails like Open.
func (s *Store) openFile(d digest.Digest) (*os.File, os.FileInfo, error) {
	if err := checkDigest(d); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.path(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("blob %s: %w", d, hubmesh.ErrBlobUnknown)
		}
		return nil, nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return f, info, nil
}

// Stat returns the size of d, or an error wrapping hubmesh.ErrBlobUnknown
// when it is absent (hubmesh.ErrInvalid for an invalid digest).
func (s *Store) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	if err := checkDigest(d); err != nil {
		return 0, err
	}
	info, err := os.Stat(s.path(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("blob %s: %w", d, hubmesh.ErrBlobUnknown)
		}
		return 0, fmt.Errorf("stat blob %s: %w", d, err)
	}
	return info.Size(), nil
}

// Put stores the content read from r under d and returns its size. The
// content is hashed while it is written to a temp file; when it does not
// match d, Put fails with an error wrapping hubmesh.ErrDigestMismatch and
// stores nothing. Otherwise the temp file is fsynced and renamed into
// place and the directory fsynced before Put returns. Putting a blob that
// is already present verifies the content and keeps the existing file.
func (s *Store) Put(ctx context.Context, d digest.Digest, r io.Reader) (int64, error) {
	if err := checkDigest(d); err != nil {
		return 0, err
	}
	h, _ := newHash(d.Algorithm())
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	tmpName := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmpName)
		}
	}()
	n, err := copyHashed(ctx, f, h, r)
	if err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return 0, fmt.Errorf("put blob %s: content has digest %s: %w", d, got, hubmesh.ErrDigestMismatch)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	committed = true
	if err := s.adopt(tmpName, d, n); err != nil {
		return 0, fmt.Errorf("put blob %s: %w", d, err)
	}
	return n, nil
}

// adopt moves the fsynced, verified file at src (on the store's
// filesystem) to the final path of d and fsyncs the directory. If d is
// already present, src is removed instead. src is gone when adopt returns,
// whatever the outcome.
func (s *Store) adopt(src string, d digest.Digest, size int64) error {
	dst := s.path(d)
	s.mu.Lock()
	if err := s.ensurePrefixDir(filepath.Dir(dst)); err != nil {
		s.mu.Unlock()
		os.Remove(src)
		return err
	}
	_, err := os.Lstat(dst)
	switch {
	case err == nil:
		s.mu.Unlock()
		if err := os.Remove(src); err != nil {
			s.logger.Warn("remove duplicate blob file", "path", src, "err", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Rename(src, dst); err != nil {
			s.mu.Unlock()
			os.Remove(src)
			return err
		}
		s.files.Add(1)
		s.bytes.Add(size)
		s.mu.Unlock()
	default:
		s.mu.Unlock()
		os.Remove(src)
		return err
	}
	// Also when the blob was already there: a concurrent adopt of the same
	// digest may not have synced the directory yet, and the caller is about
	// to rely on the blob being durable.
	return syncDir(filepath.Dir(dst))
}

// ensurePrefixDir creates the prefix directory of a blob on first use and
// makes its entry durable. s.mu must be held, so that no blob is renamed
// into a directory whose own entry is not yet synced.
func (s *Store) ensurePrefixDir(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// Delete removes d from the store. Deleting an absent blob fails with an
// error wrapping hubmesh.ErrBlobUnknown. Readers that already opened the
// blob keep reading it.
func (s *Store) Delete(ctx context.Context, d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	p := s.path(d)
	s.mu.Lock()
	info, err := os.Lstat(p)
	if err == nil {
		err = os.Remove(p)
	}
	if err == nil {
		s.files.Add(-1)
		s.bytes.Add(-info.Size())
	}
	s.mu.Unlock()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blob %s: %w", d, hubmesh.ErrBlobUnknown)
		}
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return syncDir(filepath.Dir(p))
}

// Size returns the number of blobs in the store and their total size in
// bytes, from counters kept up to date by Put, Commit, Exchange fetches
// and Delete.
func (s *Store) Size() (files int64, bytes int64) {
	return s.files.Load(), s.bytes.Load()
}

// writebackEvery is how many bytes copyHashed (and a fetch) writes to a
// file before it asks the kernel to start writing them back.
const writebackEvery = 8 << 20

// copyHashed copies r to w and h through a pooled buffer, in chunks as
// large as the buffer, and returns the number of bytes copied. It checks
// ctx between chunks. When w is an *os.File, writeback of its dirty pages
// is started every writebackEvery bytes (see startWriteback).
func copyHashed(ctx context.Context, w io.Writer, h io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n, unsynced int64
	f, _ := w.(*os.File)
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := fill(r, buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			h.Write(buf[:m])
			n += int64(m)
			if unsynced += int64(m); f != nil && unsynced >= writebackEvery {
				startWriteback(f)
				unsynced = 0
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read: %w", rerr)
		}
	}
}

// fill reads from r until buf is full or r fails. Unlike io.ReadFull it
// reports a clean end of input as exactly io.EOF (also after a partial
// buffer), so that a reader's own io.ErrUnexpectedEOF (a truncated HTTP
// body) stays an error.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// syncDir fsyncs a directory so that renames into it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
