package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// fakeRegistry is a tiny registry behind the token flow: /v2 answers 401
// with a Bearer challenge unless it gets the token /token hands out for
// the right Basic credentials.
type fakeRegistry struct {
	manifests map[string][]byte // "repo:ref" -> payload (ref a tag or digest)
	blobs     map[digest.Digest][]byte
	tokens    atomic.Int32 // token requests served
	broken    bool         // answer 500 to everything under /v2
}

const (
	testUser  = "alice"
	testPass  = "s3cret"
	testToken = "tok-123"
)

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		u, p, ok := r.BasicAuth()
		if !ok || u != testUser || p != testPass {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if !strings.HasPrefix(r.URL.Query().Get("scope"), "repository:") || r.URL.Query().Get("service") != "fake" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.tokens.Add(1)
		_, _ = io.WriteString(w, `{"token":"`+testToken+`"}`)
		return
	}
	if f.broken {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		p, ok := f.manifests[rest[:i]+":"+rest[i+len("/manifests/"):]]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", MediaTypeOCIManifest)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(p).String())
		_, _ = w.Write(p)
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		b, ok := f.blobs[digest.Digest(rest[i+len("/blobs/"):])]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
		return
	}
	w.WriteHeader(http.StatusNotFound)
}

func TestClient(t *testing.T) {
	t.Parallel()
	layer := []byte("layer bytes")
	ld := digest.FromBytes(layer)
	man := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + ld.String() + `","size":11},"layers":[]}`)
	md := digest.FromBytes(man)
	reg := &fakeRegistry{
		manifests: map[string][]byte{"library/alpine:3": man, "library/alpine:" + md.String(): man, "bad/one:1": []byte("{}")},
		blobs:     map[digest.Digest][]byte{ld: layer},
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)

	c, err := New(Config{Name: "fake", URL: srv.URL, Username: testUser, Password: testPass})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	desc, err := c.Resolve(ctx, "library/alpine", "3")
	if err != nil || desc.Digest != md {
		t.Fatalf("Resolve = %+v, %v; want digest %s", desc, err, md)
	}
	mt, payload, d, err := c.Manifest(ctx, "library/alpine", md.String())
	if err != nil || d != md || mt != MediaTypeOCIManifest || string(payload) != string(man) {
		t.Fatalf("Manifest = %q, %q, %s, %v", mt, payload, d, err)
	}
	rc, _, err := c.Blob(ctx, "library/alpine", ld)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != string(layer) {
		t.Fatalf("blob = %q", got)
	}
	if n := reg.tokens.Load(); n != 1 {
		t.Errorf("token requests = %d, want 1 (the token is reused per scope)", n)
	}
	refs, err := ParseRefs(payload, mt)
	if err != nil || len(refs.Blobs) != 1 || refs.Blobs[0].Digest != ld {
		t.Errorf("ParseRefs = %+v, %v", refs, err)
	}

	tests := []struct {
		name string
		call func(*Client) error
		want error
	}{
		{"missing tag", func(c *Client) error { _, err := c.Resolve(ctx, "library/alpine", "nope"); return err }, hubmesh.ErrManifestUnknown},
		{"missing blob", func(c *Client) error { _, _, err := c.Blob(ctx, "library/alpine", digest.FromString("x")); return err }, hubmesh.ErrBlobUnknown},
		{"missing digest", func(c *Client) error {
			_, _, _, err := c.Manifest(ctx, "library/alpine", digest.FromString("other").String())
			return err
		}, hubmesh.ErrManifestUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(c); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("bad credentials", func(t *testing.T) {
		bad, _ := New(Config{Name: "fake", URL: srv.URL, Username: testUser, Password: "wrong"})
		if _, err := bad.Resolve(ctx, "library/alpine", "3"); !errors.Is(err, hubmesh.ErrDenied) {
			t.Errorf("err = %v, want ErrDenied", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		c, _ := New(Config{Name: "gone", URL: gone.URL})
		if _, err := c.Resolve(ctx, "library/alpine", "3"); !errors.Is(err, hubmesh.ErrUnavailable) || !strings.Contains(err.Error(), "gone") {
			t.Errorf("err = %v, want ErrUnavailable naming the upstream", err)
		}
	})
	t.Run("server error", func(t *testing.T) {
		srv := httptest.NewServer(&fakeRegistry{broken: true})
		defer srv.Close()
		c, _ := New(Config{Name: "fake", URL: srv.URL})
		if _, _, _, err := c.Manifest(ctx, "library/alpine", "3"); !errors.Is(err, hubmesh.ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	})
}

func TestManifestDigestVerified(t *testing.T) {
	t.Parallel()
	// A registry that serves other bytes than the digest asked for.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", MediaTypeOCIManifest)
		_, _ = io.WriteString(w, `{"schemaVersion":2}`)
	}))
	t.Cleanup(srv.Close)
	c, _ := New(Config{Name: "liar", URL: srv.URL})
	want := digest.FromString("something else")
	if _, _, _, err := c.Manifest(t.Context(), "a/b", want.String()); !errors.Is(err, hubmesh.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
}

func TestParseChallenge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, scheme, realm, service string
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`, "bearer", "https://auth.docker.io/token", "registry.docker.io"},
		{`Basic realm="x"`, "basic", "x", ""},
		{`Bearer realm=http://a/token, service=s`, "bearer", "http://a/token", "s"},
		{``, "", "", ""},
	}
	for _, tt := range tests {
		scheme, p := ParseChallenge(tt.in)
		if scheme != tt.scheme || p["realm"] != tt.realm || p["service"] != tt.service {
			t.Errorf("ParseChallenge(%q) = %q %v", tt.in, scheme, p)
		}
	}
}
