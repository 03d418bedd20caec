package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// client speaks the OCI distribution API to one registry with plain
// net/http, the way a container client does. Every registry in a run gets a
// client built by newClient with the same settings.
type client struct {
	base string // http://host:port
	hc   *http.Client
	conc int // blobs in flight at once, like docker's 3-5 parallel layers
}

func newClient(base string, conc int) *client {
	return &client{
		base: base,
		conc: conc,
		hc: &http.Client{Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true, // blobs are fetched as stored
		}},
	}
}

// close drops the idle connections.
func (c *client) close() { c.hc.CloseIdleConnections() }

// blob is a blob to push: its bytes are in a file on disk or in memory.
type blob struct {
	desc v1.Descriptor
	path string // read from here when set
	data []byte // else these bytes
}

func (b blob) open() (io.ReadCloser, error) {
	if b.path == "" {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	return os.Open(b.path)
}

// image is a complete image to push: layers, config and the manifest that
// references them.
type image struct {
	layers   []blob
	config   blob
	manifest []byte
	digest   digest.Digest // of manifest
}

// newImage builds the config and manifest for layers. The config lists the
// layers as diff IDs (they are uncompressed); annotations make manifests of
// otherwise equal images distinct.
func newImage(layers []blob, annotations map[string]string) (*image, error) {
	diffIDs := make([]digest.Digest, len(layers))
	descs := make([]v1.Descriptor, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.desc.Digest
		descs[i] = l.desc
	}
	cfg, err := json.Marshal(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return nil, err
	}
	config := blob{data: cfg, desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg)),
	}}
	m, err := json.Marshal(v1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   v1.MediaTypeImageManifest,
		Config:      config.desc,
		Layers:      descs,
		Annotations: annotations,
	})
	if err != nil {
		return nil, err
	}
	return &image{layers: layers, config: config, manifest: m, digest: digest.FromBytes(m)}, nil
}

// push uploads the layers (c.conc at a time), then the config, then the
// manifest under tag.
func (c *client) push(ctx context.Context, repo, tag string, img *image) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.conc)
	for _, l := range img.layers {
		g.Go(func() error { return c.upload(gctx, repo, l) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := c.upload(ctx, repo, img.config); err != nil {
		return err
	}
	return c.putManifest(ctx, repo, tag, img.manifest)
}

// upload pushes one blob with POST then a single PUT whose body streams from
// the blob's file.
func (c *client) upload(ctx context.Context, repo string, b blob) error {
	resp, err := c.do(ctx, http.MethodPost, c.base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("POST upload %s: bad Location %q", repo, resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", b.desc.Digest.String())
	loc.RawQuery = q.Encode()
	body, err := b.open()
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPut, loc.String(), body, b.desc.Size,
		http.Header{"Content-Type": {"application/octet-stream"}}, http.StatusCreated)
	return err
}

// putManifest PUTs an OCI image manifest under ref.
func (c *client) putManifest(ctx context.Context, repo, ref string, m []byte) error {
	_, err := c.do(ctx, http.MethodPut, c.base+"/v2/"+repo+"/manifests/"+url.PathEscape(ref),
		io.NopCloser(bytes.NewReader(m)), int64(len(m)),
		http.Header{"Content-Type": {v1.MediaTypeImageManifest}}, http.StatusCreated)
	return err
}

// copyBufs holds the read buffers of pulls; a large buffer lets reads bypass
// the transport's small bufio buffer.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// pull fetches the manifest under tag, checks it is want, then fetches the
// config and every layer (c.conc at a time) through SHA-256, verifying
// digest and size, and discards the bytes. It returns the layer bytes read.
func (c *client) pull(ctx context.Context, repo, tag string, want digest.Digest) (int64, error) {
	resp, err := c.get(ctx, c.base+"/v2/"+repo+"/manifests/"+url.PathEscape(tag),
		http.Header{"Accept": {v1.MediaTypeImageManifest}})
	if err != nil {
		return 0, err
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("GET manifest %s:%s: %w", repo, tag, err)
	}
	if got := digest.FromBytes(raw); got != want {
		return 0, fmt.Errorf("GET manifest %s:%s: digest %s, pushed %s", repo, tag, got, want)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, fmt.Errorf("GET manifest %s:%s: %w", repo, tag, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.conc)
	g.Go(func() error { return c.fetchBlob(gctx, repo, m.Config) })
	var total int64
	for _, l := range m.Layers {
		total += l.Size
		g.Go(func() error { return c.fetchBlob(gctx, repo, l) })
	}
	return total, g.Wait()
}

// fetchBlob GETs one blob and verifies its digest and size while reading.
func (c *client) fetchBlob(ctx context.Context, repo string, d v1.Descriptor) error {
	resp, err := c.get(ctx, c.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return verify(resp.Body, d)
}

// verify reads r to the end through the descriptor's digest algorithm and
// checks digest and size.
func verify(r io.Reader, d v1.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	h := d.Digest.Algorithm().Hash()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.CopyBuffer(h, r, *buf)
	if err != nil {
		return fmt.Errorf("blob %s: read after %d bytes: %w", d.Digest, n, err)
	}
	if n != d.Size {
		return fmt.Errorf("blob %s: got %d bytes, want %d", d.Digest, n, d.Size)
	}
	if got := digest.NewDigest(d.Digest.Algorithm(), h); got != d.Digest {
		return fmt.Errorf("blob %s: content has digest %s", d.Digest, got)
	}
	return nil
}

func (c *client) get(ctx context.Context, u string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, statusError(req, resp)
	}
	return resp, nil
}

// do sends a request whose response body is not needed, and checks the
// status. The body, when not nil, is sent with Content-Length n.
func (c *client) do(ctx context.Context, method, u string, body io.ReadCloser, n int64, h http.Header, want int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		if body != nil {
			body.Close()
		}
		return nil, err
	}
	req.ContentLength = n
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return nil, statusError(req, resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // keep the connection reusable
	return resp, nil
}

// statusError describes an unexpected response, with the start of its body
// (the OCI error document).
func statusError(req *http.Request, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
}

// manifestRun is the outcome of manifestPuts.
type manifestRun struct {
	lat     []time.Duration // one per PUT
	elapsed time.Duration   // wall time of all PUTs
}

// manifestPuts pushes a small config and layer to repo, then PUTs n distinct
// small manifests that reference them, each under its own tag, conc at a
// time, and times every PUT. The manifests are built before the clock starts.
func (c *client) manifestPuts(ctx context.Context, repo string, n, conc int) (manifestRun, error) {
	layer := make([]byte, 1024)
	copy(layer, repo)
	lb := blob{data: layer, desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer)),
	}}
	manifests := make([][]byte, n)
	var base *image
	for i := range n {
		img, err := newImage([]blob{lb}, map[string]string{"org.hubmesh.bench.seq": strconv.Itoa(i)})
		if err != nil {
			return manifestRun{}, err
		}
		base, manifests[i] = img, img.manifest
	}
	if base == nil {
		return manifestRun{}, fmt.Errorf("manifest run: n must be positive")
	}
	for _, b := range []blob{lb, base.config} {
		if err := c.upload(ctx, repo, b); err != nil {
			return manifestRun{}, err
		}
	}
	run := manifestRun{lat: make([]time.Duration, n)}
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for range conc {
		g.Go(func() error {
			for i := range next {
				t := time.Now()
				if err := c.putManifest(gctx, repo, "m"+strconv.Itoa(i), manifests[i]); err != nil {
					return err
				}
				run.lat[i] = time.Since(t)
			}
			return nil
		})
	}
	err := g.Wait()
	run.elapsed = time.Since(start)
	return run, err
}
