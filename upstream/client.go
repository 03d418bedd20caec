package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Manifest media types the client asks for and understands.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var manifestAccept = strings.Join([]string{MediaTypeOCIIndex, MediaTypeOCIManifest,
	MediaTypeDockerList, MediaTypeDockerManifest}, ", ")

// Config describes one upstream registry.
type Config struct {
	// Name names the upstream in errors and logs (e.g. "docker.io").
	Name string
	// URL is the registry's base URL, e.g. https://registry-1.docker.io.
	URL string
	// Username and Password, when set, are sent as Basic credentials to
	// the token realm (or to the registry when it asks for Basic).
	Username, Password string
	// Transport is the HTTP transport; nil means a default one with
	// connect and response-header deadlines.
	Transport http.RoundTripper
}

// Client fetches content from one upstream registry. It is safe for
// concurrent use.
type Client struct {
	name string
	base *url.URL
	user string
	pass string
	http *http.Client

	mu     sync.Mutex
	tokens map[string]string // scope -> bearer token
}

// New checks cfg and returns a client. It does not contact the registry.
func New(cfg Config) (*Client, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("upstream: a name is required: %w", hubmesh.ErrInvalid)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("upstream %s: URL %q: want http(s)://host[:port]: %w", cfg.Name, cfg.URL, hubmesh.ErrInvalid)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
		}
	}
	return &Client{
		name: cfg.Name, base: u, user: cfg.Username, pass: cfg.Password,
		http: &http.Client{Transport: tr}, tokens: map[string]string{},
	}, nil
}

// Name is the upstream's configured name.
func (c *Client) Name() string { return c.name }

// Descriptor is what a manifest HEAD tells about a reference.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// Resolve asks the upstream which manifest ref (a tag or digest) of repo
// names now, without downloading it. Errors wrap hubmesh.ErrManifestUnknown
// when the upstream does not have it and hubmesh.ErrUnavailable when it
// cannot be reached or fails.
func (c *Client) Resolve(ctx context.Context, repo, ref string) (Descriptor, error) {
	resp, err := c.do(ctx, http.MethodHead, repo, "/manifests/"+ref, manifestAccept)
	if err != nil {
		return Descriptor{}, err
	}
	resp.Body.Close()
	if err := c.check(resp, repo, ref, hubmesh.ErrManifestUnknown); err != nil {
		return Descriptor{}, err
	}
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		// Some registries omit the header on HEAD: ask with GET.
		_, payload, gd, gerr := c.Manifest(ctx, repo, ref)
		if gerr != nil {
			return Descriptor{}, gerr
		}
		return Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: gd, Size: int64(len(payload))}, nil
	}
	return Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: d, Size: resp.ContentLength}, nil
}

// Manifest downloads the manifest ref of repo and returns its media type,
// its bytes and its digest. A manifest asked for by digest is verified
// against it; one asked for by tag against the Docker-Content-Digest the
// upstream announced, if any.
func (c *Client) Manifest(ctx context.Context, repo, ref string) (string, []byte, digest.Digest, error) {
	resp, err := c.do(ctx, http.MethodGet, repo, "/manifests/"+ref, manifestAccept)
	if err != nil {
		return "", nil, "", err
	}
	defer resp.Body.Close()
	if err := c.check(resp, repo, ref, hubmesh.ErrManifestUnknown); err != nil {
		return "", nil, "", err
	}
	if resp.ContentLength > hubmesh.MaxManifestSize {
		return "", nil, "", fmt.Errorf("upstream %s: manifest %s:%s of %d bytes is too large: %w", c.name, repo, ref, resp.ContentLength, hubmesh.ErrInvalid)
	}
	payload, err := io.ReadAll(io.LimitReader(resp.Body, hubmesh.MaxManifestSize+1))
	if err != nil {
		return "", nil, "", fmt.Errorf("upstream %s: manifest %s:%s: %v: %w", c.name, repo, ref, err, hubmesh.ErrUnavailable)
	}
	if len(payload) > hubmesh.MaxManifestSize {
		return "", nil, "", fmt.Errorf("upstream %s: manifest %s:%s is too large: %w", c.name, repo, ref, hubmesh.ErrInvalid)
	}
	want, _ := digest.Parse(ref)
	if want == "" {
		want, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	}
	alg := digest.Canonical
	if want != "" && want.Algorithm().Available() {
		alg = want.Algorithm()
	}
	got := alg.FromBytes(payload)
	if want != "" && got != want {
		return "", nil, "", fmt.Errorf("upstream %s: manifest %s:%s has digest %s, not %s: %w", c.name, repo, ref, got, want, hubmesh.ErrDigestMismatch)
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	mt = strings.TrimSpace(mt)
	if mt == "" || mt == "application/json" || mt == "text/plain" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(payload, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
	}
	return mt, payload, got, nil
}

// Blob opens the content of blob d of repo and returns it with its size
// (-1 when the upstream did not say). The caller verifies the content
// (the node's blob store does, as it writes it) and closes the reader.
func (c *Client) Blob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, repo, "/blobs/"+d.String(), "")
	if err != nil {
		return nil, 0, err
	}
	if err := c.check(resp, repo, d.String(), hubmesh.ErrBlobUnknown); err != nil {
		resp.Body.Close()
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// check turns a non-2xx answer into an error: 404 (and 401/403 after
// authenticating, which is how registries hide repositories) wrap
// notFound; anything else wraps hubmesh.ErrUnavailable.
func (c *Client) check(resp *http.Response, repo, ref string, notFound error) error {
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("upstream %s has no %s:%s: %w", c.name, repo, ref, notFound)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("upstream %s refused access to %s:%s (missing, private, or bad credentials): %w", c.name, repo, ref, notFound)
	default:
		return fmt.Errorf("upstream %s: %s:%s: HTTP %d: %w", c.name, repo, ref, resp.StatusCode, hubmesh.ErrUnavailable)
	}
}

