package regclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Client speaks the OCI distribution API to one registry. Every registry
// in a run gets a client built the same way, so that differences are the
// registries'.
type Client struct {
	base string // http://host:port
	hc   *http.Client
	conc int // blobs in flight at once, like docker's 3-5 parallel layers
}

// NewTransport is the transport of the clients: no proxy, blobs fetched as
// stored (no compression), up to conns idle connections per host.
func NewTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true, // blobs are fetched as stored
	}
}

// NewClient returns a client of the registry at base (http://host:port)
// whose requests go through rt, and that keeps up to conc blobs in flight
// during Push and Pull (at least 1).
func NewClient(base string, rt http.RoundTripper, conc int) *Client {
	return &Client{base: base, conc: max(conc, 1), hc: &http.Client{Transport: rt}}
}

// Base is the registry's URL, http://host:port.
func (c *Client) Base() string { return c.base }

// Close drops the idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Push uploads the layers (conc at a time), then the config, then PUTs the
// manifest under tag.
func (c *Client) Push(ctx context.Context, repo, tag string, img *Image) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.conc)
	for _, l := range img.Layers {
		g.Go(func() error { return c.Upload(gctx, repo, l) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := c.Upload(ctx, repo, img.Config); err != nil {
		return err
	}
	return c.PutManifest(ctx, repo, tag, img.Manifest)
}

// Upload pushes one blob with POST then a single PUT whose body streams
// from the blob's file.
func (c *Client) Upload(ctx context.Context, repo string, b Blob) error {
	resp, err := c.do(ctx, http.MethodPost, c.base+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("POST upload %s: bad Location %q", repo, resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", b.Desc.Digest.String())
	loc.RawQuery = q.Encode()
	body, err := b.Open()
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPut, loc.String(), body, b.Desc.Size,
		http.Header{"Content-Type": {"application/octet-stream"}}, http.StatusCreated)
	return err
}

// PutManifest PUTs an OCI image manifest under ref.
func (c *Client) PutManifest(ctx context.Context, repo, ref string, m []byte) error {
	_, err := c.do(ctx, http.MethodPut, c.base+"/v2/"+repo+"/manifests/"+url.PathEscape(ref),
		io.NopCloser(bytes.NewReader(m)), int64(len(m)),
		http.Header{"Content-Type": {v1.MediaTypeImageManifest}}, http.StatusCreated)
	return err
}

// copyBufs holds the read buffers of pulls and hashes; a large buffer lets
// reads bypass the transport's small bufio buffer.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// Pull fetches the manifest under tag, checks it is want, then fetches the
// config and every layer (conc at a time) through SHA-256, verifying
// digest and size, and discards the bytes. It returns the layer bytes read.
func (c *Client) Pull(ctx context.Context, repo, tag string, want digest.Digest) (int64, error) {
	resp, err := c.Get(ctx, c.base+"/v2/"+repo+"/manifests/"+url.PathEscape(tag),
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
func (c *Client) fetchBlob(ctx context.Context, repo string, d v1.Descriptor) error {
	resp, err := c.Get(ctx, c.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
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

// Fetch is the timing of one blob GET.
type Fetch struct {
	TTFB  time.Duration // until the response headers and first body byte
	Total time.Duration // until the last byte was read and verified
	Bytes int64
}

// PullBlob GETs one blob, reads it through its digest, checks digest and
// size, and times the first byte and the whole.
func (c *Client) PullBlob(ctx context.Context, repo string, d v1.Descriptor) (Fetch, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/"+repo+"/blobs/"+d.Digest.String(), nil)
	if err != nil {
		return Fetch{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Fetch{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Fetch{}, statusError(req, resp)
	}
	h := d.Digest.Algorithm().Hash()
	buf := make([]byte, 1<<20)
	var f Fetch
	n, err := resp.Body.Read(buf)
	f.TTFB = time.Since(start)
	h.Write(buf[:n])
	f.Bytes = int64(n)
	if err == nil {
		var m int64
		m, err = io.CopyBuffer(h, resp.Body, buf)
		f.Bytes += m
	}
	if err != nil && err != io.EOF {
		return f, fmt.Errorf("GET blob %s: read after %d bytes: %w", d.Digest, f.Bytes, err)
	}
	f.Total = time.Since(start)
	if f.Bytes != d.Size {
		return f, fmt.Errorf("GET blob %s: got %d bytes, want %d", d.Digest, f.Bytes, d.Size)
	}
	if got := digest.NewDigest(d.Digest.Algorithm(), h); got != d.Digest {
		return f, fmt.Errorf("GET blob %s: content has digest %s", d.Digest, got)
	}
	return f, nil
}

// Get sends GET u with the headers h and returns the response if its
// status is 200; the caller closes its body.
func (c *Client) Get(ctx context.Context, u string, h http.Header) (*http.Response, error) {
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
func (c *Client) do(ctx context.Context, method, u string, body io.ReadCloser, n int64, h http.Header, want int) (*http.Response, error) {
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

// PutRun is the outcome of ManifestPuts.
type PutRun struct {
	Lat     []time.Duration // one per PUT
	Elapsed time.Duration   // wall time of all PUTs
}

// PerSecond is the PUTs over the wall time of the run.
func (r PutRun) PerSecond() float64 { return float64(len(r.Lat)) / r.Elapsed.Seconds() }

// SmallManifests pushes a small (1 KiB) layer and a config to repo and
// returns n distinct manifests referencing them, built before any clock
// starts. The layer holds repo (and label, when not empty); the
// manifests differ in an annotation (label-i, or i).
func (c *Client) SmallManifests(ctx context.Context, repo, label string, n int) ([][]byte, error) {
	text, seq := repo, ""
	if label != "" {
		text, seq = repo+" "+label, label+"-"
	}
	layer := make([]byte, 1024)
	copy(layer, text)
	lb := Blob{Data: layer, Desc: v1.Descriptor{
		MediaType: v1.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer)),
	}}
	manifests := make([][]byte, n)
	var img *Image
	for i := range n {
		var err error
		img, err = NewImage([]Blob{lb}, map[string]string{"org.hubmesh.bench.seq": seq + strconv.Itoa(i)})
		if err != nil {
			return nil, err
		}
		manifests[i] = img.Manifest
	}
	if img == nil {
		return nil, fmt.Errorf("manifest run: n must be positive")
	}
	for _, b := range []Blob{lb, img.Config} {
		if err := c.Upload(ctx, repo, b); err != nil {
			return nil, err
		}
	}
	return manifests, nil
}

// ManifestPuts PUTs manifests to repo, each under its own tag (prefix and
// index), from conc concurrent workers, and times every PUT.
func (c *Client) ManifestPuts(ctx context.Context, repo, prefix string, manifests [][]byte, conc int) (PutRun, error) {
	run := PutRun{Lat: make([]time.Duration, len(manifests))}
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
				if err := c.PutManifest(gctx, repo, prefix+strconv.Itoa(i), manifests[i]); err != nil {
					return err
				}
				run.Lat[i] = time.Since(t)
			}
			return nil
		})
	}
	err := g.Wait()
	run.Elapsed = time.Since(start)
	return run, err
}
