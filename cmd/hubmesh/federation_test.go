package main_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// TestFederation runs two separate meshes: B mirrors namespace alice of A
// (--federate A=..., A's administrator as B's account there). B's first
// sweep copies what A holds — a public and a private repository, which
// stays private on B — with A's digests and bytes, and nothing of other
// namespaces. The sweep interval is an hour, so a later push to A reaches
// B only through A's webhook, signed with the link's secret, to B's
// federation hook. The accounts of the two meshes stay separate.
func TestFederation(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{Args: []string{"--webhook-allow-cidrs", "127.0.0.0/8"}})
	regA := adminRegistry(a)
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	_, app1, appBlobs := pushImage(t, regA, "alice/app", "v1", amd64, randomBytes(t, 64<<10))
	_, secret1, _ := pushImage(t, regA, "alice/secret", "v1", amd64, randomBytes(t, 4<<10))
	pushImage(t, regA, "bob/app", "v1", amd64, randomBytes(t, 1<<10))
	if r := nodetest.CLI(t, 0, nil, "repo", "set", "alice/secret", "--private", "--server", a.URL()); r.Code != 0 {
		t.Fatalf("repo set --private: %s", r)
	}

	const hookSecret = "federation-hook-secret"
	dir := t.TempDir()
	user, pass := a.Admin()
	creds := filepath.Join(dir, "creds.yaml")
	secrets := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(creds, []byte("A:\n  username: "+user+"\n  password: \""+pass+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secrets, []byte("A: "+hookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := nodetest.Start(t, nodetest.Options{Args: []string{
		"--federate", "A=" + a.URL(), "--federate-namespaces", "A=alice",
		"--upstream-credentials-file", creds, "--federate-secret-file", secrets, "--federate-interval", "1h"}})
	regB := adminRegistry(b)
	anonB := newRegistry(b.URL())

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// waitManifest polls B until repo:tag is want (by digest and bytes).
	waitManifest := func(t *testing.T, reg *registry, repo, tag string, want []byte) {
		t.Helper()
		hdr := http.Header{"Accept": {ocispec.MediaTypeImageManifest + ", " + ocispec.MediaTypeImageIndex}}
		for {
			r, err := reg.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+tag, hdr, nil)
			if err == nil && r.Status == http.StatusOK && bytes.Equal(r.Body, want) &&
				r.Header.Get("Docker-Content-Digest") == digest.FromBytes(want).String() {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s:%s on B: last answer %v %v; want A's manifest %s", repo, tag, r, err, digest.FromBytes(want))
			case <-time.After(100 * time.Millisecond): // polling interval, not synchronisation
			}
		}
	}

	t.Run("first sweep", func(t *testing.T) {
		waitManifest(t, anonB, "alice/app", "v1", app1)
		for d, want := range appBlobs {
			r, err := anonB.do(ctx, http.MethodGet, "/v2/alice/app/blobs/"+d.String(), nil, nil)
			if err != nil || r.Status != http.StatusOK || !bytes.Equal(r.Body, want) {
				t.Fatalf("blob %s of alice/app on B: %v %v", d, err, r)
			}
		}
		waitManifest(t, regB, "alice/secret", "v1", secret1)
		if r, err := anonB.do(ctx, http.MethodGet, "/v2/alice/secret/manifests/v1", nil, nil); err != nil || r.Status == http.StatusOK {
			t.Fatalf("anonymous pull of alice/secret on B: %v %v; it is private on A", err, r)
		}
		if r, err := regB.do(ctx, http.MethodGet, "/v2/bob/app/manifests/v1", nil, nil); err != nil || r.Status != http.StatusNotFound {
			t.Fatalf("bob/app on B: %v %v; bob is not federated", err, r)
		}
	})

	t.Run("webhook", func(t *testing.T) {
		sf := filepath.Join(dir, "hook-secret")
		if err := os.WriteFile(sf, []byte(hookSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		hookURL := b.URL() + "/api/v1/federation/A/hook"
		if r := nodetest.CLI(t, 0, a.Env(), "webhook", "add", "alice/app", "--name", "mesh-b", "--url", hookURL, "--secret-file", sf); r.Code != 0 {
			t.Fatalf("webhook add: %s", r)
		}
		_, app2, _ := pushImage(t, regA, "alice/app", "v2", amd64, randomBytes(t, 32<<10))
		waitManifest(t, anonB, "alice/app", "v2", app2)
		// A retag of v1 moves it on B too.
		_, app1b, _ := pushImage(t, regA, "alice/app", "v1", amd64, randomBytes(t, 8<<10))
		waitManifest(t, anonB, "alice/app", "v1", app1b)
	})

	t.Run("unsigned hook refused", func(t *testing.T) {
		body := strings.NewReader(`{"repository":{"repo_name":"alice/app"},"push_data":{"tag":"v1"}}`)
		r, err := anonB.do(ctx, http.MethodPost, "/api/v1/federation/A/hook", http.Header{"Content-Type": {"application/json"}}, body)
		if err != nil || r.Status != http.StatusForbidden {
			t.Fatalf("unsigned federation hook: %v %v; want 403", err, r)
		}
	})

	t.Run("accounts separate", func(t *testing.T) {
		asA := newRegistry(b.URL())
		asA.user, asA.password = a.Admin()
		r, err := asA.do(ctx, http.MethodGet, "/api/v1/user", nil, nil)
		if err != nil || r.Status != http.StatusUnauthorized {
			t.Fatalf("A's administrator on B: %v %v; want 401", err, r)
		}
		r, err = asA.do(ctx, http.MethodGet, "/v2/alice/secret/manifests/v1", nil, nil)
		if err != nil || r.Status == http.StatusOK {
			t.Fatalf("A's administrator pulls alice/secret on B: %v %v", err, r)
		}
	})
}
