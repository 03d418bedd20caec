package main_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// clientTimeout bounds one client command; each moves well under a MiB.
const clientTimeout = 2 * time.Minute

// TestClients drives crane, regctl, skopeo and oras against one node: each
// pushes, pulls back and compares digests and bytes, copies between
// repositories, lists tags and deletes. Every tool authenticates as the
// administrator from a Docker config.json (DOCKER_CONFIG; skopeo through
// REGISTRY_AUTH_FILE), and runs the registry's token flow with it: an
// anonymous push is refused, so each tool's push shows that it used the
// credentials.
func TestClients(t *testing.T) {
	p := nodetest.Start(t, nodetest.Options{})
	reg := adminRegistry(p)
	user, password := p.Admin()
	auth := nodetest.DockerConfig(t, []string{p.Addr()}, user, password)

	t.Run("anonymous push refused", func(t *testing.T) {
		r, err := newRegistry(p.URL()).do(t.Context(), http.MethodPost, "/v2/e2e/anonymous/blobs/uploads/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Fatalf("anonymous upload: %s, WWW-Authenticate %q; want 401 with a Bearer challenge", r, r.Header.Get("WWW-Authenticate"))
		}
		crane := nodetest.Tool(t, "crane")
		dir := t.TempDir() // an empty Docker config directory: no credentials
		layer := filepath.Join(dir, "layer.tar")
		if err := os.WriteFile(layer, tarOf(t, map[string][]byte{fileName: randomBytes(t, 1024)}), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, err := runCommand(t, clientTimeout, []string{"DOCKER_CONFIG=" + dir}, crane,
			"append", "--insecure", "--oci-empty-base", "-f", layer, "-t", p.Addr()+"/e2e/anonymous:v1")
		// crane's first request is a HEAD of the manifest: a 401 without a body
		if err == nil || !(strings.Contains(string(errOut), "UNAUTHORIZED") || strings.Contains(string(errOut), "401 Unauthorized")) {
			t.Fatalf("crane push without credentials: %v, stdout %q, stderr %q; want it refused with 401 UNAUTHORIZED", err, out, errOut)
		}
	})
	t.Run("crane", func(t *testing.T) { testCrane(t, p, reg, auth) })
	t.Run("regctl", func(t *testing.T) { testRegctl(t, p, reg, auth) })
	t.Run("skopeo", func(t *testing.T) { testSkopeo(t, p, reg, auth) })
	t.Run("oras", func(t *testing.T) { testOras(t, p, reg, auth) })
}

// manifestOf GETs repo:ref and fails the test unless it answers 200.
func manifestOf(t *testing.T, reg *registry, repo, ref string) response {
	t.Helper()
	hdr := http.Header{"Accept": {ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json"}}
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+ref, hdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET manifest %s:%s: %s", repo, ref, r)
	}
	return r
}

// requireGone asserts that repo:ref answers 404 MANIFEST_UNKNOWN.
func requireGone(t *testing.T, reg *registry, repo, ref string) {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusNotFound || !slices.Contains(r.Codes(), "MANIFEST_UNKNOWN") {
		t.Fatalf("GET manifest %s:%s after delete: %s, want 404 MANIFEST_UNKNOWN", repo, ref, r)
	}
}

// requireBlobIn asserts that blob d is reachable in repo (HEAD 200).
func requireBlobIn(t *testing.T, reg *registry, repo string, d digest.Digest, size int64) {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || r.Header.Get("Content-Length") != itoa(size) {
		t.Fatalf("HEAD blob %s@%s: %d Content-Length %q, want 200 and %d", repo, d, r.Status, r.Header.Get("Content-Length"), size)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// tagsOf lists the tags of repo over HTTP.
func tagsOf(t *testing.T, reg *registry, repo string) []string {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &list) != nil {
		t.Fatalf("GET tags of %s: %s", repo, r)
	}
	return list.Tags
}

func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func testCrane(t *testing.T, p *nodetest.Process, reg *registry, auth string) {
	crane := nodetest.Tool(t, "crane")
	dir := t.TempDir()
	file := randomBytes(t, 96<<10)
	layer := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layer, tarOf(t, map[string][]byte{fileName: file}), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := p.Addr() + "/e2e/crane:v1"
	run := func(args ...string) []byte {
		t.Helper()
		return command(t, clientTimeout, []string{"DOCKER_CONFIG=" + auth}, crane, append(args, "--insecure")...)
	}

	// Push: an image of one layer on an empty OCI base.
	run("append", "--oci-empty-base", "-f", layer, "-t", ref)
	dig := strings.TrimSpace(string(run("digest", ref)))
	craneManifest := run("manifest", ref)
	raw := manifestOf(t, reg, "e2e/crane", "v1")
	if !bytes.Equal(raw.Body, craneManifest) || digest.FromBytes(raw.Body).String() != dig {
		t.Fatalf("crane digest %s, manifest %d bytes; registry served %d bytes with digest %s", dig, len(craneManifest), len(raw.Body), digest.FromBytes(raw.Body))
	}

	// Pull back: the file in the exported filesystem is the one pushed.
	export := filepath.Join(dir, "export.tar")
	run("export", ref, export)
	f, err := os.Open(export)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := fileInTar(f, fileName)
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("crane export: %s: %v (%d bytes, want the %d pushed)", fileName, err, len(got), len(file))
	}

	// Copy to another repository (blobs are mounted), tag, list, delete.
	var m ocispec.Manifest
	if err := json.Unmarshal(raw.Body, &m); err != nil {
		t.Fatal(err)
	}
	copyRef := p.Addr() + "/e2e/crane-copy:v1"
	run("copy", ref, copyRef)
	if got := strings.TrimSpace(string(run("digest", copyRef))); got != dig {
		t.Fatalf("crane copy: digest %s, want %s", got, dig)
	}
	for _, l := range m.Layers {
		requireBlobIn(t, reg, "e2e/crane-copy", l.Digest, l.Size)
	}
	run("tag", ref, "v2")
	if tags := lines(run("ls", p.Addr()+"/e2e/crane")); !slices.Equal(tags, []string{"v1", "v2"}) {
		t.Fatalf("crane ls: %q, want [v1 v2]", tags)
	}
	run("delete", p.Addr()+"/e2e/crane-copy@"+dig)
	requireGone(t, reg, "e2e/crane-copy", dig)
	requireGone(t, reg, "e2e/crane-copy", "v1")
	t.Logf("crane: pushed, pulled, copied, tagged, listed and deleted %s", dig)
}

func testRegctl(t *testing.T, p *nodetest.Process, reg *registry, auth string) {
	regctl := nodetest.Tool(t, "regctl")
	home := t.TempDir() // regctl keeps its config in $HOME
	env := []string{"HOME=" + home, "DOCKER_CONFIG=" + auth}
	run := func(args ...string) []byte {
		t.Helper()
		return command(t, clientTimeout, env, regctl, args...)
	}
	run("registry", "set", p.Addr(), "--tls", "disabled")

	dir := t.TempDir()
	payload := randomBytes(t, 80<<10)
	in := filepath.Join(dir, "payload.bin")
	if err := os.WriteFile(in, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := p.Addr() + "/e2e/regctl:art"
	run("artifact", "put", "--artifact-type", "application/vnd.hubmesh.test", "--file-media-type", "application/vnd.hubmesh.data", "-f", in, ref)
	if got := run("artifact", "get", ref); !bytes.Equal(got, payload) {
		t.Fatalf("regctl artifact get: %d bytes, want the %d pushed", len(got), len(payload))
	}
	dig := strings.TrimSpace(string(run("image", "digest", ref)))
	raw := manifestOf(t, reg, "e2e/regctl", "art")
	if digest.FromBytes(raw.Body).String() != dig {
		t.Fatalf("regctl image digest %s; registry serves a manifest with digest %s", dig, digest.FromBytes(raw.Body))
	}
	if got := run("manifest", "get", "--format", "raw-body", ref); !bytes.Equal(got, raw.Body) {
		t.Fatalf("regctl manifest get: %q, registry serves %q", got, raw.Body)
	}

	// Copy to another repository, list and delete tags and manifests.
	copyRef := p.Addr() + "/e2e/regctl-copy:art"
	run("image", "copy", ref, copyRef)
	if got := strings.TrimSpace(string(run("image", "digest", copyRef))); got != dig {
		t.Fatalf("regctl image copy: digest %s, want %s", got, dig)
	}
	run("image", "copy", ref, p.Addr()+"/e2e/regctl:second")
	if tags := lines(run("tag", "ls", p.Addr()+"/e2e/regctl")); !slices.Equal(tags, []string{"art", "second"}) {
		t.Fatalf("regctl tag ls: %q, want [art second]", tags)
	}
	run("tag", "delete", p.Addr()+"/e2e/regctl:second")
	if tags := tagsOf(t, reg, "e2e/regctl"); !slices.Equal(tags, []string{"art"}) {
		t.Fatalf("tags after regctl tag delete: %q, want [art]", tags)
	}
	manifestOf(t, reg, "e2e/regctl", dig) // the manifest outlives its tag
	run("manifest", "delete", p.Addr()+"/e2e/regctl-copy@"+dig)
	requireGone(t, reg, "e2e/regctl-copy", dig)

	t.Run("sha512", func(t *testing.T) {
		im := randomImage(t, 48<<10)
		if err := reg.push(t.Context(), "e2e/regctl-sha512", "v1", im); err != nil {
			t.Fatal(err)
		}
		src := p.Addr() + "/e2e/regctl-sha512:v1"
		run("image", "mod", src, "--digest-algo", "sha512", "--create", "v1-sha512")
		raw := manifestOf(t, reg, "e2e/regctl-sha512", "v1-sha512")
		var m ocispec.Manifest
		if err := json.Unmarshal(raw.Body, &m); err != nil {
			t.Fatal(err)
		}
		if m.Config.Digest.Algorithm() != digest.SHA512 || len(m.Layers) != 1 || m.Layers[0].Digest.Algorithm() != digest.SHA512 {
			t.Fatalf("regctl image mod --digest-algo sha512 produced %s", raw.Body)
		}
		r, err := reg.do(t.Context(), http.MethodGet, "/v2/e2e/regctl-sha512/blobs/"+m.Layers[0].Digest.String(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, im.Layer) || m.Layers[0].Digest != digest.SHA512.FromBytes(im.Layer) {
			t.Fatalf("GET sha512 layer %s: status %d, %d bytes; want 200 and the %d pushed", m.Layers[0].Digest, r.Status, len(r.Body), len(im.Layer))
		}
		dig := strings.TrimSpace(string(run("image", "digest", p.Addr()+"/e2e/regctl-sha512:v1-sha512")))
		t.Logf("regctl: sha512 image %s, layer %s", dig, m.Layers[0].Digest)
	})
	t.Logf("regctl: pushed, pulled, copied, listed and deleted %s", dig)
}

func testSkopeo(t *testing.T, p *nodetest.Process, reg *registry, auth string) {
	skopeo := nodetest.Tool(t, "skopeo")
	dir := t.TempDir()
	env := []string{"TMPDIR=" + dir, "REGISTRY_AUTH_FILE=" + filepath.Join(auth, "config.json")}
	run := func(args ...string) []byte {
		t.Helper()
		return command(t, clientTimeout, env, skopeo, append([]string{"--insecure-policy"}, args...)...)
	}
	im := randomImage(t, 64<<10)
	layout := filepath.Join(dir, "layout")
	writeOCILayout(t, layout, "v1", im)
	ref := "docker://" + p.Addr() + "/e2e/skopeo:v1"

	run("copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+layout+":v1", ref)
	if got := run("inspect", "--raw", "--tls-verify=false", ref); !bytes.Equal(got, im.Manifest) {
		t.Fatalf("skopeo inspect --raw: %q, want the pushed manifest %q", got, im.Manifest)
	}
	if err := reg.checkPulled(t.Context(), "e2e/skopeo", "v1", im); err != nil {
		t.Fatal(err)
	}

	// Pull back into a fresh layout and compare every blob.
	out := filepath.Join(dir, "pulled")
	run("copy", "--preserve-digests", "--src-tls-verify=false", ref, "oci:"+out+":v1")
	for _, b := range [][]byte{im.Manifest, im.Config, im.Layer} {
		d := digest.FromBytes(b)
		got, err := os.ReadFile(filepath.Join(out, "blobs", "sha256", d.Encoded()))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("skopeo pull: blob %s: %v (%d bytes, want %d)", d, err, len(got), len(b))
		}
	}

	// Copy registry to registry into another repository.
	copyRef := "docker://" + p.Addr() + "/e2e/skopeo-copy:v1"
	run("copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", ref, copyRef)
	if err := reg.checkPulled(t.Context(), "e2e/skopeo-copy", "v1", im); err != nil {
		t.Fatal(err)
	}
	var tags struct{ Tags []string }
	if err := json.Unmarshal(run("list-tags", "--tls-verify=false", "docker://"+p.Addr()+"/e2e/skopeo"), &tags); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags.Tags, []string{"v1"}) {
		t.Fatalf("skopeo list-tags: %q, want [v1]", tags.Tags)
	}
	run("delete", "--tls-verify=false", copyRef)
	requireGone(t, reg, "e2e/skopeo-copy", im.Digest().String())
	t.Logf("skopeo: pushed, pulled, copied, listed and deleted %s", im.Digest())
}

func testOras(t *testing.T, p *nodetest.Process, reg *registry, auth string) {
	oras := nodetest.Tool(t, "oras")
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+auth) // oras keeps its config in $HOME
	run := func(args ...string) []byte {
		t.Helper()
		out, errOut, err := runCommandIn(t, clientTimeout, dir, env, oras, args...)
		if err != nil {
			t.Fatalf("oras %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	payload := randomBytes(t, 72<<10)
	if err := os.WriteFile(filepath.Join(dir, "payload.bin"), payload, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sig.txt"), []byte("signed by e2e "+sha256Hex(payload)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := p.Addr() + "/e2e/oras"
	ref := repo + ":v1"

	run("push", "--plain-http", "--artifact-type", "application/vnd.hubmesh.test", ref, "payload.bin:application/vnd.hubmesh.data")
	dig := strings.TrimSpace(string(run("resolve", "--plain-http", ref)))
	raw := manifestOf(t, reg, "e2e/oras", "v1")
	if digest.FromBytes(raw.Body).String() != dig {
		t.Fatalf("oras resolve %s; registry serves a manifest with digest %s", dig, digest.FromBytes(raw.Body))
	}
	run("pull", "--plain-http", "-o", "pulled", ref)
	if got, err := os.ReadFile(filepath.Join(dir, "pulled", "payload.bin")); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("oras pull: %v (%d bytes, want the %d pushed)", err, len(got), len(payload))
	}

	// Attach a signature through the referrers API and discover it.
	sig := strings.TrimSpace(string(run("attach", "--plain-http", "--distribution-spec", "v1.1-referrers-api",
		"--artifact-type", "application/vnd.hubmesh.sig", "--format", "go-template", "--template", "{{.digest}}",
		repo+"@"+dig, "sig.txt:text/plain")))
	if _, err := digest.Parse(sig); err != nil {
		t.Fatalf("oras attach printed %q, want a digest", sig)
	}
	var disc struct {
		Referrers []ocispec.Descriptor `json:"referrers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	out := run("discover", "--plain-http", "--distribution-spec", "v1.1-referrers-api", "--format", "json", ref)
	if err := json.Unmarshal(out, &disc); err != nil {
		t.Fatalf("oras discover --format json: %v: %s", err, out)
	}
	found := slices.ContainsFunc(append(disc.Referrers, disc.Manifests...), func(d ocispec.Descriptor) bool {
		return d.Digest.String() == sig && d.ArtifactType == "application/vnd.hubmesh.sig"
	})
	if !found {
		t.Fatalf("oras discover does not list the attached %s: %s", sig, out)
	}
	for _, tc := range []struct {
		filter string
		want   int
	}{{"", 1}, {"application/vnd.hubmesh.sig", 1}, {"application/vnd.other", 0}} {
		path := "/v2/e2e/oras/referrers/" + dig
		if tc.filter != "" {
			path += "?artifactType=" + tc.filter
		}
		r, err := reg.do(t.Context(), http.MethodGet, path, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var idx ocispec.Index
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &idx) != nil || len(idx.Manifests) != tc.want {
			t.Fatalf("GET %s: %s, want 200 and an index of %d", path, r, tc.want)
		}
	}

	// Copy with referrers to another repository, list tags, delete.
	copyRef := p.Addr() + "/e2e/oras-copy:v1"
	run("cp", "--from-plain-http", "--to-plain-http", "-r", ref, copyRef)
	if out := run("discover", "--plain-http", "--format", "json", copyRef); !bytes.Contains(out, []byte(sig)) {
		t.Fatalf("oras cp -r: the copy's referrers do not list %s: %s", sig, out)
	}
	if tags := lines(run("repo", "tags", "--plain-http", repo)); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("oras repo tags: %q, want [v1]", tags)
	}
	run("manifest", "delete", "--plain-http", "--force", p.Addr()+"/e2e/oras-copy@"+dig)
	requireGone(t, reg, "e2e/oras-copy", dig)
	t.Logf("oras: pushed, pulled, attached %s, discovered, copied, listed and deleted %s", sig, dig)
}
