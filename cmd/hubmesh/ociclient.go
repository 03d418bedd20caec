package main

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
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/upstream"
)

// Docker's manifest media types, which a registry keeps byte for byte.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// manifestAccept is the Accept header of a manifest GET: every type the
// node stores, so that it answers with the stored bytes.
var manifestAccept = strings.Join([]string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
	mediaTypeDockerList, mediaTypeDockerManifest}, ", ")

// ociClient talks to a node's OCI distribution API (/v2) with the CLI's
// credentials: Basic (or Bearer) on every request, and the registry token
// flow when the node answers 401 with a Bearer challenge. Tokens are kept
// per repository and action.
type ociClient struct {
	base string
	http *http.Client
	cred credentials

	mu     sync.Mutex
	tokens map[string]string // scope -> registry token
}

// newOCIClient is a client of the node at server (a URL, as --server).
// Transfers have no overall deadline (a layer may be large); connecting
// and waiting for response headers have.
func newOCIClient(server string) (*ociClient, error) {
	api, err := newAPIClient(server)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 5 * time.Minute, // a manifest PUT waits for replication
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
	}
	return &ociClient{base: api.base, http: &http.Client{Transport: tr}, cred: api.cred, tokens: map[string]string{}}, nil
}

// request is one /v2 request. body, when set, makes a fresh body for each
// attempt (the token flow sends a request twice).
type request struct {
	method, path string // path is absolute (/v2/...) or a Location URL
	repo, action string // scope of a token: repository:<repo>:<action>
	header       http.Header
	body         func() io.Reader
	size         int64 // Content-Length of body
}

// send sends r and returns the response, whatever its status. The caller
// closes the body.
func (c *ociClient) send(ctx context.Context, r request) (*http.Response, error) {
	scope := ""
	if r.repo != "" {
		scope = "repository:" + r.repo + ":" + r.action
	}
	resp, err := c.attempt(ctx, r, c.token(scope))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	ch := resp.Header.Get("WWW-Authenticate")
	if !strings.HasPrefix(strings.ToLower(ch), "bearer ") {
		return resp, nil
	}
	resp.Body.Close()
	tok, err := c.fetchToken(ctx, ch, scope)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.tokens[scope] = tok
	c.mu.Unlock()
	return c.attempt(ctx, r, tok)
}

func (c *ociClient) token(scope string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[scope]
}

func (c *ociClient) attempt(ctx context.Context, r request, token string) (*http.Response, error) {
	u, err := c.resolve(r.path)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	if r.body != nil {
		body = r.body()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	} else {
		c.cred.set(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, c.base, unwrapURLError(err))
	}
	return resp, nil
}

// resolve makes path (absolute or a Location, possibly a full URL)
// a URL on the node.
func (c *ociClient) resolve(path string) (string, error) {
	b, err := url.Parse(c.base + "/")
	if err != nil {
		return "", err
	}
	ref, err := url.Parse(path)
	if err != nil {
		return "", fmt.Errorf("bad location %q: %w", path, err)
	}
	return b.ResolveReference(ref).String(), nil
}

// fetchToken runs the registry token flow for scope against the realm of
// a Bearer challenge, with the CLI's credentials.
func (c *ociClient) fetchToken(ctx context.Context, challenge, scope string) (string, error) {
	_, params := upstream.ParseChallenge(challenge)
	realm := params["realm"]
	if realm == "" {
		return "", fmt.Errorf("%s: Bearer challenge without a realm", c.base)
	}
	u, err := url.Parse(realm)
	if err != nil {
		return "", fmt.Errorf("%s: bad token realm %q", c.base, realm)
	}
	q := u.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	if scope != "" {
		q.Set("scope", scope)
	} else if s := params["scope"]; s != "" {
		q.Set("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	c.cred.set(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("token %s: %w", realm, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized && c.cred.empty() {
			hint = "; set " + envUsername + " and " + envPassword + ", or " + envToken
		}
		return "", fmt.Errorf("token for %s: %w%s", scope, responseError(resp), hint)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return "", fmt.Errorf("token for %s: bad answer: %w", scope, err)
	}
	if t.Token == "" {
		t.Token = t.AccessToken
	}
	if t.Token == "" {
		return "", fmt.Errorf("token for %s: the answer holds no token", scope)
	}
	return t.Token, nil
}

// responseError makes an error of a failed response: the server's message
// and code when the body holds an OCI error, else the status. It reads
// (a bounded part of) the body.
func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
		msg := e.Errors[0].Message
		if msg == "" {
			msg = strings.ToLower(http.StatusText(resp.StatusCode))
		}
		return fmt.Errorf("%s (%s)", oneLineText(msg), e.Errors[0].Code)
	}
	return errors.New(resp.Status)
}

// getManifest fetches repo's manifest ref (a tag or digest) and checks its
// digest: against ref when ref is a digest, and against the node's
// Docker-Content-Digest. It returns the bytes, their media type and digest.
func (c *ociClient) getManifest(ctx context.Context, repo, ref string) ([]byte, string, digest.Digest, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v2/" + repo + "/manifests/" + ref,
		repo: repo, action: "pull", header: http.Header{"Accept": {manifestAccept}}})
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", "", fmt.Errorf("manifest %s: %w", refString(repo, ref), responseError(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", "", fmt.Errorf("manifest %s: %w", refString(repo, ref), err)
	}
	if len(b) > maxManifestSize {
		return nil, "", "", fmt.Errorf("manifest %s: larger than %d bytes", refString(repo, ref), maxManifestSize)
	}
	want := digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	if d, err := digest.Parse(ref); err == nil {
		want = d
	}
	alg := digest.Canonical
	if want != "" {
		if err := want.Validate(); err != nil {
			return nil, "", "", fmt.Errorf("manifest %s: bad Docker-Content-Digest %q", refString(repo, ref), want)
		}
		alg = want.Algorithm()
	}
	got := alg.FromBytes(b)
	if want != "" && got != want {
		return nil, "", "", fmt.Errorf("manifest %s: content has digest %s, want %s", refString(repo, ref), got, want)
	}
	mt := manifestMediaType(b, resp.Header.Get("Content-Type"))
	return b, mt, got, nil
}

