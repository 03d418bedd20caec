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
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// client speaks the OCI distribution API to one node with plain net/http,
// from inside a network namespace when ns is set.
type client struct {
	base string
	hc   *http.Client
}

func newClient(base, ns string, conns int) *client {
	return &client{base: base, hc: &http.Client{Transport: newTransport(ns, conns)}}
}

// close drops the idle connections.
func (c *client) close() { c.hc.CloseIdleConnections() }

// blob is a blob to push, read from a file or from memory.
type blob struct {
	desc v1.Descriptor
	path string
	data []byte
}

func (b blob) open() (io.ReadCloser, error) {
	if b.path == "" {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	return os.Open(b.path)
}

// image is a single-layer image: layer, config, and the manifest.
type image struct {
	layer, config blob
	manifest      []byte
	digest        digest.Digest
}

// newImage builds the config and manifest for one layer; annotations make
// manifests of the same layer distinct.
func newImage(layer blob, annotations map[string]string) (*image, error) {
	cfg, err := json.Marshal(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.desc.Digest}},
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
		Layers:      []v1.Descriptor{layer.desc},
		Annotations: annotations,
	})
	if err != nil {
		return nil, err
	}
	return &image{layer: layer, config: config, manifest: m, digest: digest.FromBytes(m)}, nil
}

// push uploads the layer and the config, then PUTs the manifest under tag.
// A manifest PUT is acknowledged once its blobs are as replicated as the
// node's --replicas asks.
func (c *client) push(ctx context.Context, repo, tag string, img *image) error {
	for _, b := range []blob{img.layer, img.config} {
		if err := c.upload(ctx, repo, b); err != nil {
			return err
		}
	}
	return c.putManifest(ctx, repo, tag, img.manifest)
}

// upload pushes one blob with POST, then a single PUT streaming the body.
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

// fetch is the timing of one blob GET.
type fetch struct {
	ttfb  time.Duration // until the response headers and first body byte
	total time.Duration // until the last byte was read and verified
	bytes int64
}

// pullBlob GETs one blob, reads it through its digest and checks digest
// and size.
func (c *client) pullBlob(ctx context.Context, repo string, d v1.Descriptor) (fetch, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
	if err != nil {
		return fetch{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fetch{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fetch{}, statusError(req, resp)
	}
	h := d.Digest.Algorithm().Hash()
	buf := make([]byte, 1<<20)
	var f fetch
	n, err := resp.Body.Read(buf)
	f.ttfb = time.Since(start)
	h.Write(buf[:n])
	f.bytes = int64(n)
	if err == nil {
		var m int64
		m, err = io.CopyBuffer(h, resp.Body, buf)
		f.bytes += m
	}
	if err != nil && err != io.EOF {
		return f, fmt.Errorf("GET blob %s: read after %d bytes: %w", d.Digest, f.bytes, err)
	}
	f.total = time.Since(start)
	if f.bytes != d.Size {
		return f, fmt.Errorf("GET blob %s: got %d bytes, want %d", d.Digest, f.bytes, d.Size)
	}
	if got := digest.NewDigest(d.Digest.Algorithm(), h); got != d.Digest {
		return f, fmt.Errorf("GET blob %s: content has digest %s", d.Digest, got)
	}
	return f, nil
}

// do sends a request whose response body is not needed and checks the
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

// statusError describes an unexpected response with the start of its body.
func statusError(req *http.Request, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
}

// putRun is the outcome of manifestPuts.
type putRun struct {
	lat     []time.Duration // one per PUT
	elapsed time.Duration   // wall time of all PUTs
}

func (r putRun) perSecond() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

// smallImage pushes a small layer and config to repo and returns n
// distinct manifests referencing them (an annotation differs), built
// before any clock starts.
func (c *client) smallImage(ctx context.Context, repo, label string, n int) ([][]byte, error) {
	layer := make([]byte, 1024)
	copy(layer, repo+" "+label)
	lb := blob{data: layer, desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer)),
	}}
	manifests := make([][]byte, n)
	var img *image
	for i := range n {
		var err error
		img, err = newImage(lb, map[string]string{"org.hubmesh.bench.seq": label + "-" + strconv.Itoa(i)})
		if err != nil {
			return nil, err
		}
		manifests[i] = img.manifest
	}
	if img == nil {
		return nil, fmt.Errorf("manifest run: n must be positive")
	}
	for _, b := range []blob{lb, img.config} {
		if err := c.upload(ctx, repo, b); err != nil {
			return nil, err
		}
	}
	return manifests, nil
}

// manifestPuts PUTs manifests to repo, each under its own tag (prefix and
// index), from conc concurrent workers, and times every PUT.
func (c *client) manifestPuts(ctx context.Context, repo, prefix string, manifests [][]byte, conc int) (putRun, error) {
	run := putRun{lat: make([]time.Duration, len(manifests))}
	next := make(chan int, len(manifests))
	for i := range manifests {
		next <- i
	}
	close(next)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for range conc {
		g.Go(func() error {
			for i := range next {
				t := time.Now()
				if err := c.putManifest(gctx, repo, prefix+strconv.Itoa(i), manifests[i]); err != nil {
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
