package main_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// pushedRef is a reference pushed for the export test: its manifest bytes
// and media type, and every blob (by digest) it and its children name.
type pushedRef struct {
	repo, tag string
	mediaType string
	manifest  []byte
	children  map[digest.Digest][]byte // manifests of an index
	blobs     map[digest.Digest][]byte
}

// pushImage pushes an image manifest with a config and the given layers
// to repo, under ref (a tag, or its digest), and returns the manifest
// and blobs.
func pushImage(t *testing.T, reg *registry, repo, ref string, platform ocispec.Platform, layers ...[]byte) (ocispec.Descriptor, []byte, map[digest.Digest][]byte) {
	t.Helper()
	ctx := t.Context()
	blobs := map[digest.Digest][]byte{}
	cfg, err := json.Marshal(ocispec.Image{Platform: platform, RootFS: ocispec.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := reg.pushBlob(ctx, repo, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		t.Fatal(err)
	}
	blobs[cd.Digest] = cfg
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd}
	for _, l := range layers {
		ld, err := reg.pushBlob(ctx, repo, ocispec.MediaTypeImageLayerGzip, l)
		if err != nil {
			t.Fatal(err)
		}
		blobs[ld.Digest] = l
		m.Layers = append(m.Layers, ld)
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(body)
	if ref == "" {
		ref = d.String()
	}
	if err := reg.putManifest(ctx, repo, ref, ocispec.MediaTypeImageManifest, body); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(body)), Platform: &platform}, body, blobs
}

// registryCounts reads the node's request counters of /v2 writes: upload
// starts, upload PUTs and manifest PUTs, by route template.
func registryCounts(t *testing.T, reg *registry) map[string]float64 {
	t.Helper()
	r, err := reg.do(t.Context(), http.MethodGet, "/metrics", nil, nil)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %v %v", err, r)
	}
	counts := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "hubmesh_registry_requests_total{") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		for _, key := range []string{`method="POST",route="/v2/{name}/blobs/uploads/"`,
			`method="PUT",route="/v2/{name}/blobs/uploads/{id}"`, `method="PUT",route="/v2/{name}/manifests/{reference}"`} {
			method, route, _ := strings.Cut(key, ",")
			if strings.Contains(line, method) && strings.Contains(line, route) {
				counts[key] += v
			}
		}
	}
	return counts
}

