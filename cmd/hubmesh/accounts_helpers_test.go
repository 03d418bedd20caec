package main_test

// Client-side helpers for the account tests (access_matrix_test.go,
// docker_login_test.go): a /api/v1 client with Basic auth, and an
// http.RoundTripper that authenticates /v2 requests the way registry
// clients do — the Docker token flow or Basic on every request.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiClient calls the /api/v1 REST API of a node as one user, with Basic
// auth (no credentials when user is "").
type apiClient struct {
	base           string // http://127.0.0.1:PORT
	user, password string
	client         *http.Client
}

func newAPIClient(base, user, password string) *apiClient {
	return &apiClient{base: base, user: user, password: password, client: &http.Client{Timeout: 30 * time.Second}}
}

// call sends body (JSON-encoded unless nil) and returns the response.
func (a *apiClient) call(ctx context.Context, method, path string, body any) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.password)
	}
	resp, err := a.client.Do(req)
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

// must sends a request and fails the test unless the status is one of
// want; it decodes a JSON answer into out when out is not nil.
func (a *apiClient) must(t testing.TB, method, path string, body, out any, want ...int) response {
	t.Helper()
	r, err := a.call(t.Context(), method, path, body)
	if err != nil {
		t.Fatalf("%s %s as %q: %v", method, path, a.user, err)
	}
	if !slices.Contains(want, r.Status) {
		t.Fatalf("%s %s as %q: %s, want %v", method, path, a.user, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s %s as %q: decode %s: %v", method, path, a.user, r, err)
		}
	}
	return r
}

// createUser creates a user as this (admin) client.
func (a *apiClient) createUser(t testing.TB, name, password string) {
	t.Helper()
	a.must(t, http.MethodPost, "/api/v1/users", map[string]any{
		"username": name, "password": password, "email": name + "@example.test",
	}, nil, http.StatusCreated, http.StatusOK)
}

// createRepo creates ns/name through the API with the given visibility.
func (a *apiClient) createRepo(t testing.TB, ns, name string, private bool) {
	t.Helper()
	a.must(t, http.MethodPost, "/api/v1/repositories", map[string]any{
		"namespace": ns, "name": name, "is_private": private,
	}, nil, http.StatusCreated, http.StatusOK)
}

// createAccessToken creates a personal access token of this client's user
// and returns its secret.
func (a *apiClient) createAccessToken(t testing.TB, label string, scopes ...string) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	a.must(t, http.MethodPost, "/api/v1/access-tokens", map[string]any{
		"token_label": label, "scopes": scopes,
	}, &out, http.StatusCreated, http.StatusOK)
	if !strings.HasPrefix(out.Token, "hmp_") {
		t.Fatalf("access token %q of %s: secret %q, want hmp_<id>_<secret>", label, a.user, out.Token)
	}
	return out.Token
}

// authMode is how a client authenticates its /v2 requests.
type authMode int

const (
	// modeToken: the Docker token flow. The client learns the realm and
	// service from the 401 challenge of GET /v2/, asks the realm for a
	// token for the scopes a request needs (Basic auth with the user's
	// credentials, none for anonymous) and sends it as a Bearer token.
	modeToken authMode = iota
	// modeBasic: Basic auth on every /v2 request (no header for anonymous).
	modeBasic
)

func (m authMode) String() string {
	if m == modeBasic {
		return "basic"
	}
	return "token"
}

// challenge is a parsed WWW-Authenticate header.
type challenge struct {
	Scheme string
	Params map[string]string
}

// parseChallenge reads `Bearer realm="...",service="...",scope="..."`,
// with quoted values that may hold commas.
func parseChallenge(h string) (challenge, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	c := challenge{Scheme: scheme, Params: map[string]string{}}
	if scheme == "" {
		return c, errors.New("empty challenge")
	}
	for rest = strings.TrimSpace(rest); rest != ""; {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			return c, fmt.Errorf("challenge %q: parameter without '='", h)
		}
		key = strings.ToLower(strings.TrimSpace(key))
		var val string
		if strings.HasPrefix(after, `"`) {
			end := 1
			var b strings.Builder
			for ; end < len(after) && after[end] != '"'; end++ {
				if after[end] == '\\' && end+1 < len(after) {
					end++
				}
				b.WriteByte(after[end])
			}
			if end >= len(after) {
				return c, fmt.Errorf("challenge %q: unterminated quoted value", h)
			}
			val, rest = b.String(), after[end+1:]
		} else {
			val, rest, _ = strings.Cut(after, ",")
			rest = "," + rest
		}
		c.Params[key] = val
		rest = strings.TrimSpace(rest)
		if rest != "" {
			if rest[0] != ',' {
				return c, fmt.Errorf("challenge %q: want ',' after %s", h, key)
			}
			rest = strings.TrimSpace(rest[1:])
		}
	}
	return c, nil
}

// checkChallenge verifies that a 401 response carries a Bearer challenge
// with a realm and a service, and, when repo is not "", a scope naming it.
func checkChallenge(r response, repo string) error {
	h := r.Header.Get("WWW-Authenticate")
	c, err := parseChallenge(h)
	if err != nil {
		return err
	}
	if !strings.EqualFold(c.Scheme, "Bearer") || c.Params["realm"] == "" || c.Params["service"] == "" {
		return fmt.Errorf("WWW-Authenticate %q: want Bearer with realm and service", h)
	}
	if repo != "" && !strings.HasPrefix(c.Params["scope"], "repository:"+repo+":") {
		return fmt.Errorf("WWW-Authenticate %q: want scope=\"repository:%s:...\"", h, repo)
	}
	return nil
}