// do sends one request on /v2/<repo><suffix>, running the token flow on a
// 401 and retrying once with the new credentials.
func (c *Client) do(ctx context.Context, method, repo, suffix, accept string) (*http.Response, error) {
	return c.doPath(ctx, method, "/v2/"+repo+suffix, nil, "repository:"+repo+":pull", accept)
}

// doPath sends one request on path (under the base URL) with query,
// asking the token service for scope when the registry challenges it.
func (c *Client) doPath(ctx context.Context, method, path string, query url.Values, scope, accept string) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	send := func(authz string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %v: %w", c.name, err, hubmesh.ErrInvalid)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("upstream %s unreachable: %v: %w", c.name, unwrapURL(err), hubmesh.ErrUnavailable)
		}
		return resp, nil
	}
	authz := c.cachedAuth(scope)
	resp, err := send(authz)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	challenge := resp.Header.Get("WWW-Authenticate")
	resp.Body.Close()
	scheme, params := ParseChallenge(challenge)
	switch scheme {
	case "bearer":
		tok, err := c.fetchToken(ctx, params, scope)
		if err != nil {
			return nil, err
		}
		authz = "Bearer " + tok
	case "basic":
		if c.user == "" {
			return send("") // answer the 401 as it is
		}
		authz = basic(c.user, c.pass)
	default:
		return send("")
	}
	c.mu.Lock()
	c.tokens[scope] = authz
	c.mu.Unlock()
	return send(authz)
}

func (c *Client) cachedAuth(scope string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[scope]
}

// fetchToken runs the registry token flow against a Bearer challenge.
func (c *Client) fetchToken(ctx context.Context, params map[string]string, scope string) (string, error) {
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Host == "" || (realm.Scheme != "http" && realm.Scheme != "https") {
		return "", fmt.Errorf("upstream %s: bad token realm %q: %w", c.name, params["realm"], hubmesh.ErrUnavailable)
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", fmt.Errorf("upstream %s: %v: %w", c.name, err, hubmesh.ErrInvalid)
	}
	if c.user != "" {
		req.Header.Set("Authorization", basic(c.user, c.pass))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("upstream %s: token service unreachable: %v: %w", c.name, unwrapURL(err), hubmesh.ErrUnavailable)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("upstream %s: token service refused the credentials (HTTP %d): %w", c.name, resp.StatusCode, hubmesh.ErrDenied)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("upstream %s: token service: HTTP %d: %w", c.name, resp.StatusCode, hubmesh.ErrUnavailable)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return "", fmt.Errorf("upstream %s: token service: bad answer: %v: %w", c.name, err, hubmesh.ErrUnavailable)
	}
	if t.Token == "" {
		t.Token = t.AccessToken
	}
	if t.Token == "" {
		return "", fmt.Errorf("upstream %s: token service returned no token: %w", c.name, hubmesh.ErrUnavailable)
	}
	return t.Token, nil
}

func basic(user, pass string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, pass)
	return r.Header.Get("Authorization")
}

// ParseChallenge splits a WWW-Authenticate value into its lower-cased
// scheme and its parameters (`Bearer realm="...",service="..."`). The
// CLI's OCI client uses it too.
func ParseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest != "" {
		rest = strings.TrimLeft(rest, " ,")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, r, _ := strings.Cut(v, ",")
			params[k], rest = strings.TrimSpace(val), r
		}
	}
	return strings.ToLower(scheme), params
}

// unwrapURL drops the *url.Error wrapper, whose message repeats the URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
