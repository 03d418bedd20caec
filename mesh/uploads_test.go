package mesh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

type uploadsEnv struct {
	store      *Store
	uploads    *Uploads
	uploadsDir string
}

func newTestUploads(t *testing.T) uploadsEnv {
	t.Helper()
	root := t.TempDir()
	store, err := OpenStore(filepath.Join(root, "blobs"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "uploads")
	u, err := NewUploads(dir, store, testLogger(t))
	if err != nil {
		t.Fatalf("NewUploads: %v", err)
	}
	return uploadsEnv{store: store, uploads: u, uploadsDir: dir}
}

func mustCreate(t *testing.T, u *Uploads, repo string, alg digest.Algorithm) *Upload {
	t.Helper()
	up, err := u.Create(t.Context(), repo, alg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return up
}

func mustAppend(t *testing.T, up *Upload, offset int64, data []byte) {
	t.Helper()
	n, err := up.Append(t.Context(), offset, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Append at %d: %v", offset, err)
	}
	if want := offset + int64(len(data)); n != want {
		t.Fatalf("Append at %d returned size %d, want %d", offset, n, want)
	}
}

func TestUploadChunkedAppendsCommit(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	data := randomBytes(t, 5<<20+3)
	d := digest.SHA256.FromBytes(data)
	up := mustCreate(t, env.uploads, "alice/app", digest.SHA256)
	if up.ID() == "" || up.Size() != 0 {
		t.Fatalf("new session: id %q size %d", up.ID(), up.Size())
	}
	// Chunks of uneven sizes, crossing copy buffer boundaries.
	var off int64
	for _, n := range []int{1, 1 << 20, 3<<20 + 1, 1<<20 + 1} {
		mustAppend(t, up, off, data[off:off+int64(n)])
		off += int64(n)
	}
	got, err := env.uploads.Get(t.Context(), "alice/app", up.ID())
	if err != nil || got.Size() != int64(len(data)) {
		t.Fatalf("Get: size %v, err %v; want %d", got, err, len(data))
	}
	desc, err := up.Commit(t.Context(), d)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if desc.Digest != d || desc.Size != int64(len(data)) {
		t.Errorf("Commit = %+v, want digest %s size %d", desc, d, len(data))
	}
	if b := readBlob(t, env.store, d); !bytes.Equal(b, data) {
		t.Error("committed blob differs from the uploaded bytes")
	}
	if _, err := env.uploads.Get(t.Context(), "alice/app", up.ID()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Get after Commit: err = %v, want ErrUploadUnknown", err)
	}
	if _, err := up.Append(t.Context(), up.Size(), strings.NewReader("more")); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Append after Commit: err = %v, want ErrUploadUnknown", err)
	}
	if names := dirEntries(t, env.uploadsDir); len(names) != 0 {
		t.Errorf("upload files left after commit: %v", names)
	}
	if files, _ := env.store.Size(); files != 1 {
		t.Errorf("store holds %d blobs, want 1", files)
	}
}

func TestUploadEmptyBlob(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	d := digest.SHA256.FromBytes(nil)
	desc, err := up.Commit(t.Context(), d)
	if err != nil || desc.Size != 0 || desc.Digest != d {
		t.Fatalf("Commit empty = %+v, %v", desc, err)
	}
	if b := readBlob(t, env.store, d); len(b) != 0 {
		t.Errorf("empty blob has %d bytes", len(b))
	}
}

func TestUploadAppendOutOfOrder(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	if _, err := up.Append(t.Context(), 5, strings.NewReader("late")); !errors.Is(err, hubmesh.ErrRangeInvalid) {
		t.Fatalf("Append at 5 of empty session: err = %v, want ErrRangeInvalid", err)
	}
	mustAppend(t, up, 0, []byte("0123456789"))
	for _, off := range []int64{0, 9, 11} {
		if _, err := up.Append(t.Context(), off, strings.NewReader("x")); !errors.Is(err, hubmesh.ErrRangeInvalid) {
			t.Errorf("Append at %d of 10-byte session: err = %v, want ErrRangeInvalid", off, err)
		}
	}
	if up.Size() != 10 {
		t.Errorf("Size = %d after rejected appends, want 10", up.Size())
	}
	if _, err := up.Commit(t.Context(), digest.SHA256.FromString("0123456789")); err != nil {
		t.Errorf("Commit after rejected appends: %v", err)
	}
}

func TestUploadConcurrentAppendsAtOneOffset(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	chunk := randomBytes(t, 2<<20)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = up.Append(t.Context(), 0, bytes.NewReader(chunk)) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, hubmesh.ErrRangeInvalid):
			t.Errorf("concurrent Append: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d appends at offset 0 succeeded, want exactly 1", ok, n)
	}
	if _, err := up.Commit(t.Context(), digest.SHA256.FromBytes(chunk)); err != nil {
		t.Errorf("Commit: %v", err)
	}
}

