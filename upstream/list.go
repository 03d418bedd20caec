package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// maxListBody bounds the body of one catalog or tags page.
const maxListBody = 8 << 20

// Catalog lists one page of the registry's repositories (GET /v2/_catalog),
// at most n names after last (n <= 0 lets the registry choose). It returns
// the names and the last to ask the next page with, "" when there is none.
//
// A registry may answer the catalog anonymously with only what anyone may
// see, so a client with credentials authenticates first (the token flow
// with scope registry:catalog:*) rather than waiting for a 401.
func (c *Client) Catalog(ctx context.Context, last string, n int) ([]string, string, error) {
	const scope = "registry:catalog:*"
	if c.user != "" && c.cachedAuth(scope) == "" {
		if err := c.authorize(ctx, scope); err != nil {
			return nil, "", err
		}
	}
	var body struct {
		Repositories []string `json:"repositories"`
	}
	next, err := c.list(ctx, "/v2/_catalog", scope, "_catalog", last, n, &body)
	return body.Repositories, next, err
}

// Tags lists one page of the tags of repo (GET /v2/<repo>/tags/list), as
// Catalog does. A repository the registry does not have (or hides) wraps
// hubmesh.ErrNotFound.
func (c *Client) Tags(ctx context.Context, repo, last string, n int) ([]string, string, error) {
	var body struct {
		Tags []string `json:"tags"`
	}
	next, err := c.list(ctx, "/v2/"+repo+"/tags/list", "repository:"+repo+":pull", repo, last, n, &body)
	return body.Tags, next, err
}

// list GETs one page of a listing into v and returns the next page's last.
func (c *Client) list(ctx context.Context, path, scope, what, last string, n int, v any) (string, error) {
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	resp, err := c.doPath(ctx, http.MethodGet, path, q, scope, "application/json")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := c.check(resp, what, "list", hubmesh.ErrNotFound); err != nil {
		return "", err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxListBody)).Decode(v); err != nil {
		return "", fmt.Errorf("upstream %s: listing %s: %v: %w", c.name, what, err, hubmesh.ErrUnavailable)
	}
	return nextLast(resp.Header.Get("Link")), nil
}

// nextLast reads the last= of a Link: <...?n=..&last=..>; rel="next" header.
func nextLast(link string) string {
	for _, part := range strings.Split(link, ",") {
		target, params, _ := strings.Cut(part, ";")
		if !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		u, err := url.Parse(target)
		if err != nil {
			return ""
		}
		return u.Query().Get("last")
	}
	return ""
}

// authorize runs the token flow for scope before any request needs it:
// it reads the challenge of GET /v2/ and caches what it earns.
func (c *Client) authorize(ctx context.Context, scope string) error {
	u := *c.base
	u.Path = c.base.Path + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("upstream %s: %v: %w", c.name, err, hubmesh.ErrInvalid)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("upstream %s unreachable: %v: %w", c.name, unwrapURL(err), hubmesh.ErrUnavailable)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return nil // open registry: nothing to earn
	}
	scheme, params := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	var authz string
	switch scheme {
	case "bearer":
		tok, err := c.fetchToken(ctx, params, scope)
		if err != nil {
			return err
		}
		authz = "Bearer " + tok
	case "basic":
		authz = basic(c.user, c.pass)
	default:
		return nil
	}
	c.mu.Lock()
	c.tokens[scope] = authz
	c.mu.Unlock()
	return nil
}