// TestExportImport pushes a multi-layer image and a two-platform index to
// one cluster, exports them with `hubmesh export`, imports the tarball
// into a second, separate cluster twice, and pulls everything back from
// the second: identical digests and bytes, and the second import uploads
// nothing. A corrupted bundle is refused with one line before anything is
// sent.
func TestExportImport(t *testing.T) {
	a := nodetest.Start(t, nodetest.Options{})
	b := nodetest.Start(t, nodetest.Options{})
	regA, regB := adminRegistry(a), adminRegistry(b)

	shared := randomBytes(t, 64<<10) // a base layer both images share
	var refs []pushedRef

	_, body, blobs := pushImage(t, regA, "exp/app", "v1", ocispec.Platform{OS: "linux", Architecture: "amd64"},
		shared, randomBytes(t, 200<<10), randomBytes(t, 3<<10))
	refs = append(refs, pushedRef{repo: "exp/app", tag: "v1", mediaType: ocispec.MediaTypeImageManifest, manifest: body, blobs: blobs})

	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	multi := pushedRef{repo: "exp/multi", tag: "latest", mediaType: ocispec.MediaTypeImageIndex,
		children: map[digest.Digest][]byte{}, blobs: map[digest.Digest][]byte{}}
	for _, arch := range []string{"amd64", "arm64"} {
		desc, body, blobs := pushImage(t, regA, "exp/multi", "", ocispec.Platform{OS: "linux", Architecture: arch},
			shared, randomBytes(t, 50<<10))
		idx.Manifests = append(idx.Manifests, desc)
		multi.children[desc.Digest] = body
		for d, bl := range blobs {
			multi.blobs[d] = bl
		}
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := regA.putManifest(t.Context(), "exp/multi", "latest", ocispec.MediaTypeImageIndex, ib); err != nil {
		t.Fatal(err)
	}
	multi.manifest = ib
	refs = append(refs, multi)

	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle.tar")
	res := nodetest.CLI(t, 0, nil, "export", "--server", a.URL(), "exp/app:v1", "exp/multi", "-o", bundle)
	if res.Code != 0 || !strings.Contains(res.Stdout, "exported 2 image(s)") || res.Stderr != "" {
		t.Fatalf("hubmesh export: %s; want exit 0, a summary and no progress bar (stderr is no terminal)", res)
	}

	t.Run("by policy", func(t *testing.T) {
		for _, c := range []struct {
			matches []string
			want    string
		}{
			{[]string{"exp/*:v*"}, "exp/app:v1"},
			{[]string{"exp/m*"}, "exp/multi:latest"},
			{[]string{"exp/*:v*", "exp/multi:lat*"}, "exp/app:v1 exp/multi:latest"},
		} {
			out := filepath.Join(t.TempDir(), "policy.tar")
			args := []string{"export", "--server", a.URL(), "-o", out}
			for _, m := range c.matches {
				args = append(args, "--match", m)
			}
			if res := nodetest.CLI(t, 0, nil, args...); res.Code != 0 {
				t.Fatalf("export %v: %s", c.matches, res)
			}
			if got := strings.Join(bundleRefNames(t, out), " "); got != c.want {
				t.Errorf("export --match %v wrote %q, want %q", c.matches, got, c.want)
			}
		}
		if res := nodetest.CLI(t, 0, nil, "export", "--server", a.URL(), "-o", filepath.Join(t.TempDir(), "x.tar"), "--match", "nope/*"); res.Code == 0 || !strings.Contains(res.Stderr, "nothing to export") {
			t.Errorf("export of a pattern that matches nothing: %s", res)
		}
	})

	t.Run("layout", func(t *testing.T) {
		f, err := os.Open(bundle)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files := map[string][]byte{}
		tr := tar.NewReader(f)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if files[hdr.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := files["oci-layout"]; !ok {
			t.Fatal("no oci-layout in the bundle")
		}
		var index ocispec.Index
		if err := json.Unmarshal(files["index.json"], &index); err != nil {
			t.Fatalf("index.json: %v", err)
		}
		var names []string
		for _, m := range index.Manifests {
			names = append(names, m.Annotations[ocispec.AnnotationRefName])
		}
		if strings.Join(names, " ") != "exp/app:v1 exp/multi:latest" {
			t.Errorf("index.json ref names %q", names)
		}
		for _, r := range refs {
			all := map[digest.Digest][]byte{digest.FromBytes(r.manifest): r.manifest}
			for d, c := range r.children {
				all[d] = c
			}
			for d, c := range r.blobs {
				all[d] = c
			}
			for d, c := range all {
				if got, ok := files["blobs/sha256/"+d.Encoded()]; !ok || !bytes.Equal(got, c) {
					t.Errorf("%s:%s: blob %s missing or different in the bundle", r.repo, r.tag, d)
				}
			}
		}
	})

	before := registryCounts(t, regB)
	res = nodetest.CLI(t, 0, nil, "import", "--server", b.URL(), bundle)
	if res.Code != 0 || !strings.Contains(res.Stdout, "imported 2 image(s)") {
		t.Fatalf("hubmesh import: %s", res)
	}
	afterFirst := registryCounts(t, regB)
	if afterFirst[`method="PUT",route="/v2/{name}/manifests/{reference}"`] <= before[`method="PUT",route="/v2/{name}/manifests/{reference}"`] {
		t.Fatalf("the first import PUT no manifest: metrics %v -> %v", before, afterFirst)
	}
	res = nodetest.CLI(t, 0, nil, "import", "--server", b.URL(), bundle)
	if res.Code != 0 || !strings.Contains(res.Stdout, " 0 blobs uploaded") || !strings.Contains(res.Stdout, "0 manifests pushed, 0 tags set") {
		t.Fatalf("second hubmesh import: %s; want nothing uploaded", res)
	}
	if afterSecond := registryCounts(t, regB); !mapsEqual(afterFirst, afterSecond) {
		t.Errorf("the second import wrote: request counts %v -> %v", afterFirst, afterSecond)
	}

	for _, r := range refs {
		got := manifestOf(t, regB, r.repo, r.tag)
		if !bytes.Equal(got.Body, r.manifest) || got.Header.Get("Docker-Content-Digest") != digest.FromBytes(r.manifest).String() {
			t.Errorf("%s:%s from B: %d bytes, digest %s; want the pushed manifest", r.repo, r.tag, len(got.Body), got.Header.Get("Docker-Content-Digest"))
		}
		for d, c := range r.children {
			if got := manifestOf(t, regB, r.repo, d.String()); !bytes.Equal(got.Body, c) {
				t.Errorf("%s@%s from B differs", r.repo, d)
			}
		}
		for d, c := range r.blobs {
			resp, err := regB.do(t.Context(), http.MethodGet, "/v2/"+r.repo+"/blobs/"+d.String(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != http.StatusOK || !bytes.Equal(resp.Body, c) {
				t.Errorf("blob %s@%s from B: %d, %d bytes; want 200 and the %d pushed bytes", r.repo, d, resp.Status, len(resp.Body), len(c))
			}
		}
	}

	t.Run("corrupt bundle refused", func(t *testing.T) {
		raw, err := os.ReadFile(bundle)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(raw, shared)
		if at < 0 {
			t.Fatal("shared layer not found in the bundle")
		}
		raw[at+100] ^= 0xff
		bad := filepath.Join(t.TempDir(), "bad.tar")
		if err := os.WriteFile(bad, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		c := nodetest.Start(t, nodetest.Options{})
		before := registryCounts(t, adminRegistry(c))
		res := nodetest.CLI(t, 0, nil, "import", "--server", c.URL(), bad)
		if res.Code != 1 || !strings.Contains(res.Stderr, "is corrupt") || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
			t.Fatalf("import of a corrupt bundle: %s; want exit 1 and one line naming the corrupt blob", res)
		}
		if after := registryCounts(t, adminRegistry(c)); !mapsEqual(before, after) {
			t.Errorf("a corrupt bundle was partly imported: request counts %v -> %v", before, after)
		}
	})
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// bundleRefNames reads the ref.name annotations of a bundle's index.json.
func bundleRefNames(t *testing.T, bundle string) []string {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no index.json: %v", bundle, err)
		}
		if hdr.Name != "index.json" {
			continue
		}
		var index ocispec.Index
		if err := json.NewDecoder(tr).Decode(&index); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range index.Manifests {
			names = append(names, m.Annotations[ocispec.AnnotationRefName])
		}
		return names
	}
}