// getBlob opens repo's blob d. The caller verifies what it reads.
func (c *ociClient) getBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: "/v2/" + repo + "/blobs/" + d.String(), repo: repo, action: "pull"})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("blob %s@%s: %w", repo, d, responseError(resp))
	}
	return resp.Body, nil
}

// tags lists every tag of repo, following the Link header's pages.
func (c *ociClient) tags(ctx context.Context, repo string) ([]string, error) {
	return c.pages(ctx, "/v2/"+repo+"/tags/list", repo, "tags of "+repo, func(r io.Reader) ([]string, error) {
		var list struct {
			Tags []string `json:"tags"`
		}
		err := json.NewDecoder(r).Decode(&list)
		return list.Tags, err
	})
}

// catalog lists every repository the node shows the caller.
func (c *ociClient) catalog(ctx context.Context) ([]string, error) {
	return c.pages(ctx, "/v2/_catalog?n=1000", "", "catalog", func(r io.Reader) ([]string, error) {
		var list struct {
			Repositories []string `json:"repositories"`
		}
		err := json.NewDecoder(r).Decode(&list)
		return list.Repositories, err
	})
}

// pages GETs a listing and the pages its Link headers name, decoding each
// page with decode (what names the listing in errors).
func (c *ociClient) pages(ctx context.Context, path, repo, what string, decode func(io.Reader) ([]string, error)) ([]string, error) {
	var all []string
	for range maxListPages {
		resp, err := c.send(ctx, request{method: http.MethodGet, path: path, repo: repo, action: "pull"})
		if err != nil {
			return nil, err
		}
		var page []string
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %w", what, responseError(resp))
		} else if page, err = decode(io.LimitReader(resp.Body, 64<<20)); err != nil {
			err = fmt.Errorf("%s: bad answer: %w", what, err)
		}
		link := resp.Header.Get("Link")
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(link), "<"), ">")
		if !ok || !strings.Contains(link, `rel="next"`) {
			return all, nil
		}
		path = next
	}
	return all, nil
}

// stat tells whether the node holds repo's blob or manifest ref (kind is
// "blobs" or "manifests"), with HEAD, and the digest it answers with.
func (c *ociClient) stat(ctx context.Context, repo, kind, ref string) (bool, digest.Digest, error) {
	resp, err := c.send(ctx, request{method: http.MethodHead, path: "/v2/" + repo + "/" + kind + "/" + ref,
		repo: repo, action: "pull", header: http.Header{"Accept": {manifestAccept}}})
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, digest.Digest(resp.Header.Get("Docker-Content-Digest")), nil
	case http.StatusNotFound:
		return false, "", nil
	}
	return false, "", fmt.Errorf("HEAD %s %s: %s", refString(repo, ref), kind, resp.Status)
}

// uploadBlob uploads a blob to repo: a mount from from (when set) if the
// node holds it there, else an upload session and one PUT of open()'s
// content. It reports whether content was sent.
func (c *ociClient) uploadBlob(ctx context.Context, repo, from string, d digest.Digest, size int64, open func() io.Reader) (bool, error) {
	q := url.Values{}
	if from != "" && from != repo {
		q.Set("mount", d.String())
		q.Set("from", from)
	}
	path := "/v2/" + repo + "/blobs/uploads/"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.send(ctx, request{method: http.MethodPost, path: path, repo: repo, action: "pull,push",
		body: func() io.Reader { return http.NoBody }})
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		return false, nil // mounted
	case http.StatusAccepted:
	default:
		return false, fmt.Errorf("upload %s@%s: %w", repo, d, responseError(resp))
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return false, fmt.Errorf("upload %s@%s: the node gave no Location", repo, d)
	}
	u, err := url.Parse(loc)
	if err != nil {
		return false, fmt.Errorf("upload %s@%s: bad Location %q", repo, d, loc)
	}
	lq := u.Query()
	lq.Set("digest", d.String())
	u.RawQuery = lq.Encode()
	resp, err = c.send(ctx, request{method: http.MethodPut, path: u.String(), repo: repo, action: "pull,push",
		header: http.Header{"Content-Type": {"application/octet-stream"}}, body: open, size: size})
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return true, fmt.Errorf("upload %s@%s: %w", repo, d, responseError(resp))
	}
	return true, nil
}

// putManifest PUTs a manifest under ref (a digest or a tag).
func (c *ociClient) putManifest(ctx context.Context, repo, ref, mediaType string, b []byte) error {
	resp, err := c.send(ctx, request{method: http.MethodPut, path: "/v2/" + repo + "/manifests/" + ref, repo: repo, action: "pull,push",
		header: http.Header{"Content-Type": {mediaType}},
		body:   func() io.Reader { return strings.NewReader(string(b)) }, size: int64(len(b))})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("manifest %s: %w", refString(repo, ref), responseError(resp))
	}
	return nil
}

// refString names repo's ref as a reference does: repo:tag or repo@digest.
func refString(repo, ref string) string {
	if _, err := digest.Parse(ref); err == nil {
		return repo + "@" + ref
	}
	return repo + ":" + ref
}