// tokenError is a /token answer other than 200: the client got no token.
type tokenError struct {
	Status int
	Body   string
}

func (e *tokenError) Error() string { return fmt.Sprintf("token endpoint: %d %s", e.Status, e.Body) }

// clientAuth is an http.RoundTripper that authenticates /v2 requests as
// one identity in one mode. Tokens are cached per scope set, as clients
// keep them for their lifetime (300 s, far longer than a test).
type clientAuth struct {
	base           string // http://127.0.0.1:PORT
	user, password string // user "" is anonymous
	mode           authMode
	next           http.RoundTripper

	mu      sync.Mutex
	realm   string
	service string
	tokens  map[string]*tokenEntry
}

type tokenEntry struct {
	ready chan struct{}
	token string
	err   error
}

func newClientAuth(base, user, password string, mode authMode) *clientAuth {
	return &clientAuth{base: base, user: user, password: password, mode: mode,
		next: http.DefaultTransport, tokens: map[string]*tokenEntry{}}
}

// registry is a registry client (the one of e2e_test.go) that
// authenticates through c.
func (c *clientAuth) registry() *registry {
	return &registry{base: c.base, client: &http.Client{Timeout: 30 * time.Second, Transport: c}}
}

// RoundTrip implements http.RoundTripper.
func (c *clientAuth) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.mode == modeBasic {
		if c.user == "" {
			return c.next.RoundTrip(req)
		}
		r := req.Clone(req.Context())
		r.SetBasicAuth(c.user, c.password)
		return c.next.RoundTrip(r)
	}
	tok, err := c.token(req.Context(), scopesFor(req.Method, req.URL))
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return c.next.RoundTrip(r)
}

// token returns a registry token for scopes, from the cache or the realm.
func (c *clientAuth) token(ctx context.Context, scopes []string) (string, error) {
	key := strings.Join(scopes, " ")
	c.mu.Lock()
	e, ok := c.tokens[key]
	if !ok {
		e = &tokenEntry{ready: make(chan struct{})}
		c.tokens[key] = e
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-e.ready:
			return e.token, e.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	e.token, e.err = c.fetchToken(ctx, scopes)
	if e.err != nil {
		// Do not cache a failure (a cancelled context, say); the next
		// request asks again.
		c.mu.Lock()
		delete(c.tokens, key)
		c.mu.Unlock()
	}
	close(e.ready)
	return e.token, e.err
}

// discover learns the realm and the service from GET /v2/ without
// credentials, as docker does before it logs in or pulls.
func (c *clientAuth) discover(ctx context.Context) (realm, service string, err error) {
	c.mu.Lock()
	realm, service = c.realm, c.service
	c.mu.Unlock()
	if realm != "" {
		return realm, service, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/", nil)
	if err != nil {
		return "", "", err
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return "", "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return "", "", fmt.Errorf("GET /v2/ without credentials: %s, want 401 with a Bearer challenge", resp.Status)
	}
	ch, err := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	if err != nil {
		return "", "", fmt.Errorf("GET /v2/: %w", err)
	}
	if !strings.EqualFold(ch.Scheme, "Bearer") || ch.Params["realm"] == "" {
		return "", "", fmt.Errorf("GET /v2/: challenge %q, want Bearer with a realm", resp.Header.Get("WWW-Authenticate"))
	}
	c.mu.Lock()
	c.realm, c.service = ch.Params["realm"], ch.Params["service"]
	c.mu.Unlock()
	return ch.Params["realm"], ch.Params["service"], nil
}

// fetchToken is GET <realm>?service=&scope=... with Basic auth.
func (c *clientAuth) fetchToken(ctx context.Context, scopes []string) (string, error) {
	realm, service, err := c.discover(ctx)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(realm)
	if err != nil {
		return "", fmt.Errorf("realm %q: %w", realm, err)
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		if len(b) > 200 {
			b = b[:200]
		}
		return "", &tokenError{Status: resp.StatusCode, Body: string(b)}
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return "", fmt.Errorf("token response %q: %w", b, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", fmt.Errorf("token response %q without a token", b)
	}
	return tr.Token, nil
}

// scopesFor is the scope a registry client asks for before a request:
// pull to read, pull,push to write (and pull on the source of a mount),
// delete to delete, registry:catalog:* for the catalog.
func scopesFor(method string, u *url.URL) []string {
	p, ok := strings.CutPrefix(u.Path, "/v2/")
	if !ok || p == "" {
		return nil
	}
	if p == "_catalog" {
		return []string{"registry:catalog:*"}
	}
	for _, sep := range []string{"/blobs/uploads", "/manifests/", "/blobs/", "/tags/list", "/referrers/"} {
		i := strings.LastIndex(p, sep)
		if i <= 0 {
			continue
		}
		name, actions := p[:i], "pull"
		switch {
		case sep == "/blobs/uploads":
			actions = "pull,push"
		case method == http.MethodPut:
			actions = "pull,push"
		case method == http.MethodDelete:
			actions = "delete"
		}
		scopes := []string{"repository:" + name + ":" + actions}
		if from := u.Query().Get("from"); from != "" && sep == "/blobs/uploads" && from != name {
			scopes = append(scopes, "repository:"+from+":pull")
		}
		return scopes
	}
	return nil
}