func TestUploadFailedAppendRestoresSizeAndHash(t *testing.T) {
	t.Parallel()
	for name, readErr := range map[string]error{
		"reset":     errors.New("connection reset by peer"),
		"truncated": io.ErrUnexpectedEOF,
		"cancelled": context.Canceled,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newTestUploads(t)
			data := randomBytes(t, 4<<20)
			up := mustCreate(t, env.uploads, "r", digest.SHA256)
			mustAppend(t, up, 0, data[:1000])

			// 2.5 MiB of garbage arrive (more than one copy buffer, so some
			// of it reaches the file and the hash) and then the body fails.
			garbage := randomBytes(t, 5<<19)
			n, err := up.Append(t.Context(), 1000, &failingReader{r: bytes.NewReader(garbage), err: readErr})
			if !errors.Is(err, readErr) {
				t.Fatalf("failing Append: err = %v, want %v", err, readErr)
			}
			if n != 1000 || up.Size() != 1000 {
				t.Fatalf("after failed Append: returned %d, Size %d; want 1000", n, up.Size())
			}
			info, err := os.Stat(filepath.Join(env.uploadsDir, up.ID()))
			if err != nil || info.Size() != 1000 {
				t.Fatalf("upload file: %v, err %v; want 1000 bytes", info, err)
			}
			// The client retries from the old offset; the digest verifies.
			mustAppend(t, up, 1000, data[1000:])
			if _, err := up.Commit(t.Context(), digest.SHA256.FromBytes(data)); err != nil {
				t.Fatalf("Commit after retried Append: %v", err)
			}
			if b := readBlob(t, env.store, digest.SHA256.FromBytes(data)); !bytes.Equal(b, data) {
				t.Error("committed blob differs")
			}
		})
	}
}

func TestUploadAppendCancelledContext(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := up.Append(ctx, 0, strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with cancelled ctx: err = %v", err)
	}
	if up.Size() != 0 {
		t.Errorf("Size = %d, want 0", up.Size())
	}
}

func TestUploadCancel(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	mustAppend(t, up, 0, []byte("some bytes"))
	if err := up.Cancel(t.Context()); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if _, err := env.uploads.Get(t.Context(), "r", up.ID()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Get after Cancel: err = %v, want ErrUploadUnknown", err)
	}
	if names := dirEntries(t, env.uploadsDir); len(names) != 0 {
		t.Errorf("upload data left after Cancel: %v", names)
	}
	if err := up.Cancel(t.Context()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("second Cancel: err = %v, want ErrUploadUnknown", err)
	}
	if _, err := up.Append(t.Context(), 10, strings.NewReader("x")); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Append after Cancel: err = %v, want ErrUploadUnknown", err)
	}
	if _, err := up.Commit(t.Context(), digest.SHA256.FromString("some bytes")); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Commit after Cancel: err = %v, want ErrUploadUnknown", err)
	}
	if env.uploads.Len() != 0 {
		t.Errorf("Len = %d, want 0", env.uploads.Len())
	}
}

func TestUploadCommitMismatchKeepsSession(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	mustAppend(t, up, 0, []byte("part one, "))
	full := "part one, part two"
	if _, err := up.Commit(t.Context(), digest.SHA256.FromString(full)); !errors.Is(err, hubmesh.ErrDigestMismatch) {
		t.Fatalf("early Commit: err = %v, want ErrDigestMismatch", err)
	}
	if _, err := env.store.Stat(t.Context(), digest.SHA256.FromString(full)); !errors.Is(err, hubmesh.ErrBlobUnknown) {
		t.Errorf("mismatched commit stored something: %v", err)
	}
	if _, err := env.uploads.Get(t.Context(), "r", up.ID()); err != nil {
		t.Fatalf("Get after mismatch: %v", err)
	}
	mustAppend(t, up, 10, []byte("part two"))
	if _, err := up.Commit(t.Context(), digest.SHA256.FromString(full)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if b := readBlob(t, env.store, digest.SHA256.FromString(full)); string(b) != full {
		t.Errorf("blob = %q, want %q", b, full)
	}
}

func TestUploadAlgorithms(t *testing.T) {
	t.Parallel()
	data := randomBytes(t, 2<<20+9)
	tests := []struct {
		name    string
		session digest.Algorithm
		commit  digest.Algorithm
	}{
		{"sha512 session", digest.SHA512, digest.SHA512},
		{"sha256 session committed as sha512", digest.SHA256, digest.SHA512},
		{"sha512 session committed as sha256", digest.SHA512, digest.SHA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newTestUploads(t)
			up := mustCreate(t, env.uploads, "r", tt.session)
			mustAppend(t, up, 0, data[:1<<20])
			mustAppend(t, up, 1<<20, data[1<<20:])
			wrong := tt.commit.FromString("not it")
			if _, err := up.Commit(t.Context(), wrong); !errors.Is(err, hubmesh.ErrDigestMismatch) {
				t.Fatalf("Commit(%s): err = %v, want ErrDigestMismatch", wrong, err)
			}
			d := tt.commit.FromBytes(data)
			desc, err := up.Commit(t.Context(), d)
			if err != nil {
				t.Fatalf("Commit(%s): %v", d, err)
			}
			if desc.Digest != d || desc.Size != int64(len(data)) {
				t.Errorf("Commit = %+v", desc)
			}
			if b := readBlob(t, env.store, d); !bytes.Equal(b, data) {
				t.Error("committed blob differs")
			}
		})
	}
}

