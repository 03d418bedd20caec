package registryapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// fakeCluster records what the cluster API asked of it.
type fakeCluster struct {
	mu      sync.Mutex
	fail    error
	role    string
	ttl     time.Duration
	joined  JoinRequest
	left    bool
	removed string
}

func (c *fakeCluster) Status(context.Context) (ClusterStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ClusterStatus{ClusterID: "c1", ID: "n1", Leader: "n1", Healthy: true,
		Members: []ClusterMember{{ID: "n1", Role: "voter", Leader: true, State: "alive"}}}, c.fail
}

func (c *fakeCluster) CreateJoinToken(_ context.Context, role string, ttl time.Duration) (JoinToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.role, c.ttl = role, ttl
	return JoinToken{Token: "tok", Role: role}, c.fail
}

func (c *fakeCluster) Join(_ context.Context, req JoinRequest) (JoinResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Token != "tok" {
		return JoinResponse{}, fmt.Errorf("token expired: %w", hubmesh.ErrDenied)
	}
	c.joined = req
	return JoinResponse{ClusterID: "c1", Members: []ClusterMember{req.Member}}, c.fail
}

func (c *fakeCluster) Leave(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = true
	return c.fail
}

func (c *fakeCluster) RemoveMember(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = id
	return c.fail
}

// token is what the last CreateJoinToken was asked for.
func (c *fakeCluster) token() (string, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.role, c.ttl
}

func TestClusterAPI(t *testing.T) {
	fc := &fakeCluster{}
	h, err := NewClusterHandler(fc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewClusterHandler: %v", err)
	}
	if _, err := NewClusterHandler(nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("NewClusterHandler(nil) did not fail")
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	do := func(method, path, body string) result {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v", method, path, err)
		}
		return result{status: resp.StatusCode, hdr: resp.Header, body: b}
	}
	expect := func(r result, status int, code string) {
		t.Helper()
		if r.status != status || r.code() != code {
			t.Fatalf("got %d %q (%s), want %d %q", r.status, r.code(), r.body, status, code)
		}
	}

	r := do(http.MethodGet, "/api/v1/cluster/status", "")
	expect(r, http.StatusOK, "")
	var st ClusterStatus
	if err := json.Unmarshal(r.body, &st); err != nil || st.ClusterID != "c1" || len(st.Members) != 1 || !st.Members[0].Leader {
		t.Fatalf("status body %s (%v)", r.body, err)
	}
	if r.hdr.Get("Content-Type") != "application/json" || r.hdr.Get("Content-Length") != strconv.Itoa(len(r.body)) {
		t.Fatalf("status headers %v", r.hdr)
	}

	// an empty body asks for the defaults
	r = do(http.MethodPost, "/api/v1/cluster/join-tokens", "")
	expect(r, http.StatusCreated, "")
	if role, ttl := fc.token(); role != "voter" || ttl != 24*time.Hour {
		t.Fatalf("defaults: role %q ttl %s", role, ttl)
	}
	expect(do(http.MethodPost, "/api/v1/cluster/join-tokens", `{"role":"mirror","ttl":"2h"}`), http.StatusCreated, "")
	if role, ttl := fc.token(); role != "mirror" || ttl != 2*time.Hour {
		t.Fatalf("role %q ttl %s", role, ttl)
	}
	for _, body := range []string{`{"role":"king"}`, `{"ttl":"forever"}`, `{"ttl":"-1h"}`, `{"ttl":"9999h"}`, `{"rol":"voter"}`, `{`} {
		expect(do(http.MethodPost, "/api/v1/cluster/join-tokens", body), http.StatusBadRequest, "UNSUPPORTED")
	}

	expect(do(http.MethodPost, "/api/v1/cluster/join", `{"token":"tok"}`), http.StatusBadRequest, "UNSUPPORTED")
	r = do(http.MethodPost, "/api/v1/cluster/join", `{"token":"old","member":{"id":"n2"}}`)
	expect(r, http.StatusForbidden, "DENIED")
	if !strings.Contains(r.message(), "token expired") {
		t.Fatalf("a refused join does not say why: %q", r.message())
	}
	expect(do(http.MethodPost, "/api/v1/cluster/join", `{"token":"tok","member":{"id":"n2","http":"h:1"}}`), http.StatusOK, "")
	fc.mu.Lock()
	joined := fc.joined
	fc.mu.Unlock()
	if joined.Member.ID != "n2" || joined.Member.HTTP != "h:1" {
		t.Fatalf("joined %+v", joined)
	}

	expect(do(http.MethodPost, "/api/v1/cluster/leave", ""), http.StatusNoContent, "")
	expect(do(http.MethodDelete, "/api/v1/cluster/members/n2", ""), http.StatusNoContent, "")
	fc.mu.Lock()
	left, removed := fc.left, fc.removed
	fc.mu.Unlock()
	if !left || removed != "n2" {
		t.Fatalf("left %v removed %q", left, removed)
	}
	expect(do(http.MethodGet, "/api/v1/cluster/nope", ""), http.StatusNotFound, "NOT_FOUND")
	r = do(http.MethodPost, "/api/v1/cluster/status", "")
	expect(r, http.StatusMethodNotAllowed, "UNSUPPORTED")
	if r.hdr.Get("Allow") != "GET" {
		t.Fatalf("405 Allow = %q", r.hdr.Get("Allow"))
	}
	expect(do(http.MethodGet, "/api/v1/cluster/members/n2", ""), http.StatusMethodNotAllowed, "UNSUPPORTED")

	fc.mu.Lock()
	fc.fail = fmt.Errorf("no quorum: %w", hubmesh.ErrUnavailable)
	fc.mu.Unlock()
	r = do(http.MethodGet, "/api/v1/cluster/status", "")
	expect(r, http.StatusServiceUnavailable, "UNAVAILABLE")
	if r.hdr.Get("Retry-After") == "" {
		t.Fatal("a 503 without Retry-After")
	}
}
