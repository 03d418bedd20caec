package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testBundle is a bundle of one image manifest (config + one layer) under
// acme/api:v1, written by bundleWriter; it returns the archive bytes and
// the manifest, layer and config.
func testBundle(t *testing.T) (archive, manifest, layer, config []byte) {
	t.Helper()
	layer = []byte(strings.Repeat("layer bytes ", 100))
	config = []byte(`{"architecture":"amd64","os":"linux"}`)
	ld := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	cd := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	manifest, err := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}})
	if err != nil {
		t.Fatal(err)
	}
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
	var buf bytes.Buffer
	bw, err := newBundleWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		d    ocispec.Descriptor
		body []byte
	}{{ld, layer}, {cd, config}, {md, manifest}, {ld, layer}} { // the layer twice: written once
		if err := bw.blob(b.d, bytes.NewReader(b.body)); err != nil {
			t.Fatal(err)
		}
	}
	bw.ref("acme/api", "v1", md)
	if err := bw.finish(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), manifest, layer, config
}

func TestBundleLayout(t *testing.T) {
	archive, manifest, layer, config := testBundle(t)
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		files[hdr.Name] = b
	}
	want := []string{"oci-layout",
		"blobs/sha256/" + digest.FromBytes(layer).Encoded(),
		"blobs/sha256/" + digest.FromBytes(config).Encoded(),
		"blobs/sha256/" + digest.FromBytes(manifest).Encoded(),
		"index.json"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("archive entries %q, want %q", names, want)
	}
	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || len(idx.Manifests) != 1 {
		t.Fatalf("index.json = %s", files["index.json"])
	}
	m := idx.Manifests[0]
	if m.Digest != digest.FromBytes(manifest) || m.Annotations[ocispec.AnnotationRefName] != "acme/api:v1" || m.Annotations[annotationRepository] != "acme/api" {
		t.Errorf("index entry %+v", m)
	}

	// read back
	path := filepath.Join(t.TempDir(), "b.tar")
	if err := os.WriteFile(path, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := openBundle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := b.readManifest(m)
	if err != nil || !bytes.Equal(got, manifest) {
		t.Fatalf("readManifest: %v, %q", err, got)
	}
	for _, body := range [][]byte{layer, config} {
		d := ocispec.Descriptor{Digest: digest.FromBytes(body), Size: int64(len(body))}
		if err := b.verify(d, nil); err != nil {
			t.Errorf("verify %s: %v", d.Digest, err)
		}
	}
}

func TestBundleWriterRefusesBadContent(t *testing.T) {
	body := []byte("content")
	tests := []struct {
		name string
		desc ocispec.Descriptor
		body []byte
	}{
		{"wrong digest", ocispec.Descriptor{Digest: digest.FromString("other"), Size: int64(len(body))}, body},
		{"short", ocispec.Descriptor{Digest: digest.FromBytes(body), Size: int64(len(body)) + 1}, body},
		{"long", ocispec.Descriptor{Digest: digest.FromBytes(body[:3]), Size: 3}, body},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bw, err := newBundleWriter(io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := bw.blob(tc.desc, bytes.NewReader(tc.body)); err == nil {
				t.Fatal("blob accepted")
			}
		})
	}
}

func TestBundleCorrupt(t *testing.T) {
	archive, manifest, layer, _ := testBundle(t)
	layerAt := bytes.Index(archive, layer)
	manifestAt := bytes.Index(archive, manifest)
	flip := func(at int) func([]byte) []byte {
		return func(b []byte) []byte { b[at] ^= 0xff; return b }
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
		atOpen bool   // openBundle itself fails
		want   string // in the error
	}{
		{"not a tar", func([]byte) []byte { return []byte("hello, world") }, true, "not a complete tar archive"},
		{"truncated", func(b []byte) []byte { return b[:layerAt+10] }, true, ""},
		{"layer flipped", flip(layerAt + 5), false, "is corrupt"},
		{"manifest flipped", flip(manifestAt + 1), false, "is corrupt"},
		{"no oci-layout", func([]byte) []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			idx := []byte(`{"schemaVersion":2,"manifests":[]}`)
			if err := tw.WriteHeader(&tar.Header{Name: "index.json", Mode: 0o644, Size: int64(len(idx))}); err != nil {
				t.Fatal(err)
			}
			tw.Write(idx)
			tw.Close()
			return buf.Bytes()
		}, true, "no oci-layout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "b.tar")
			if err := os.WriteFile(path, tc.mutate(bytes.Clone(archive)), 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := openBundle(path)
			if err == nil {
				defer b.Close()
				var im importImage
				err = im.walk(b, b.index.Manifests[0], map[digest.Digest]bool{}, 0)
				for _, d := range im.blobs {
					if err != nil {
						break
					}
					err = b.verify(d, nil)
				}
			} else if !tc.atOpen {
				t.Fatalf("openBundle: %v", err)
			}
			if err == nil {
				t.Fatal("corrupt bundle accepted")
			}
			if !errors.Is(err, errBadBundle) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line wrapping errBadBundle and holding %q", err, tc.want)
			}
		})
	}
}

func TestSplitRefName(t *testing.T) {
	tests := []struct{ in, def, repo, tag string }{
		{"acme/api:v1", "", "acme/api", "v1"},
		{"localhost/acme/api:v1", "", "localhost/acme/api", "v1"},
		{"acme/api@sha256:" + strings.Repeat("a", 64), "", "acme/api", ""},
		{"v1", "acme/api", "acme/api", "v1"},
		{"acme/api", "", "acme/api", ""},
	}
	for _, tc := range tests {
		repo, tag := splitRefName(tc.in, tc.def)
		if repo != tc.repo || tag != tc.tag {
			t.Errorf("splitRefName(%q, %q) = %q, %q; want %q, %q", tc.in, tc.def, repo, tag, tc.repo, tc.tag)
		}
	}
}

func TestParseExportRefs(t *testing.T) {
	d := "sha256:" + strings.Repeat("b", 64)
	refs, err := parseExportRefs([]string{"acme/api:v1", "library/base", "acme/api@" + d}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []exportRef{{repo: "acme/api", ref: "v1"}, {repo: "library/base", ref: "latest"}, {repo: "acme/api", ref: d}}
	for i := range want {
		if refs[i] != want[i] {
			t.Errorf("ref %d = %+v, want %+v", i, refs[i], want[i])
		}
	}
	for _, bad := range [][]string{{"acme/api:"}, {"acme/api@sha256:zz"}, {"/acme"}} {
		if _, err := parseExportRefs(bad, false); err == nil {
			t.Errorf("parseExportRefs(%q) accepted", bad)
		}
	}
	if _, err := parseExportRefs([]string{"acme/api:v1"}, true); err == nil {
		t.Error("--all-tags with a tag accepted")
	}
}
