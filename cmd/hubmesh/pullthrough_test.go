package main_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// TestPullThrough runs a second, separate cluster U as the upstream of
// node M (--upstream docker.io=U, credentials of U's admin from a file;
// U's repository is private, so the token flow must use them). Pulls
// through M, by tag and by digest, of an image and of a two-platform
// index, give U's bytes and digests, also under the explicit
// /v2/docker.io/... name. Then U stops: everything M cached still pulls,
// and a tag M never cached fails with a message naming the upstream.
func TestPullThrough(t *testing.T) {
	u := nodetest.Start(t, nodetest.Options{})
	regU := adminRegistry(u)

	_, single, singleBlobs := pushImage(t, regU, "lib/app", "v1", ocispec.Platform{OS: "linux", Architecture: "amd64"},
		randomBytes(t, 100<<10), randomBytes(t, 2<<10))
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	children := map[digest.Digest][]byte{}
	idxBlobs := map[digest.Digest][]byte{}
	for _, arch := range []string{"amd64", "arm64"} {
		desc, body, blobs := pushImage(t, regU, "lib/multi", "", ocispec.Platform{OS: "linux", Architecture: arch}, randomBytes(t, 30<<10))
		idx.Manifests = append(idx.Manifests, desc)
		children[desc.Digest] = body
		for d, b := range blobs {
			idxBlobs[d] = b
		}
	}
	index, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := regU.putManifest(t.Context(), "lib/multi", "latest", ocispec.MediaTypeImageIndex, index); err != nil {
		t.Fatal(err)
	}
	if r := nodetest.CLI(t, 0, nil, "repo", "set", "lib/app", "--private", "--server", u.URL()); r.Code != 0 {
		t.Fatalf("repo set --private: %s", r)
	}
	if r, _ := newRegistry(u.URL()).do(t.Context(), http.MethodGet, "/v2/lib/app/manifests/v1", nil, nil); r.Status == http.StatusOK {
		t.Fatalf("lib/app on U is readable anonymously: %s", r)
	}

	user, pass := u.Admin()
	creds := filepath.Join(t.TempDir(), "creds.yaml")
	if err := os.WriteFile(creds, []byte("docker.io:\n  username: "+user+"\n  password: \""+pass+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := nodetest.Start(t, nodetest.Options{Args: []string{
		"--upstream", "docker.io=" + u.URL(), "--upstream-credentials-file", creds, "--upstream-ttl", "1ms"}})
	regM := newRegistry(m.URL()) // anonymous: cached repositories are public reads

	pull := func(t *testing.T, repo, ref string, want []byte, wantType string) {
		t.Helper()
		hdr := http.Header{"Accept": {ocispec.MediaTypeImageIndex + ", " + ocispec.MediaTypeImageManifest}}
		r, err := regM.do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+ref, hdr, nil)
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("GET %s:%s through M: %v %v", repo, ref, err, r)
		}
		if !bytes.Equal(r.Body, want) || r.Header.Get("Docker-Content-Digest") != digest.FromBytes(want).String() ||
			r.Header.Get("Content-Type") != wantType {
			t.Fatalf("GET %s:%s through M: digest %s type %s, want U's bytes (%s)", repo, ref,
				r.Header.Get("Docker-Content-Digest"), r.Header.Get("Content-Type"), digest.FromBytes(want))
		}
	}
	pullBlobs := func(t *testing.T, repo string, blobs map[digest.Digest][]byte) {
		t.Helper()
		for d, want := range blobs {
			r, err := regM.do(t.Context(), http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
			if err != nil || r.Status != http.StatusOK || !bytes.Equal(r.Body, want) {
				t.Fatalf("GET blob %s of %s through M: %v %v", d, repo, err, r)
			}
		}
	}
	pullAll := func(t *testing.T) {
		t.Helper()
		pull(t, "lib/app", "v1", single, ocispec.MediaTypeImageManifest)
		pull(t, "lib/app", digest.FromBytes(single).String(), single, ocispec.MediaTypeImageManifest)
		pullBlobs(t, "lib/app", singleBlobs)
		pull(t, "lib/multi", "latest", index, ocispec.MediaTypeImageIndex)
		for d, body := range children {
			pull(t, "lib/multi", d.String(), body, ocispec.MediaTypeImageManifest)
		}
		pullBlobs(t, "lib/multi", idxBlobs)
		pull(t, "docker.io/lib/app", "v1", single, ocispec.MediaTypeImageManifest)
		pullBlobs(t, "docker.io/lib/app", singleBlobs)
	}

	t.Run("through the upstream", pullAll)
	t.Run("no way into local content", func(t *testing.T) {
		// A private repository of M: its layer must not be readable through
		// a cache repository name, although M holds the bytes.
		_, _, secretBlobs := pushImage(t, adminRegistry(m), "secret/app", "v1",
			ocispec.Platform{OS: "linux", Architecture: "amd64"}, randomBytes(t, 4<<10))
		if r := nodetest.CLI(t, 0, nil, "repo", "set", "secret/app", "--private", "--server", m.URL()); r.Code != 0 {
			t.Fatalf("repo set --private: %s", r)
		}
		for d := range secretBlobs {
			r, err := regM.do(t.Context(), http.MethodGet, "/v2/lib/anything/blobs/"+d.String(), nil, nil)
			if err != nil || r.Status == http.StatusOK {
				t.Fatalf("private blob %s through a cache name: %v %v", d, err, r)
			}
		}
		// A namespace a local user owns is never filled from the upstream.
		if r := nodetest.CLIStdin(t, 0, nil, "pw-of-lib-user\n", "user", "create", "lib", "--password-stdin", "--server", m.URL()); r.Code == 0 {
			t.Fatalf("user lib created although its namespace holds cache repositories: %s", r)
		}
		pushImage(t, regU, "carol/app", "v1", ocispec.Platform{OS: "linux", Architecture: "amd64"}, randomBytes(t, 2<<10))
		if r := nodetest.CLIStdin(t, 0, nil, "pw-of-carol\n", "user", "create", "carol", "--password-stdin", "--server", m.URL()); r.Code != 0 {
			t.Fatalf("user create carol: %s", r)
		}
		if r, err := regM.do(t.Context(), http.MethodGet, "/v2/carol/app/manifests/v1", nil, nil); err != nil || r.Status == http.StatusOK {
			t.Fatalf("carol/app filled from the upstream into carol's namespace: %v %v", err, r)
		}
	})
	t.Run("tags listed", func(t *testing.T) {
		r, err := regM.do(t.Context(), http.MethodGet, "/v2/lib/multi/tags/list", nil, nil)
		if err != nil || r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"latest"`) {
			t.Fatalf("tags of a cached repository: %v %v", err, r)
		}
	})

	t.Run("tag refreshed after the TTL", func(t *testing.T) {
		_, single, singleBlobs = pushImage(t, regU, "lib/app", "v1", ocispec.Platform{OS: "linux", Architecture: "arm64"},
			randomBytes(t, 10<<10))
		for _, repo := range []string{"lib/app", "docker.io/lib/app"} {
			pull(t, repo, "v1", single, ocispec.MediaTypeImageManifest)
			pullBlobs(t, repo, singleBlobs)
		}
	})

	u.Stop()
	t.Run("upstream stopped, cache serves", pullAll)
	t.Run("upstream stopped, uncached tag", func(t *testing.T) {
		r, err := regM.do(t.Context(), http.MethodGet, "/v2/lib/app/manifests/v2", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusNotFound || !slices.Contains(r.Codes(), "MANIFEST_UNKNOWN") || !strings.Contains(string(r.Body), "upstream docker.io") {
			t.Fatalf("uncached tag with the upstream down: %s; want 404 MANIFEST_UNKNOWN naming upstream docker.io", r)
		}
	})
	t.Run("local rules for writes", func(t *testing.T) {
		// Anonymous writes to a cached repository are refused like any other.
		r, err := regM.do(t.Context(), http.MethodPost, "/v2/lib/app/blobs/uploads/", nil, nil)
		if err != nil || r.Status != http.StatusUnauthorized {
			t.Fatalf("anonymous upload to a cached repository: %v %v", err, r)
		}
	})
}
