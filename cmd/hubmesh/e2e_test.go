package main_test

// End-to-end tests: the real hubmesh binary, run by node/nodetest, driven by
// real clients (raw HTTP here, crane, regctl, skopeo, oras, docker and the
// OCI conformance suite in the other files).

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

func TestMain(m *testing.M) { nodetest.Main(m) }

// registry is a minimal OCI distribution client over plain HTTP, so the
// tests see exactly the status codes and bytes a client sees. With a user
// it sends Basic credentials on every request (unless the request carries
// an Authorization header of its own).
type registry struct {
	base           string // http://127.0.0.1:PORT
	client         *http.Client
	user, password string
}

// newRegistry is an anonymous client of the registry at base.
func newRegistry(base string) *registry {
	return &registry{base: base, client: &http.Client{Timeout: 30 * time.Second}}
}

// adminRegistry is a client of node p that authenticates as the cluster's
// administrator (nodetest gives every cluster one) with Basic auth.
func adminRegistry(p *nodetest.Process) *registry {
	r := newRegistry(p.URL())
	r.user, r.password = p.Admin()
	return r
}

// ociError is one entry of an OCI error body.
type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// response is what a request returned, body read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Codes lists the OCI error codes in the body.
func (r response) Codes() []string {
	var e struct {
		Errors []ociError `json:"errors"`
	}
	if json.Unmarshal(r.Body, &e) != nil {
		return nil
	}
	var codes []string
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

func (r response) String() string {
	b := r.Body
	if len(b) > 512 {
		b = b[:512]
	}
	return fmt.Sprintf("%d %q", r.Status, b)
}

// do sends a request; path is absolute ("/v2/...") or a full URL (a
// Location header). It returns an error only when no response arrived.
func (g *registry) do(ctx context.Context, method, path string, hdr http.Header, body io.Reader) (response, error) {
	u, err := url.Parse(g.base)
	if err != nil {
		return response{}, err
	}
	ref, err := url.Parse(path)
	if err != nil {
		return response{}, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.ResolveReference(ref).String(), body)
	if err != nil {
		return response{}, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if g.user != "" && req.Header.Get("Authorization") == "" {
		req.SetBasicAuth(g.user, g.password)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// pushBlob uploads content by POST then PUT and returns its descriptor.
func (g *registry) pushBlob(ctx context.Context, repo, mediaType string, content []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(content)
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(content))}
	r, err := g.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return desc, err
	}
	if r.Status != http.StatusAccepted {
		return desc, fmt.Errorf("POST upload %s: %s", repo, r)
	}
	loc, err := withQuery(r.Header.Get("Location"), "digest", d.String())
	if err != nil {
		return desc, err
	}
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	r, err = g.do(ctx, http.MethodPut, loc, hdr, bytes.NewReader(content))
	if err != nil {
		return desc, err
	}
	if r.Status != http.StatusCreated {
		return desc, fmt.Errorf("PUT upload %s %s: %s", repo, d, r)
	}
	return desc, nil
}

// putManifest PUTs a manifest under ref; it returns nil only on 201.
func (g *registry) putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) error {
	hdr := http.Header{"Content-Type": {mediaType}}
	r, err := g.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, hdr, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if r.Status != http.StatusCreated {
		return fmt.Errorf("PUT manifest %s:%s: %s", repo, ref, r)
	}
	if got, want := r.Header.Get("Docker-Content-Digest"), digest.FromBytes(body).String(); got != want {
		return fmt.Errorf("PUT manifest %s:%s: Docker-Content-Digest %q, want %q", repo, ref, got, want)
	}
	return nil
}

// withQuery adds key=value to a Location that may already carry a query.
func withQuery(loc, key, value string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("bad Location %q: %w", loc, err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// image is a small random OCI image: one gzip layer holding one file of
// random bytes, a config, a manifest.
type image struct {
	File                    []byte // content of fileName inside the layer
	Layer, Config, Manifest []byte
	LayerDesc, ConfigDesc   ocispec.Descriptor
}

// fileName is the path of the one file inside an image's layer.
const fileName = "hubmesh/data.bin"

// Digest is the manifest digest.
func (im image) Digest() digest.Digest { return digest.FromBytes(im.Manifest) }

// randomImage builds an image whose layer holds n random bytes.
func randomImage(t testing.TB, n int) image {
	t.Helper()
	im := image{File: randomBytes(t, n)}
	tarball := tarOf(t, map[string][]byte{fileName: im.File})
	im.Layer = gzipOf(t, tarball)
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tarball)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	im.Config = cfg
	im.LayerDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(im.Layer), Size: int64(len(im.Layer))}
	im.ConfigDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    im.ConfigDesc,
		Layers:    []ocispec.Descriptor{im.LayerDesc},
	})
	if err != nil {
		t.Fatal(err)
	}
	im.Manifest = m
	return im
}