func TestUploadInvalidInput(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	for _, alg := range []digest.Algorithm{"md5", "sha384", "", "../x"} {
		if _, err := env.uploads.Create(t.Context(), "r", alg); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("Create(%q): err = %v, want ErrInvalid", alg, err)
		}
	}
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	for _, d := range []digest.Digest{"", "sha256:../../x", "sha384:" + digest.Digest(strings.Repeat("a", 96))} {
		if _, err := up.Commit(t.Context(), d); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("Commit(%q): err = %v, want ErrInvalid", d, err)
		}
	}
	if _, err := env.uploads.Get(t.Context(), "r", up.ID()); err != nil {
		t.Errorf("session gone after invalid commits: %v", err)
	}
}

func TestUploadGetWrongRepoOrID(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "alice/app", digest.SHA256)
	for _, c := range []struct{ repo, id string }{
		{"bob/app", up.ID()},
		{"alice/app", "no-such-id"},
		{"alice/app", "../" + up.ID()},
		{"alice/app", ""},
	} {
		if _, err := env.uploads.Get(t.Context(), c.repo, c.id); !errors.Is(err, hubmesh.ErrUploadUnknown) {
			t.Errorf("Get(%q, %q): err = %v, want ErrUploadUnknown", c.repo, c.id, err)
		}
	}
}

func TestUploadsReopenForgetsSessions(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	up := mustCreate(t, env.uploads, "r", digest.SHA256)
	mustAppend(t, up, 0, []byte("interrupted by a crash"))

	u2, err := NewUploads(env.uploadsDir, env.store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u2.Get(t.Context(), "r", up.ID()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Get of old session after reopen: err = %v, want ErrUploadUnknown", err)
	}
	if names := dirEntries(t, env.uploadsDir); len(names) != 0 {
		t.Errorf("uploads dir not wiped at open: %v", names)
	}
	// The new table works.
	up2 := mustCreate(t, u2, "r", digest.SHA256)
	mustAppend(t, up2, 0, []byte("again"))
	if _, err := up2.Commit(t.Context(), digest.SHA256.FromString("again")); err != nil {
		t.Errorf("Commit after reopen: %v", err)
	}
}

func TestUploadCommitOfBlobAlreadyStored(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	d := digest.SHA256.FromString("same")
	for range 2 {
		up := mustCreate(t, env.uploads, "r", digest.SHA256)
		mustAppend(t, up, 0, []byte("same"))
		if _, err := up.Commit(t.Context(), d); err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
	if files, size := env.store.Size(); files != 1 || size != 4 {
		t.Errorf("store Size = %d, %d; want 1, 4", files, size)
	}
	if names := dirEntries(t, env.uploadsDir); len(names) != 0 {
		t.Errorf("upload files left: %v", names)
	}
}

func TestUploadExpireIdle(t *testing.T) {
	t.Parallel()
	env := newTestUploads(t)
	stale := mustCreate(t, env.uploads, "r", digest.SHA256)
	mustAppend(t, stale, 0, []byte("abandoned"))

	if n := env.uploads.ExpireIdle(time.Now()); n != 0 {
		t.Fatalf("ExpireIdle(now) ended %d sessions, want 0", n)
	}
	later := time.Now().Add(UploadIdleTTL + time.Second)
	if n := env.uploads.ExpireIdle(later); n != 1 {
		t.Fatalf("ExpireIdle(now+TTL) ended %d sessions, want 1", n)
	}
	if _, err := env.uploads.Get(t.Context(), "r", stale.ID()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Get of expired session: err = %v, want ErrUploadUnknown", err)
	}
	if _, err := stale.Append(t.Context(), 9, strings.NewReader("x")); !errors.Is(err, hubmesh.ErrUploadUnknown) {
		t.Errorf("Append to expired session: err = %v, want ErrUploadUnknown", err)
	}
	if names := dirEntries(t, env.uploadsDir); len(names) != 0 {
		t.Errorf("expired session data left: %v", names)
	}
}

// TestUploadsRunExpires runs the expiry loop on synctest's fake clock.
func TestUploadsRunExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newTestUploads(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- env.uploads.Run(ctx) }()

		idle := mustCreate(t, env.uploads, "r", digest.SHA256)
		busy := mustCreate(t, env.uploads, "r", digest.SHA256)
		// busy is used every 10 minutes; idle never again.
		var off int64
		for elapsed := time.Duration(0); elapsed < UploadIdleTTL+2*expireInterval; elapsed += 10 * time.Minute {
			time.Sleep(10 * time.Minute)
			mustAppend(t, busy, off, []byte("tick"))
			off += 4
		}
		synctest.Wait()
		if _, err := env.uploads.Get(t.Context(), "r", idle.ID()); !errors.Is(err, hubmesh.ErrUploadUnknown) {
			t.Errorf("idle session after TTL: err = %v, want ErrUploadUnknown", err)
		}
		if _, err := env.uploads.Get(t.Context(), "r", busy.ID()); err != nil {
			t.Errorf("busy session expired: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}
