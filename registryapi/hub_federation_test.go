package registryapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hubmesh/hubmesh"
)

func init() {
	apiOps = append(apiOps, apiOp{"POST", "/api/v1/federation/{name}/hook",
		"A push webhook of a mesh this node mirrors (link {name}); X-Hub-Signature-256 with the link's secret is the credential; the repository is copied soon",
		"federation", "none", nil, map[string]string{"repository": "object", "push_data": "object"}, 202, federationHookResp{}})
}

// fakeFederation records sync requests; link "a" federates namespace
// alice with secret s3cret, link "open" has no secret.
type fakeFederation struct {
	mu    sync.Mutex
	asked []string
}

func (f *fakeFederation) HookSecret(name string) (string, error) {
	switch name {
	case "a":
		return "s3cret", nil
	case "open":
		return "", nil
	}
	return "", fmt.Errorf("link %s: %w", name, hubmesh.ErrNotFound)
}

func (f *fakeFederation) RequestSync(name, repo string) error {
	if !strings.HasPrefix(repo, "alice/") {
		return fmt.Errorf("%s outside: %w", repo, hubmesh.ErrDenied)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, name+" "+repo)
	return nil
}

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestFederationHook(t *testing.T) {
	e := newAuthEnv(t)
	fed := &fakeFederation{}
	hub, err := NewHub(HubConfig{Auth: e.a, Accounts: e.acc, Listings: e.reg, Logger: e.a.log, Federation: fed})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub)
	t.Cleanup(srv.Close)
	e.srv = srv

	docker := `{"push_data":{"tag":"v2"},"repository":{"repo_name":"alice/app"}}`
	cloud := `{"specversion":"1.0","data":{"push_data":{"tag":"v3"},"repository":{"repo_name":"alice/web"}}}`
	tests := []struct {
		name, link, body, sig string
		status                int
		code                  string
	}{
		{"docker payload", "a", docker, sign("s3cret", docker), http.StatusAccepted, ""},
		{"cloudevents payload", "a", cloud, sign("s3cret", cloud), http.StatusAccepted, ""},
		{"no signature", "a", docker, "", http.StatusForbidden, "DENIED"},
		{"wrong secret", "a", docker, sign("other", docker), http.StatusForbidden, "DENIED"},
		{"not hex", "a", docker, "sha256=zz", http.StatusForbidden, "DENIED"},
		{"body changed", "a", docker + " ", sign("s3cret", docker), http.StatusForbidden, "DENIED"},
		{"outside the namespaces", "a", `{"repository":{"repo_name":"bob/x"}}`, sign("s3cret", `{"repository":{"repo_name":"bob/x"}}`), http.StatusForbidden, "DENIED"},
		{"no repository", "a", `{}`, sign("s3cret", `{}`), http.StatusBadRequest, "UNSUPPORTED"},
		{"not json", "a", `x`, sign("s3cret", `x`), http.StatusBadRequest, "UNSUPPORTED"},
		{"unknown link", "zz", docker, sign("s3cret", docker), http.StatusNotFound, "NOT_FOUND"},
		{"link without secret", "open", docker, "", http.StatusForbidden, "DENIED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := []string{"Content-Type", "application/json"}
			if tt.sig != "" {
				hdr = append(hdr, "X-Hub-Signature-256", tt.sig)
			}
			r := e.do("POST", "/api/v1/federation/"+tt.link+"/hook", "", []byte(tt.body), hdr...)
			e.expect(r, tt.status, tt.code)
		})
	}
	if want := []string{"a alice/app", "a alice/web"}; !slices.Equal(fed.asked, want) {
		t.Fatalf("sync requests %q, want %q", fed.asked, want)
	}

	t.Run("no federation", func(t *testing.T) {
		e := newAuthEnv(t) // its Hub has no Federation
		r := e.do("POST", "/api/v1/federation/a/hook", "", []byte(docker), "X-Hub-Signature-256", sign("s3cret", docker))
		e.expect(r, http.StatusNotFound, "NOT_FOUND")
	})
}