// tarOf is a tar archive of files (path -> content), in path order.
func tarOf(t testing.TB, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fileInTar returns the content of name in the tar archive r.
func fileInTar(r io.Reader, name string) ([]byte, error) {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s not in the archive", name)
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(hdr.Name, "/") == name {
			return io.ReadAll(tr)
		}
	}
}

// writeOCILayout writes im as an OCI image layout in dir, tagged tag.
func writeOCILayout(t testing.TB, dir, tag string, im image) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{im.Layer, im.Config, im.Manifest} {
		if err := os.WriteFile(filepath.Join(blobs, digest.FromBytes(b).Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType:   ocispec.MediaTypeImageManifest,
			Digest:      im.Digest(),
			Size:        int64(len(im.Manifest)),
			Annotations: map[string]string{ocispec.AnnotationRefName: tag},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	layout := `{"imageLayoutVersion":"1.0.0"}`
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(layout), 0o644); err != nil {
		t.Fatal(err)
	}
}

// push uploads the image's blobs and then its manifest under tag.
func (g *registry) push(ctx context.Context, repo, tag string, im image) error {
	if _, err := g.pushBlob(ctx, repo, im.LayerDesc.MediaType, im.Layer); err != nil {
		return err
	}
	if _, err := g.pushBlob(ctx, repo, im.ConfigDesc.MediaType, im.Config); err != nil {
		return err
	}
	return g.putManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, im.Manifest)
}

// checkPulled pulls repo:tag and compares the manifest and both blobs byte
// for byte with im.
func (g *registry) checkPulled(ctx context.Context, repo, tag string, im image) error {
	hdr := http.Header{"Accept": {ocispec.MediaTypeImageManifest}}
	r, err := g.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+tag, hdr, nil)
	if err != nil {
		return err
	}
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, im.Manifest) {
		return fmt.Errorf("GET manifest %s:%s: %s, want 200 and the %d pushed bytes", repo, tag, r, len(im.Manifest))
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != im.Digest().String() {
		return fmt.Errorf("GET manifest %s:%s: Docker-Content-Digest %q, want %s", repo, tag, got, im.Digest())
	}
	for _, b := range [][]byte{im.Layer, im.Config} {
		d := digest.FromBytes(b)
		r, err := g.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, b) {
			return fmt.Errorf("GET blob %s@%s: status %d, %d bytes; want 200 and the %d pushed bytes", repo, d, r.Status, len(r.Body), len(b))
		}
	}
	return nil
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return fmt.Sprintf("%x", s[:])
}

// command runs a client tool with a deadline and returns its stdout. It
// fails the test with the tool's output when the tool fails.
func command(t testing.TB, timeout time.Duration, env []string, name string, args ...string) []byte {
	t.Helper()
	out, errOut, err := runCommand(t, timeout, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// runCommand runs name with args under a deadline, with env added to the
// test's environment, and returns stdout, stderr and the error of the run.
func runCommand(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	return runCommandIn(t, timeout, "", append(os.Environ(), env...), name, args...)
}

// runCommandIn runs name in dir with exactly the environment env.
func runCommandIn(t testing.TB, timeout time.Duration, dir string, env []string, name string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	return runCommandCtx(t.Context(), timeout, dir, env, name, args...)
}

// runCommandCtx runs name in dir with exactly the environment env, bounded
// by ctx and timeout. Cleanup functions pass a fresh context, since the
// test's own is done by the time they run.
func runCommandCtx(ctx context.Context, timeout time.Duration, dir string, env []string, name string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout = &o
	cmd.Stderr = &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (deadline %s)", err, timeout)
	}
	return o.Bytes(), e.Bytes(), err
}
