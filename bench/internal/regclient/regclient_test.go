package regclient

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeRegistry is a minimal in-memory OCI registry: POST+PUT uploads,
// manifest PUT/GET and blob GET, checking what a real registry checks.
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte
	uploads   int
	corrupt   bool // serve blobs with their first byte flipped
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{}}
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(p, "/blobs/uploads/"):
		f.uploads++
		w.Header().Set("Location", p+strconv.Itoa(f.uploads)+"?_state=kept")
		w.WriteHeader(http.StatusAccepted)
	case r.Method == http.MethodPut && strings.Contains(p, "/blobs/uploads/"):
		body, _ := io.ReadAll(r.Body)
		want, err := digest.Parse(r.URL.Query().Get("digest"))
		if err != nil || r.URL.Query().Get("_state") != "kept" || digest.FromBytes(body) != want ||
			r.ContentLength != int64(len(body)) {
			http.Error(w, "DIGEST_INVALID", http.StatusBadRequest)
			return
		}
		f.blobs[want] = body
		w.WriteHeader(http.StatusCreated)
	case strings.Contains(p, "/manifests/"):
		if r.Method == http.MethodGet {
			m, ok := f.manifests[p]
			if !ok {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write(m)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var m v1.Manifest
		if r.Header.Get("Content-Type") != v1.MediaTypeImageManifest || json.Unmarshal(body, &m) != nil {
			http.Error(w, "MANIFEST_INVALID", http.StatusBadRequest)
			return
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, ok := f.blobs[d.Digest]; !ok {
				http.Error(w, "MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest)
				return
			}
		}
		f.manifests[p] = body
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodGet && strings.Contains(p, "/blobs/"):
		b, ok := f.blobs[digest.Digest(p[strings.LastIndex(p, "/")+1:])]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		if f.corrupt {
			b = append([]byte{b[0] ^ 1}, b[1:]...)
		}
		_, _ = w.Write(b)
	default:
		http.Error(w, "UNSUPPORTED", http.StatusMethodNotAllowed)
	}
}

func (f *fakeRegistry) setCorrupt(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.corrupt = v
}

// layerFiles writes n random layer files of size bytes into dir, salted
// like a harness's first round, and returns them as blobs.
func layerFiles(t *testing.T, dir string, n int, size int64, seed uint64) []Blob {
	t.Helper()
	blobs := make([]Blob, n)
	for i := range blobs {
		p := filepath.Join(dir, "layer-"+strconv.Itoa(i))
		if err := WriteRandom(p, size, SeedBytes(seed, uint64(i))); err != nil {
			t.Fatal(err)
		}
		head := SeedBytes(1, uint64(i))
		d, err := RewriteHead(p, head[:SaltLen])
		if err != nil {
			t.Fatal(err)
		}
		blobs[i] = Blob{Path: p, Desc: v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: d, Size: size}}
	}
	return blobs
}

func TestLayerFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := WriteRandom(p, 64<<10, SeedBytes(9, 0)); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) != 64<<10 || !bytes.Equal(da, db) {
		t.Fatalf("same seed: %d and %d bytes, equal %v; want the same 64KiB", len(da), len(db), bytes.Equal(da, db))
	}
	d, err := RewriteHead(a, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	da, _ = os.ReadFile(a)
	if !bytes.HasPrefix(da, []byte("0123456789abcdef")) || !bytes.Equal(da[SaltLen:], db[SaltLen:]) || digest.FromBytes(da) != d {
		t.Errorf("RewriteHead: head or digest wrong, or the rest of the file changed")
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	reg := newFakeRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cl := NewClient(srv.URL, NewTransport(64), 4)
	defer cl.Close()

	img, err := NewImage(layerFiles(t, t.TempDir(), 5, 64<<10, 2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Push(t.Context(), "bench/image", "r0", img); err != nil {
		t.Fatal(err)
	}
	if reg.uploads != 6 || len(reg.blobs) != 6 {
		t.Errorf("registry got %d uploads, %d blobs; want 6 and 6 (5 layers and the config)", reg.uploads, len(reg.blobs))
	}
	n, err := cl.Pull(t.Context(), "bench/image", "r0", img.Digest)
	if err != nil || n != 5*64<<10 {
		t.Fatalf("pull = %d, %v; want %d bytes", n, err, 5*64<<10)
	}

	if _, err := cl.Pull(t.Context(), "bench/image", "r0", digest.FromString("other")); err == nil ||
		!strings.Contains(err.Error(), "pushed") {
		t.Errorf("pull of a manifest with another digest: err %v, want a digest mismatch", err)
	}
	reg.setCorrupt(true)
	if _, err := cl.Pull(t.Context(), "bench/image", "r0", img.Digest); err == nil ||
		!strings.Contains(err.Error(), "content has digest") {
		t.Errorf("pull of corrupted blobs: err %v, want a digest mismatch", err)
	}
	if _, err := cl.Pull(t.Context(), "bench/image", "nope", img.Digest); err == nil ||
		!strings.Contains(err.Error(), "404") {
		t.Errorf("pull of a missing tag: err %v, want the 404", err)
	}
}

func TestManifestPuts(t *testing.T) {
	reg := newFakeRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cl := NewClient(srv.URL, NewTransport(64), 4)
	defer cl.Close()

	ms, err := cl.SmallManifests(t.Context(), "bench/m", "", 50)
	if err != nil {
		t.Fatal(err)
	}
	run, err := cl.ManifestPuts(t.Context(), "bench/m", "m", ms, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Lat) != 50 || len(reg.manifests) != 50 || len(reg.blobs) != 2 {
		t.Errorf("%d latencies, %d manifests, %d blobs; want 50, 50, 2", len(run.Lat), len(reg.manifests), len(reg.blobs))
	}
	for i, d := range run.Lat {
		if d <= 0 || d > run.Elapsed {
			t.Errorf("latency %d = %v outside (0, %v]", i, d, run.Elapsed)
		}
	}
	if _, err := cl.SmallManifests(t.Context(), "bench/m", "", 0); err == nil {
		t.Error("SmallManifests of none: no error")
	}
}

func TestPullBlobAndLabelledManifestPuts(t *testing.T) {
	reg := newFakeRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	c := NewClient(srv.URL, NewTransport(4), 4)
	defer c.Close()
	ctx := t.Context()

	img, err := NewImage(layerFiles(t, t.TempDir(), 1, 3<<20, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, "bench/x", "r0", img); err != nil {
		t.Fatal(err)
	}
	f, err := c.PullBlob(ctx, "bench/x", img.Layers[0].Desc)
	if err != nil {
		t.Fatal(err)
	}
	if f.Bytes != 3<<20 || f.TTFB <= 0 || f.Total < f.TTFB {
		t.Errorf("fetch = %+v", f)
	}
	reg.setCorrupt(true)
	if _, err := c.PullBlob(ctx, "bench/x", img.Layers[0].Desc); err == nil || !strings.Contains(err.Error(), "content has digest") {
		t.Errorf("corrupt blob: err = %v, want a digest error", err)
	}
	reg.setCorrupt(false)
	missing := v1.Descriptor{Digest: digest.FromString("nope"), Size: 4}
	if _, err := c.PullBlob(ctx, "bench/x", missing); err == nil || !strings.Contains(err.Error(), "404") ||
		!strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Errorf("missing blob: err = %v, want the 404 with its error document", err)
	}

	ms, err := c.SmallManifests(ctx, "bench/m", "leader", 40)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range ms {
		seen[string(m)] = true
	}
	if len(seen) != 40 {
		t.Fatalf("%d distinct manifests of 40", len(seen))
	}
	run, err := c.ManifestPuts(ctx, "bench/m", "m", ms, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.manifests) != 41 || len(run.Lat) != 40 || run.PerSecond() <= 0 {
		t.Errorf("manifests PUT %d (want 41 with the image's), %d latencies, %v/s", len(reg.manifests), len(run.Lat), run.PerSecond())
	}
	for i, d := range run.Lat {
		if d <= 0 || d > run.Elapsed {
			t.Errorf("latency %d = %v outside (0, %v]", i, d, run.Elapsed)
		}
	}
	small := 0
	for _, b := range reg.blobs {
		if len(b) == 1024 && bytes.HasPrefix(b, []byte("bench/m leader\x00")) {
			small++
		}
	}
	if small != 1 {
		t.Errorf("%d small layers holding the repo and label, want 1", small)
	}
}

// TestBasicAuth pushes and pulls through BasicAuth against a registry
// that refuses requests without the right credentials.
func TestBasicAuth(t *testing.T) {
	reg := newFakeRegistry()
	// Each phase talks to its own server, so that requests still in
	// flight from a failed push of one phase are not counted in another.
	serve := func() (url string, refused func() int) {
		var mu sync.Mutex
		n := 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "admin" || p != "pw" {
				mu.Lock()
				n++
				mu.Unlock()
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
				return
			}
			reg.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL, func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}
	}
	img, err := NewImage(layerFiles(t, t.TempDir(), 2, 16<<10, 3), nil)
	if err != nil {
		t.Fatal(err)
	}

	refusedURL, _ := serve()
	anon := NewClient(refusedURL, NewTransport(4), 2)
	defer anon.Close()
	if err := anon.Push(t.Context(), "bench/auth", "r0", img); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("push without credentials: %v, want a 401", err)
	}
	wrong := NewClient(refusedURL, BasicAuth(NewTransport(4), "admin", "nope"), 2)
	defer wrong.Close()
	if err := wrong.Push(t.Context(), "bench/auth", "r0", img); err == nil {
		t.Fatal("push with a wrong password succeeded")
	}

	url, refused := serve()
	cl := NewClient(url, BasicAuth(NewTransport(4), "admin", "pw"), 2)
	defer cl.Close()
	if err := cl.Push(t.Context(), "bench/auth", "r0", img); err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Pull(t.Context(), "bench/auth", "r0", img.Digest); err != nil || n != 2*16<<10 {
		t.Fatalf("pull = %d, %v", n, err)
	}
	if _, err := cl.PullBlob(t.Context(), "bench/auth", img.Layers[0].Desc); err != nil {
		t.Fatal(err)
	}
	if n := refused(); n != 0 {
		t.Errorf("%d requests with credentials were refused", n)
	}
}
