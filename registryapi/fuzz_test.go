package registryapi

import (
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// nameRE is the OCI distribution-spec name grammar, used as the oracle for
// the hand-written validName.
var nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

var tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2", "/v2/_catalog", "/v2/a/b/tags/list", "/v2/a/manifests/latest",
		"/v2/a/blobs/sha256:" + strings.Repeat("a", 64), "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads",
		"/v2/a/blobs/uploads/u-1", "/v2/a/referrers/sha256:x", "/v2/a%2Fb/tags/list", "/v2/%2e%2e/tags/list",
		"/v2/a/../b/manifests/x", "/v2//tags/list", "/v2/a/blobs/uploads/%ZZ", "/v3/", "/v2/blobs/blobs/blobs",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, err := parseRoute(path)
		if err != nil {
			if toAPIError(err).code == codeUnknown {
				t.Fatalf("parseRoute(%q) gave an unmapped error %v", path, err)
			}
			return
		}
		switch rt.Kind {
		case routeBase, routeCatalog:
		case routeNone:
			t.Fatalf("parseRoute(%q) succeeded with no route", path)
		default:
			if !nameRE.MatchString(rt.Name) || len(rt.Name) > maxNameLength {
				t.Fatalf("parseRoute(%q) accepted name %q", path, rt.Name)
			}
			if strings.Contains(rt.Ref, "/") {
				t.Fatalf("parseRoute(%q) gave reference %q with a slash", path, rt.Ref)
			}
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a.b", "a__b", "a___b", "a--b", "a-", "-a", "a..b", "A", "a//b", "a/", "library/ubuntu", "x_y.z-w/q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := nameRE.MatchString(s) && len(s) <= maxNameLength
		if got := validName(s); got != want {
			t.Fatalf("validName(%q) = %v, grammar says %v", s, got, want)
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"latest", "1.0", "_x", "-x", ".x", "sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("b", 128),
		"sha256:baddigeststring", "sha256:" + strings.Repeat("A", 64), "md5:abc", ":", "sha256:", strings.Repeat("t", 129),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := parseReference(s)
		if err != nil {
			if c := toAPIError(err).code; c != codeTagInvalid && c != codeDigestInvalid {
				t.Fatalf("parseReference(%q) error code %v", s, c)
			}
			return
		}
		switch {
		case ref.Digest != "":
			if ref.Digest.Validate() != nil || !supportedAlgorithm(ref.Digest.Algorithm()) || ref.Digest.String() != s {
				t.Fatalf("parseReference(%q) accepted digest %q", s, ref.Digest)
			}
		case !tagRE.MatchString(ref.Tag) || ref.Tag != s:
			t.Fatalf("parseReference(%q) accepted tag %q", s, ref.Tag)
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("0", 64), "sha512:" + strings.Repeat("f", 128), "sha384:" + strings.Repeat("0", 96), "sha256:..%2f", "SHA256:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDigest(s)
		if err != nil {
			return
		}
		if d.Validate() != nil || strings.ContainsAny(s, "/.%") {
			t.Fatalf("parseDigest(%q) accepted %q", s, d)
		}
		if _, err := digest.Parse(d.String()); err != nil {
			t.Fatalf("accepted digest does not round trip: %v", err)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-0", "bytes=500-1499", "bytes=500-", "bytes=-500", "bytes=500-0", "bytes=5000-10000", "bytes=-0", "bytes=0-1,2-3", "items=1-2", "bytes=99999999999999999999-", "bytes= 1 - 2 "} {
		f.Add(s, int64(2048))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			return
		}
		br, ok, err := parseRange(header, size)
		if err != nil || !ok {
			return
		}
		if br.Start < 0 || br.Length <= 0 || br.Start+br.Length > size || br.Start+br.Length < br.Start {
			t.Fatalf("parseRange(%q, %d) = %+v", header, size, br)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"0-0", "0-999", "1000-1999", "bytes 0-9/10", "bytes=0-9", "bytes 0-9/*", "9-0", "a-b", "-", "0-", "-5", "0-9223372036854775807", "0-9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := parseContentRange(s)
		if err != nil {
			return
		}
		if start < 0 || end < start {
			t.Fatalf("parseContentRange(%q) = %d, %d", s, start, end)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	d := digest.FromString("x").String()
	seeds := []string{
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + d + `","size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"` + d + `","size":2,"urls":["https://x"]}]}`,
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d + `","size":3}],"subject":{"digest":"` + d + `","size":1}}`,
		`{"schemaVersion":2,"config":{"digest":"` + d + `","size":-1}}`,
		`{"schemaVersion":2,"manifests":null}`,
		`{"schemaVersion":1}`, `[]`, `null`, `{`, `{"schemaVersion":2,"mediaType":"text/plain"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), "application/vnd.oci.image.manifest.v1+json")
		f.Add([]byte(s), "")
	}
	f.Fuzz(func(t *testing.T, payload []byte, contentType string) {
		info, err := parseManifest(payload, contentType)
		if err != nil {
			if toAPIError(err).code != codeManifestInvalid {
				t.Fatalf("parseManifest error with code %v: %v", toAPIError(err).code, err)
			}
			return
		}
		if !isImageManifest(info.MediaType) && !isIndex(info.MediaType) {
			t.Fatalf("accepted media type %q", info.MediaType)
		}
		for _, b := range append(append([]hubmesh.Descriptor{}, info.Blobs...), info.Children...) {
			if b.Digest.Validate() != nil || b.Size < 0 {
				t.Fatalf("accepted descriptor %+v", b)
			}
			if nonDistributable(b.MediaType) && len(info.Blobs) > 0 && b.Digest != info.Blobs[0].Digest {
				t.Fatalf("non-distributable layer kept: %+v", b)
			}
		}
		if isIndex(info.MediaType) && len(info.Blobs) > 0 || isImageManifest(info.MediaType) && len(info.Children) > 0 {
			t.Fatalf("blobs and children mixed up: %+v", info)
		}
	})
}

func TestParseManifest(t *testing.T) {
	cfg := digest.FromString("config").String()
	l1 := digest.FromString("layer").String()
	nd := digest.FromString("nondistributable").String()
	img := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
		"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfg + `","size":1},
		"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + l1 + `","size":2},
		          {"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + l1 + `","size":2},
		          {"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"` + nd + `","size":3,"urls":["https://x"]}],
		"annotations":{"k":"v"}}`
	info, err := parseManifest([]byte(img), "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
	if err != nil {
		t.Fatal(err)
	}
	if info.ArtifactType != "application/vnd.oci.image.config.v1+json" || info.Annotations["k"] != "v" {
		t.Fatalf("%+v", info)
	}
	if len(info.Blobs) != 2 || info.Blobs[0].Digest.String() != cfg || info.Blobs[1].Digest.String() != l1 || info.Blobs[1].Size != 2 {
		t.Fatalf("blobs %+v: want config and one layer (deduplicated, non-distributable left out)", info.Blobs)
	}
	idx := `{"schemaVersion":2,"artifactType":"application/x","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + l1 + `","size":5,"artifactType":"application/y"}],
		"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + cfg + `","size":1}}`
	info, err = parseManifest([]byte(idx), "")
	if err != nil {
		t.Fatal(err)
	}
	if info.MediaType != mediaTypeOCIIndex || info.ArtifactType != "application/x" || info.Subject.String() != cfg ||
		len(info.Children) != 1 || info.Children[0].ArtifactType != "application/y" || info.Children[0].Size != 5 {
		t.Fatalf("index %+v", info)
	}
	for name, bad := range map[string]string{
		"no schemaVersion":     `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`,
		"index with config":    `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"config":{"digest":"` + cfg + `","size":1}}`,
		"image without config": `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`,
		"missing size":         `{"schemaVersion":2,"config":{"digest":"` + cfg + `"}}`,
		"bad subject":          `{"schemaVersion":2,"manifests":[],"subject":{"digest":"nope","size":1}}`,
		"unknown type":         `{"schemaVersion":2,"mediaType":"application/vnd.example+json","config":{"digest":"` + cfg + `","size":1}}`,
		"cannot tell":          `{"schemaVersion":2}`,
	} {
		if _, err := parseManifest([]byte(bad), ""); err == nil || toAPIError(err).code != codeManifestInvalid {
			t.Errorf("%s: err %v, want MANIFEST_INVALID", name, err)
		}
	}
}

func TestParseDecimal(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "007": 7, "10000": 10000, "9223372036854775807": math.MaxInt64} {
		if n, ok := parseDecimal(s); !ok || n != want {
			t.Errorf("parseDecimal(%q) = %d, %v; want %d", s, n, ok, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", " 1", "1 ", "1_000", "0x10", "1e3", "9223372036854775808", "99999999999999999999"} {
		if n, ok := parseDecimal(s); ok {
			t.Errorf("parseDecimal(%q) = %d, accepted", s, n)
		}
	}
}
