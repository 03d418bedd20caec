package mesh

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

func newTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blobs")
	s, err := OpenStore(dir, testLogger(t))
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	return s, dir
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readBlob opens d and returns its content, checking the reported size.
func readBlob(t *testing.T, s *Store, d digest.Digest) []byte {
	t.Helper()
	rc, size, err := s.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File (for sendfile)", rc)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Errorf("Open size = %d, read %d bytes", size, len(b))
	}
	return b
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestStorePutOpenStat(t *testing.T) {
	t.Parallel()
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			s, dir := newTestStore(t)
			data := randomBytes(t, 3<<20+17) // several copy buffers plus a partial one
			d := alg.FromBytes(data)

			if _, err := s.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
				t.Fatalf("Stat before Put: err = %v, want ErrBlobUnknown", err)
			}
			if _, _, err := s.Open(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
				t.Fatalf("Open before Put: err = %v, want ErrBlobUnknown", err)
			}
			n, err := s.Put(t.Context(), d, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if n != int64(len(data)) {
				t.Errorf("Put = %d, want %d", n, len(data))
			}
			if got := readBlob(t, s, d); !bytes.Equal(got, data) {
				t.Error("Open returned other content than was put")
			}
			size, err := s.Stat(t.Context(), d)
			if err != nil || size != int64(len(data)) {
				t.Errorf("Stat = %d, %v; want %d", size, err, len(data))
			}
			enc := d.Encoded()
			if _, err := os.Stat(filepath.Join(dir, string(alg), enc[:2], enc)); err != nil {
				t.Errorf("blob not at the documented path: %v", err)
			}
			if files, bytes := s.Size(); files != 1 || bytes != int64(len(data)) {
				t.Errorf("Size = %d, %d; want 1, %d", files, bytes, len(data))
			}

			// The counters survive a reopen (they are recounted from disk).
			s2, err := OpenStore(dir, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if files, bytes := s2.Size(); files != 1 || bytes != int64(len(data)) {
				t.Errorf("after reopen Size = %d, %d; want 1, %d", files, bytes, len(data))
			}
			if got := readBlob(t, s2, d); !bytes.Equal(got, data) {
				t.Error("content changed across reopen")
			}
		})
	}
}

func TestStorePutEmptyBlob(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	d := digest.SHA256.FromBytes(nil)
	if n, err := s.Put(t.Context(), d, strings.NewReader("")); err != nil || n != 0 {
		t.Fatalf("Put empty = %d, %v", n, err)
	}
	if got := readBlob(t, s, d); len(got) != 0 {
		t.Errorf("empty blob read back %d bytes", len(got))
	}
}

func TestStorePutWrongDigestStoresNothing(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t)
	data := []byte("the real content")
	claimed := digest.SHA256.FromString("something else")
	_, err := s.Put(t.Context(), claimed, bytes.NewReader(data))
	if !errors.Is(err, hubmesh.ErrDigestMismatch) {
		t.Fatalf("Put with wrong digest: err = %v, want ErrDigestMismatch", err)
	}
	for _, d := range []digest.Digest{claimed, digest.SHA256.FromBytes(data)} {
		if _, err := s.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
			t.Errorf("Stat(%s) after failed Put: err = %v, want ErrBlobUnknown", d, err)
		}
	}
	if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
		t.Errorf("temp files left behind: %v", names)
	}
	if files, bytes := s.Size(); files != 0 || bytes != 0 {
		t.Errorf("Size = %d, %d; want 0, 0", files, bytes)
	}
}

// failingReader returns data and then err instead of io.EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestStorePutReaderErrorStoresNothing(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 2<<20)
	d := digest.SHA256.FromBytes(data)
	for name, readErr := range map[string]error{
		"broken":    errors.New("connection reset"),
		"truncated": io.ErrUnexpectedEOF, // what net/http returns for a short body
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, dir := newTestStore(t)
			// The reader fails after delivering exactly the right content:
			// the failure alone must be enough to reject it.
			_, err := s.Put(t.Context(), d, &failingReader{r: bytes.NewReader(data), err: readErr})
			if !errors.Is(err, readErr) {
				t.Fatalf("Put: err = %v, want %v", err, readErr)
			}
			if _, err := s.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
				t.Errorf("Stat after failed Put: err = %v, want ErrBlobUnknown", err)
			}
			if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
				t.Errorf("temp files left behind: %v", names)
			}
		})
	}
}

func TestStoreRejectsInvalidDigests(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t)
	// A file a traversal would reach if the digest were used unchecked.
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "x"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	hex64 := strings.Repeat("a", 64)
	for _, d := range []string{
		"",
		"sha256",
		"sha256:",
		"sha256:../../x",
		"sha256:../../../etc/passwd",
		"sha256:" + hex64[:62] + "/..",
		"sha256:" + strings.ToUpper(hex64),
		"sha256:" + hex64[:63],
		"sha256:" + hex64 + "a",
		"sha512:" + hex64, // too short for sha512
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		"sha384:" + strings.Repeat("a", 96), // valid, but not supported here
		"../sha256:" + hex64,
		"tmp:" + hex64,
	} {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			d := digest.Digest(d)
			if _, _, err := s.Open(t.Context(), d); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Errorf("Open: err = %v, want ErrInvalid", err)
			}
			if _, err := s.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Errorf("Stat: err = %v, want ErrInvalid", err)
			}
			if _, err := s.Put(t.Context(), d, strings.NewReader("secret")); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Errorf("Put: err = %v, want ErrInvalid", err)
			}
			if err := s.Delete(t.Context(), d); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Errorf("Delete: err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestStoreConcurrentPutsOfOneBlob(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t)
	data := randomBytes(t, 1<<20+5)
	d := digest.SHA256.FromBytes(data)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.Put(t.Context(), d, bytes.NewReader(data))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d: %v", i, err)
		}
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Error("content differs after concurrent puts")
	}
	if files, bytes := s.Size(); files != 1 || bytes != int64(len(data)) {
		t.Errorf("Size = %d, %d; want 1, %d (counted once)", files, bytes, len(data))
	}
	if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
		t.Errorf("temp files left behind: %v", names)
	}
}

func TestStoreOpenWipesTempDir(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t)
	d := digest.SHA256.FromString("kept")
	if _, err := s.Put(t.Context(), d, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a put that a crash interrupted.
	for _, name := range []string{"put-123", "put-456"} {
		if err := os.WriteFile(filepath.Join(dir, "tmp", name), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := OpenStore(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if names := dirEntries(t, filepath.Join(dir, "tmp")); len(names) != 0 {
		t.Errorf("temp dir not wiped at open: %v", names)
	}
	if got := readBlob(t, s2, d); string(got) != "kept" {
		t.Errorf("stored blob = %q after reopen", got)
	}
}

func TestStoreDelete(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	d := digest.SHA256.FromString("gone soon")
	if _, err := s.Put(t.Context(), d, strings.NewReader("gone soon")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("Stat after Delete: err = %v, want ErrBlobUnknown", err)
	}
	if err := s.Delete(t.Context(), d); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("second Delete: err = %v, want ErrBlobUnknown", err)
	}
	if files, bytes := s.Size(); files != 0 || bytes != 0 {
		t.Errorf("Size = %d, %d; want 0, 0", files, bytes)
	}
}
