package registryapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hubmesh/hubmesh"
)

// env is a Handler over a memRegistry behind a real HTTP server.
type env struct {
	t    *testing.T
	reg  *memRegistry
	srv  *httptest.Server
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, opts ...func(*Config)) *env {
	t.Helper()
	reg := newMemRegistry()
	logs := &syncBuffer{}
	cfg := Config{
		Manifests: reg, Listings: reg, Links: reg, Blobs: reg, Uploads: reg,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, reg: reg, srv: srv, logs: logs}
}

type result struct {
	status int
	hdr    http.Header
	body   []byte
}

// firstError is the first error of an OCI error body; zero when the body
// is not one.
func (r result) firstError() (e struct{ Code, Message string }) {
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(r.body, &body) == nil && len(body.Errors) > 0 {
		e = body.Errors[0]
	}
	return e
}

// code is the first OCI error code of the body, or "".
func (r result) code() string { return r.firstError().Code }

// message is the first OCI error message of the body, or "".
func (r result) message() string { return r.firstError().Message }

// do sends one request. body may be nil, []byte (with Content-Length) or an
// io.Reader (sent chunked, length unknown). hdr are key, value pairs.
func (e *env) do(method, path string, body any, hdr ...string) result {
	e.t.Helper()
	var rd io.Reader
	length := int64(-1)
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, length = bytes.NewReader(b), int64(len(b))
	case io.Reader:
		rd = b
	default:
		e.t.Fatalf("bad body type %T", body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if length >= 0 {
		req.ContentLength = length
	} else if rd != nil {
		req.ContentLength = -1
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	if v := resp.Header.Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
		e.t.Errorf("%s %s: Docker-Distribution-Api-Version = %q", method, path, v)
	}
	return result{status: resp.StatusCode, hdr: resp.Header, body: b}
}

// expect asserts status and (when not empty) the OCI error code.
func (e *env) expect(r result, status int, code string) {
	e.t.Helper()
	if r.status != status || r.code() != code {
		e.t.Fatalf("got %d %q, want %d %q; body %s", r.status, r.code(), status, code, truncate(string(r.body), 300))
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads data monolithically and returns its digest.
func (e *env) pushBlob(repo string, data []byte) digest.Digest {
	e.t.Helper()
	d := digest.FromBytes(data)
	r := e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), data)
	e.expect(r, http.StatusCreated, "")
	return d
}

// image builds an OCI image manifest over a pushed config and layer.
func (e *env) image(repo string, extra map[string]any) []byte {
	e.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(e.t, 64)
	cd, ld := e.pushBlob(repo, cfg), e.pushBlob(repo, layer)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}},
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) putManifest(repo, ref, mediaType string, payload []byte) result {
	e.t.Helper()
	return e.do("PUT", "/v2/"+repo+"/manifests/"+ref, payload, "Content-Type", mediaType)
}

func TestNewValidatesConfig(t *testing.T) {
	_, err := New(Config{})
	if err == nil {
		t.Fatal("New(Config{}) succeeded")
	}
	for _, field := range []string{"Manifests", "Listings", "Links", "Blobs", "Uploads", "Logger"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	reg := newMemRegistry()
	pr := prometheus.NewRegistry()
	cfg := Config{Manifests: reg, Listings: reg, Links: reg, Blobs: reg, Uploads: reg,
		Logger: slog.New(slog.DiscardHandler), Registerer: pr}
	if _, err := New(cfg); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := New(cfg); err != nil {
		t.Fatalf("second New on the same registerer: %v", err)
	}
}

func TestBaseAndRouting(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("a", 256)
	cases := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"base", "GET", "/v2/", 200, ""},
		{"base without slash", "GET", "/v2", 200, ""},
		{"base head", "HEAD", "/v2/", 200, ""},
		{"base post", "POST", "/v2/", 405, "UNSUPPORTED"},
		{"outside v2", "GET", "/v3/", 404, "NOT_FOUND"},
		{"v2 prefix only", "GET", "/v2x/foo", 404, "NOT_FOUND"},
		{"unknown endpoint", "GET", "/v2/foo/bar", 404, "NOT_FOUND"},
		{"upper-case name", "GET", "/v2/Foo/tags/list", 400, "NAME_INVALID"},
		{"dot-dot name", "GET", "/v2/a/../b/tags/list", 400, "NAME_INVALID"},
		{"encoded dot-dot", "GET", "/v2/%2e%2e/tags/list", 400, "NAME_INVALID"},
		{"encoded slash", "GET", "/v2/a%2Fb/tags/list", 400, "NAME_INVALID"},
		{"double slash", "GET", "/v2/a//b/tags/list", 400, "NAME_INVALID"},
		{"name too long", "GET", "/v2/" + long + "/tags/list", 400, "NAME_INVALID"},
		{"bad separator", "GET", "/v2/a__-b/tags/list", 400, "NAME_INVALID"},
		{"empty name", "GET", "/v2/blobs/uploads/", 404, "NOT_FOUND"},
		{"bad tag", "GET", "/v2/a/manifests/-bad", 400, "TAG_INVALID"},
		{"tag too long", "GET", "/v2/a/manifests/" + strings.Repeat("t", 129), 400, "TAG_INVALID"},
		{"bad digest", "GET", "/v2/a/manifests/sha256:baddigeststring", 400, "DIGEST_INVALID"},
		{"upper-case hex", "GET", "/v2/a/blobs/sha256:" + strings.Repeat("A", 64), 400, "DIGEST_INVALID"},
		{"unsupported algorithm", "GET", "/v2/a/blobs/md5:" + strings.Repeat("a", 32), 400, "DIGEST_INVALID"},
		{"traversal in digest", "GET", "/v2/a/blobs/sha256:..%2F..%2Fetc", 400, "NAME_INVALID"},
		{"traversal in upload id", "GET", "/v2/a/blobs/uploads/..", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"odd upload id", "GET", "/v2/a/blobs/uploads/a$b", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"method on tags", "DELETE", "/v2/a/tags/list", 405, "UNSUPPORTED"},
		{"unknown repo tags", "GET", "/v2/nobody/tags/list", 404, "NAME_UNKNOWN"},
		{"unknown repo manifest", "GET", "/v2/nobody/manifests/latest", 404, "NAME_UNKNOWN"},
		{"unknown blob", "GET", "/v2/nobody/blobs/" + digest.FromString("x").String(), 404, "BLOB_UNKNOWN"},
		{"referrers bad digest", "GET", "/v2/a/referrers/latest", 400, "DIGEST_INVALID"},
		{"catalog bad n", "GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, nil)
			if tc.method == "HEAD" {
				if r.status != tc.status {
					t.Fatalf("status %d, want %d", r.status, tc.status)
				}
				return
			}
			e.expect(r, tc.status, tc.code)
		})
	}
	r := e.do("GET", "/v2/", nil)
	if string(r.body) != "{}" || r.hdr.Get("Content-Type") != "application/json" {
		t.Errorf("base body %q content type %q", r.body, r.hdr.Get("Content-Type"))
	}
	if r := e.do("POST", "/v2/", nil); r.hdr.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q", r.hdr.Get("Allow"))
	}
	for path, want := range map[string]string{
		"/v2/r/manifests/latest":        "GET, HEAD, PUT, DELETE",
		"/v2/r/blobs/uploads/":          "POST",
		"/v2/r/blobs/uploads/some-id":   "GET, PATCH, PUT, DELETE",
		"/v2/r/tags/list":               "GET",
		"/v2/r/referrers/sha256:abcdef": "GET",
	} {
		r := e.do("OPTIONS", path, nil)
		e.expect(r, 405, "UNSUPPORTED")
		if r.hdr.Get("Allow") != want {
			t.Errorf("OPTIONS %s: Allow = %q, want %q", path, r.hdr.Get("Allow"), want)
		}
	}
}

// TestAllowListsEveryHandledMethod keeps the Allow header in step with the
// handlers: a method that is served is listed, and nothing else.
func TestAllowListsEveryHandledMethod(t *testing.T) {
	e := newEnv(t)
	h, err := New(Config{Manifests: e.reg, Listings: e.reg, Links: e.reg, Blobs: e.reg, Uploads: e.reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for k, handlers := range h.routes {
		listed := strings.Split(h.allow[k], ", ")
		if h.allow[k] == "" {
			listed = nil
		}
		if len(listed) != len(handlers) {
			t.Errorf("%s: Allow %q for %d handled methods", templates[k], h.allow[k], len(handlers))
		}
		for _, m := range listed {
			if handlers[m] == nil {
				t.Errorf("%s: Allow lists %s, which is not handled", templates[k], m)
			}
		}
	}
}

func TestUploadMonolithicAndPostPut(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 1000)
	d := digest.FromBytes(data)

	// POST with ?digest=: one request
	r := e.do("POST", "/v2/alice/app/blobs/uploads/?digest="+d.String(), data)
	e.expect(r, 201, "")
	if r.hdr.Get("Location") != "/v2/alice/app/blobs/"+d.String() || r.hdr.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("created headers %v", r.hdr)
	}
	got := e.do("GET", r.hdr.Get("Location"), nil)
	if got.status != 200 || !bytes.Equal(got.body, data) {
		t.Fatalf("GET blob: %d, %d bytes", got.status, len(got.body))
	}

	// POST then PUT with the whole body
	data2 := randomBytes(t, 300)
	d2 := digest.FromBytes(data2)
	r = e.do("POST", "/v2/alice/app/blobs/uploads/", nil)
	e.expect(r, 202, "")
	loc := r.hdr.Get("Location")
	if !strings.HasPrefix(loc, "/v2/alice/app/blobs/uploads/") || r.hdr.Get("Range") != "0-0" || r.hdr.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("session headers %v", r.hdr)
	}
	r = e.do("PUT", loc+"?digest="+d2.String(), data2)
	e.expect(r, 201, "")
	if got := e.do("GET", "/v2/alice/app/blobs/"+d2.String(), nil); !bytes.Equal(got.body, data2) {
		t.Fatal("post+put content differs")
	}

	// wrong digest on a monolithic POST: 400 and no session left behind
	r = e.do("POST", "/v2/alice/app/blobs/uploads/?digest="+digest.FromString("other").String(), data)
	e.expect(r, 400, "DIGEST_INVALID")
	if n := e.reg.sessions(); n != 0 {
		t.Fatalf("%d sessions left after a failed monolithic upload", n)
	}
	// empty blob
	empty := digest.FromBytes(nil)
	e.expect(e.do("POST", "/v2/alice/app/blobs/uploads/?digest="+empty.String(), []byte{}), 201, "")
	if got := e.do("HEAD", "/v2/alice/app/blobs/"+empty.String(), nil); got.status != 200 || got.hdr.Get("Content-Length") != "0" {
		t.Fatalf("HEAD empty blob: %d %v", got.status, got.hdr)
	}
}

func TestUploadChunked(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 3000)
	d := digest.FromBytes(data)
	r := e.do("POST", "/v2/repo/blobs/uploads/", nil)
	e.expect(r, 202, "")
	loc := r.hdr.Get("Location")
	id := r.hdr.Get("Docker-Upload-UUID")

	chunk := func(start, end int) result {
		return e.do("PATCH", loc, data[start:end+1], "Content-Range", fmt.Sprintf("%d-%d", start, end), "Content-Type", "application/octet-stream")
	}
	r = chunk(0, 999)
	e.expect(r, 202, "")
	if r.hdr.Get("Range") != "0-999" || r.hdr.Get("Location") != loc || r.hdr.Get("Docker-Upload-UUID") != id {
		t.Fatalf("after chunk 1: %v", r.hdr)
	}
	// out of order: skipping ahead, and repeating the start
	for _, bad := range [][2]int{{2000, 2999}, {0, 999}} {
		r = chunk(bad[0], bad[1])
		e.expect(r, 416, "RANGE_INVALID")
		if r.hdr.Get("Range") != "0-999" || r.hdr.Get("Location") != loc || r.hdr.Get("Docker-Upload-UUID") != id {
			t.Fatalf("416 headers: %v", r.hdr)
		}
	}
	// a final PUT with an out-of-order chunk is a 416 too, and the session survives
	r = e.do("PUT", loc+"?digest="+d.String(), data[2000:], "Content-Range", "2000-2999")
	e.expect(r, 416, "RANGE_INVALID")
	// status
	r = e.do("GET", loc, nil)
	e.expect(r, 204, "")
	if r.hdr.Get("Range") != "0-999" || r.hdr.Get("Location") != loc || r.hdr.Get("Docker-Upload-UUID") != id {
		t.Fatalf("status headers: %v", r.hdr)
	}
	e.expect(chunk(1000, 1999), 202, "")
	// final chunk on PUT
	r = e.do("PUT", loc+"?digest="+d.String(), data[2000:], "Content-Range", "2000-2999")
	e.expect(r, 201, "")
	if r.hdr.Get("Docker-Content-Digest") != d.String() || r.hdr.Get("Location") != "/v2/repo/blobs/"+d.String() {
		t.Fatalf("created headers: %v", r.hdr)
	}
	if r.hdr.Get("Range") != "" || r.hdr.Get("Docker-Upload-UUID") != "" {
		t.Fatalf("a created blob still describes its session: %v", r.hdr)
	}
	if got := e.do("GET", "/v2/repo/blobs/"+d.String(), nil); !bytes.Equal(got.body, data) {
		t.Fatal("chunked content differs")
	}
	// the session is gone
	e.expect(e.do("GET", loc, nil), 404, "BLOB_UPLOAD_UNKNOWN")
}

func TestUploadStreamedAndErrors(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 5000)
	d := digest.FromBytes(data)
	start := func() string {
		r := e.do("POST", "/v2/repo/blobs/uploads/", nil)
		e.expect(r, 202, "")
		return r.hdr.Get("Location")
	}

	t.Run("streamed", func(t *testing.T) {
		loc := start()
		// chunked transfer encoding: no Content-Length, no Content-Range
		r := e.do("PATCH", loc, io.MultiReader(bytes.NewReader(data[:100]), bytes.NewReader(data[100:])))
		e.expect(r, 202, "")
		if r.hdr.Get("Range") != "0-4999" {
			t.Fatalf("Range %q", r.hdr.Get("Range"))
		}
		r = e.do("PUT", r.hdr.Get("Location")+"?digest="+d.String(), nil)
		e.expect(r, 201, "")
		if got := e.do("GET", "/v2/repo/blobs/"+d.String(), nil); !bytes.Equal(got.body, data) {
			t.Fatal("streamed content differs")
		}
	})
	t.Run("sha512", func(t *testing.T) {
		d512 := digest.SHA512.FromBytes(data)
		r := e.do("POST", "/v2/repo/blobs/uploads/?digest-algorithm=sha512", nil)
		e.expect(r, 202, "")
		e.expect(e.do("PUT", r.hdr.Get("Location")+"?digest="+d512.String(), data), 201, "")
		e.expect(e.do("POST", "/v2/repo/blobs/uploads/?digest="+d512.String(), data), 201, "")
		if got := e.do("GET", "/v2/repo/blobs/"+d512.String(), nil); !bytes.Equal(got.body, data) || got.hdr.Get("Docker-Content-Digest") != d512.String() {
			t.Fatal("sha512 blob differs")
		}
		algs := e.reg.algs[len(e.reg.algs)-2:]
		if algs[0] != digest.SHA512 || algs[1] != digest.SHA512 {
			t.Fatalf("sessions created with %v, want sha512", algs)
		}
		e.expect(e.do("POST", "/v2/repo/blobs/uploads/?digest-algorithm=md5", nil), 400, "DIGEST_INVALID")
		e.expect(e.do("POST", "/v2/repo/blobs/uploads/?digest-algorithm=sha256&digest="+d512.String(), data), 400, "DIGEST_INVALID")
	})
	t.Run("errors", func(t *testing.T) {
		loc := start()
		cases := []struct {
			name   string
			method string
			query  string
			body   any
			hdr    []string
			status int
			code   string
		}{
			{"bad content-range", "PATCH", "", data[:10], []string{"Content-Range", "ten-twenty"}, 416, "RANGE_INVALID"},
			{"reversed content-range", "PATCH", "", data[:10], []string{"Content-Range", "9-0"}, 416, "RANGE_INVALID"},
			{"length disagrees with range", "PATCH", "", data[:10], []string{"Content-Range", "0-19"}, 400, "SIZE_INVALID"},
			{"chunked body longer than range", "PATCH", "", io.MultiReader(bytes.NewReader(data[:30])), []string{"Content-Range", "0-9"}, 400, "SIZE_INVALID"},
			{"chunked body shorter than range", "PATCH", "", io.MultiReader(bytes.NewReader(data[:5])), []string{"Content-Range", "0-9"}, 400, "SIZE_INVALID"},
			{"put without digest", "PUT", "", nil, nil, 400, "DIGEST_INVALID"},
			{"put with bad digest", "PUT", "?digest=sha256:nothex", nil, nil, 400, "DIGEST_INVALID"},
			{"put with wrong digest", "PUT", "?digest=" + digest.FromString("no").String(), nil, nil, 400, "DIGEST_INVALID"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(tc.method, loc+tc.query, tc.body, tc.hdr...)
				e.expect(r, tc.status, tc.code)
				if r.hdr.Get("Location") != loc || r.hdr.Get("Range") != "0-0" || r.hdr.Get("Docker-Upload-UUID") == "" {
					t.Fatalf("upload headers on error: %v", r.hdr)
				}
			})
		}
		// nothing was appended by any failed request
		r := e.do("GET", loc, nil)
		e.expect(r, 204, "")
		if r.hdr.Get("Range") != "0-0" {
			t.Fatalf("Range after failures %q", r.hdr.Get("Range"))
		}
		// another repository cannot use the session
		e.expect(e.do("GET", strings.Replace(loc, "/v2/repo/", "/v2/other/", 1), nil), 404, "BLOB_UPLOAD_UNKNOWN")
		// cancel
		e.expect(e.do("DELETE", loc, nil), 204, "")
		e.expect(e.do("GET", loc, nil), 404, "BLOB_UPLOAD_UNKNOWN")
		e.expect(e.do("PATCH", loc, data[:10]), 404, "BLOB_UPLOAD_UNKNOWN")
		e.expect(e.do("DELETE", loc, nil), 404, "BLOB_UPLOAD_UNKNOWN")
	})
}

func TestMount(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 100)
	d := e.pushBlob("src/repo", data)

	r := e.do("POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from=src/repo", nil)
	e.expect(r, 201, "")
	if r.hdr.Get("Location") != "/v2/dst/blobs/"+d.String() || r.hdr.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("mount headers %v", r.hdr)
	}
	if got := e.do("GET", "/v2/dst/blobs/"+d.String(), nil); !bytes.Equal(got.body, data) {
		t.Fatal("mounted blob differs")
	}
	// anonymous mount
	e.expect(e.do("POST", "/v2/anon/blobs/uploads/?mount="+d.String(), nil), 201, "")
	e.expect(e.do("HEAD", "/v2/anon/blobs/"+d.String(), nil), 200, "")
	// nothing to mount: an upload session instead
	missing512 := digest.SHA512.FromBytes(randomBytes(t, 10))
	r = e.do("POST", "/v2/dst/blobs/uploads/?mount="+missing512.String()+"&from=src/repo", nil)
	e.expect(r, 202, "")
	if !strings.HasPrefix(r.hdr.Get("Location"), "/v2/dst/blobs/uploads/") {
		t.Fatalf("fallback Location %q", r.hdr.Get("Location"))
	}
	if alg := e.reg.algs[len(e.reg.algs)-1]; alg != digest.SHA512 {
		t.Fatalf("fallback session uses %s, want the mount digest's sha512", alg)
	}
	// not in the named source repository
	e.expect(e.do("POST", "/v2/dst2/blobs/uploads/?mount="+d.String()+"&from=elsewhere", nil), 202, "")
	e.expect(e.do("POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from=Bad", nil), 400, "NAME_INVALID")
	e.expect(e.do("POST", "/v2/dst/blobs/uploads/?mount=sha256:short", nil), 400, "DIGEST_INVALID")
}

func TestBlobGetRangeHeadDelete(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 2048)
	d := e.pushBlob("r", data)
	path := "/v2/r/blobs/" + d.String()

	r := e.do("GET", path, nil)
	e.expect(r, 200, "")
	if !bytes.Equal(r.body, data) || r.hdr.Get("Content-Length") != "2048" || r.hdr.Get("Docker-Content-Digest") != d.String() ||
		r.hdr.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET blob headers %v", r.hdr)
	}
	cases := []struct {
		rng          string
		status       int
		start, end   int // inclusive, for 206
		contentRange string
	}{
		{"bytes=500-1499", 206, 500, 1499, "bytes 500-1499/2048"},
		{"bytes=500-", 206, 500, 2047, "bytes 500-2047/2048"},
		{"bytes=-500", 206, 1548, 2047, "bytes 1548-2047/2048"},
		{"bytes=2000-5000", 206, 2000, 2047, "bytes 2000-2047/2048"},
		{"bytes=0-0", 206, 0, 0, "bytes 0-0/2048"},
		{"bytes=500-0", 416, 0, 0, "bytes */2048"},
		{"bytes=5000-10000", 416, 0, 0, "bytes */2048"},
		{"bytes=-0", 416, 0, 0, "bytes */2048"},
		{"bytes=abc", 416, 0, 0, "bytes */2048"},
		{"bytes=0-1,5-6", 200, 0, 2047, ""},
		{"items=0-1", 200, 0, 2047, ""},
	}
	for _, tc := range cases {
		t.Run(tc.rng, func(t *testing.T) {
			r := e.do("GET", path, nil, "Range", tc.rng)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d", r.status, tc.status)
			}
			if r.hdr.Get("Content-Range") != tc.contentRange {
				t.Errorf("Content-Range %q, want %q", r.hdr.Get("Content-Range"), tc.contentRange)
			}
			switch tc.status {
			case 416:
				if r.code() != "RANGE_INVALID" {
					t.Errorf("code %q", r.code())
				}
			default:
				want := data[tc.start : tc.end+1]
				if !bytes.Equal(r.body, want) || r.hdr.Get("Content-Length") != strconv.Itoa(len(want)) {
					t.Errorf("body %d bytes (Content-Length %s), want %d", len(r.body), r.hdr.Get("Content-Length"), len(want))
				}
			}
		})
	}
	r = e.do("HEAD", path, nil)
	if r.status != 200 || len(r.body) != 0 || r.hdr.Get("Content-Length") != "2048" || r.hdr.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD: %d %v", r.status, r.hdr)
	}
	r = e.do("GET", path, nil, "If-None-Match", `"`+d.String()+`"`)
	if r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Fatalf("conditional GET: %d", r.status)
	}
	e.expect(e.do("DELETE", path, nil), 202, "")
	e.expect(e.do("GET", path, nil), 404, "BLOB_UNKNOWN")
	if r := e.do("HEAD", path, nil); r.status != 404 || len(r.body) != 0 {
		t.Fatalf("HEAD after delete: %d", r.status)
	}
	e.expect(e.do("DELETE", path, nil), 404, "BLOB_UNKNOWN")
}

func TestManifestPushPull(t *testing.T) {
	e := newEnv(t)
	payload := e.image("alice/app", map[string]any{"annotations": map[string]string{"a": "b"}})
	d := digest.FromBytes(payload)

	r := e.putManifest("alice/app", "1.0", mediaTypeOCIManifest, payload)
	e.expect(r, 201, "")
	if r.hdr.Get("Docker-Content-Digest") != d.String() || r.hdr.Get("Location") != "/v2/alice/app/manifests/"+d.String() {
		t.Fatalf("PUT headers %v", r.hdr)
	}
	for _, ref := range []string{"1.0", d.String()} {
		r = e.do("GET", "/v2/alice/app/manifests/"+ref, nil, "Accept", mediaTypeOCIManifest)
		e.expect(r, 200, "")
		if !bytes.Equal(r.body, payload) || r.hdr.Get("Content-Type") != mediaTypeOCIManifest ||
			r.hdr.Get("Docker-Content-Digest") != d.String() || r.hdr.Get("Content-Length") != strconv.Itoa(len(payload)) {
			t.Fatalf("GET %s: %v", ref, r.hdr)
		}
		r = e.do("HEAD", "/v2/alice/app/manifests/"+ref, nil)
		if r.status != 200 || len(r.body) != 0 || r.hdr.Get("Content-Length") != strconv.Itoa(len(payload)) {
			t.Fatalf("HEAD %s: %d %v", ref, r.status, r.hdr)
		}
	}
	m := e.reg.stored("alice/app", d)
	if m.Repo != "alice/app" || m.MediaType != mediaTypeOCIManifest || m.ArtifactType != "application/vnd.oci.image.config.v1+json" ||
		len(m.Blobs) != 2 || m.Annotations["a"] != "b" || m.Created.IsZero() || m.Created.Location().String() != "UTC" {
		t.Fatalf("stored manifest %+v", m)
	}

	// tag delete keeps the manifest; digest delete removes it
	e.expect(e.do("DELETE", "/v2/alice/app/manifests/1.0", nil), 202, "")
	e.expect(e.do("GET", "/v2/alice/app/manifests/1.0", nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("GET", "/v2/alice/app/manifests/"+d.String(), nil), 200, "")
	e.expect(e.do("DELETE", "/v2/alice/app/manifests/1.0", nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("DELETE", "/v2/alice/app/manifests/"+d.String(), nil), 202, "")
	e.expect(e.do("GET", "/v2/alice/app/manifests/"+d.String(), nil), 404, "MANIFEST_UNKNOWN")
	e.expect(e.do("DELETE", "/v2/alice/app/manifests/"+d.String(), nil), 404, "MANIFEST_UNKNOWN")
}

func TestManifestByDigestTagsSubjectAndTypes(t *testing.T) {
	e := newEnv(t)
	payload := e.image("r", nil)
	d512 := digest.SHA512.FromBytes(payload)

	// by sha512 digest, with tag parameters
	r := e.do("PUT", "/v2/r/manifests/"+d512.String()+"?tag=a&tag=b", payload, "Content-Type", mediaTypeOCIManifest)
	e.expect(r, 201, "")
	if tags := r.hdr.Values("OCI-Tag"); len(tags) != 2 || tags[0] != "a" || tags[1] != "b" {
		t.Fatalf("OCI-Tag %v", tags)
	}
	if r.hdr.Get("Docker-Content-Digest") != d512.String() {
		t.Fatalf("digest header %q", r.hdr.Get("Docker-Content-Digest"))
	}
	for _, ref := range []string{"a", "b", d512.String()} {
		if r := e.do("GET", "/v2/r/manifests/"+ref, nil); r.status != 200 || !bytes.Equal(r.body, payload) {
			t.Fatalf("GET %s: %d", ref, r.status)
		}
	}
	e.expect(e.do("PUT", "/v2/r/manifests/"+d512.String()+"?tag=-x", payload, "Content-Type", mediaTypeOCIManifest), 400, "TAG_INVALID")
	// the bytes must match the digest in the URL
	e.expect(e.do("PUT", "/v2/r/manifests/"+digest.FromBytes(payload).String(), append(payload, ' '), "Content-Type", mediaTypeOCIManifest), 400, "DIGEST_INVALID")

	// a referrer: subject header, artifactType
	subject := digest.SHA512.FromBytes(payload)
	ref := e.image("r", map[string]any{
		"artifactType": "application/vnd.example.sig",
		"subject":      map[string]any{"mediaType": mediaTypeOCIManifest, "digest": subject, "size": len(payload)},
	})
	r = e.putManifest("r", digest.FromBytes(ref).String(), mediaTypeOCIManifest, ref)
	e.expect(r, 201, "")
	if r.hdr.Get("OCI-Subject") != subject.String() {
		t.Fatalf("OCI-Subject %q", r.hdr.Get("OCI-Subject"))
	}
	if m := e.reg.stored("r", digest.FromBytes(ref)); m.Subject != subject || m.ArtifactType != "application/vnd.example.sig" {
		t.Fatalf("stored referrer %+v", m)
	}

	// Docker media types, kept byte for byte with their own Content-Type
	cfg := e.pushBlob("r", []byte(`{"os":"linux"}`))
	layer := e.pushBlob("r", []byte("layer"))
	docker := []byte(fmt.Sprintf(`{
   "schemaVersion": 2,
   "mediaType": %q,
   "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 14, "digest": %q},
   "layers": [
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 5, "digest": %q},
      {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 9, "digest": %q, "urls": ["https://example.com/x"]}
   ]
}`, mediaTypeDockerManifest, cfg, layer, digest.FromString("foreign")))
	e.expect(e.putManifest("r", "docker", mediaTypeDockerManifest, docker), 201, "")
	list := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		mediaTypeDockerList, mediaTypeDockerManifest, len(docker), digest.FromBytes(docker)))
	e.expect(e.putManifest("r", "list", mediaTypeDockerList, list), 201, "")
	for tag, want := range map[string][]byte{"docker": docker, "list": list} {
		r := e.do("GET", "/v2/r/manifests/"+tag, nil)
		if !bytes.Equal(r.body, want) {
			t.Fatalf("%s not byte for byte", tag)
		}
		if ct := r.hdr.Get("Content-Type"); ct != map[string]string{"docker": mediaTypeDockerManifest, "list": mediaTypeDockerList}[tag] {
			t.Fatalf("%s Content-Type %q", tag, ct)
		}
	}
	if m := e.reg.stored("r", digest.FromBytes(list)); len(m.Children) != 1 || m.Children[0].Digest != digest.FromBytes(docker) {
		t.Fatalf("list children %+v", m.Children)
	}
	if m := e.reg.stored("r", digest.FromBytes(docker)); len(m.Blobs) != 2 {
		t.Fatalf("docker blobs %+v (the foreign layer must be left out)", m.Blobs)
	}
	// an OCI image without mediaType takes the Content-Type
	var noMT map[string]any
	if err := json.Unmarshal(e.image("r", nil), &noMT); err != nil {
		t.Fatal(err)
	}
	delete(noMT, "mediaType")
	b, _ := json.Marshal(noMT)
	e.expect(e.putManifest("r", "nomt", mediaTypeOCIManifest, b), 201, "")
	if r := e.do("GET", "/v2/r/manifests/nomt", nil); r.hdr.Get("Content-Type") != mediaTypeOCIManifest {
		t.Fatalf("Content-Type %q", r.hdr.Get("Content-Type"))
	}
}

func TestManifestErrors(t *testing.T) {
	e := newEnv(t)
	good := e.image("r", nil)
	missingLayer := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":%q},"layers":[]}`,
		mediaTypeOCIManifest, digest.FromString("never pushed")))
	missingChild := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":2,"digest":%q}]}`,
		mediaTypeOCIIndex, mediaTypeOCIManifest, digest.FromString("never pushed")))
	cases := []struct {
		name        string
		ref         string
		contentType string
		body        []byte
		status      int
		code        string
	}{
		{"malformed JSON", "t", mediaTypeOCIManifest, []byte(`{"schemaVersion":2,`), 400, "MANIFEST_INVALID"},
		{"not an object", "t", mediaTypeOCIManifest, []byte(`[1,2]`), 400, "MANIFEST_INVALID"},
		{"empty body", "t", mediaTypeOCIManifest, []byte{}, 400, "MANIFEST_INVALID"},
		{"schema 1", "t", "application/vnd.docker.distribution.manifest.v1+json", []byte(`{"schemaVersion":1}`), 400, "MANIFEST_INVALID"},
		{"type mismatch", "t", mediaTypeOCIIndex, good, 400, "MANIFEST_INVALID"},
		{"bad layer digest", "t", mediaTypeOCIManifest, []byte(`{"schemaVersion":2,"config":{"digest":"sha256:x","size":1}}`), 400, "MANIFEST_INVALID"},
		{"unknown blob", "t", mediaTypeOCIManifest, missingLayer, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"unknown child", "t", mediaTypeOCIIndex, missingChild, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"too large", "t", mediaTypeOCIManifest, bytes.Repeat([]byte(" "), hubmesh.MaxManifestSize+1), 413, "SIZE_INVALID"},
		{"bad digest reference", "sha256:baddigeststring", mediaTypeOCIManifest, good, 400, "DIGEST_INVALID"},
		{"bad tag", "a/b", mediaTypeOCIManifest, good, 404, "NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.expect(e.putManifest("r", tc.ref, tc.contentType, tc.body), tc.status, tc.code)
		})
	}
	t.Run("too large, streamed", func(t *testing.T) {
		r := e.do("PUT", "/v2/r/manifests/t", bytes.NewReader(bytes.Repeat([]byte(" "), hubmesh.MaxManifestSize+10)), "Content-Type", mediaTypeOCIManifest)
		e.expect(r, 413, "SIZE_INVALID")
	})
	t.Run("largest accepted", func(t *testing.T) {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		m["annotations"] = map[string]string{"pad": ""}
		b, _ := json.Marshal(m)
		m["annotations"] = map[string]string{"pad": strings.Repeat("x", hubmesh.MaxManifestSize-len(b))}
		b, _ = json.Marshal(m)
		if len(b) != hubmesh.MaxManifestSize {
			t.Fatalf("built %d bytes", len(b))
		}
		e.expect(e.putManifest("r", "big", mediaTypeOCIManifest, b), 201, "")
		if r := e.do("GET", "/v2/r/manifests/big", nil); !bytes.Equal(r.body, b) {
			t.Fatal("4 MiB manifest differs")
		}
	})
}

func TestTagsAndCatalog(t *testing.T) {
	e := newEnv(t)
	payload := e.image("lib/x", nil)
	for _, tag := range []string{"c", "a", "b", "d", "e"} {
		e.expect(e.putManifest("lib/x", tag, mediaTypeOCIManifest, payload), 201, "")
	}
	e.pushBlob("lib/y", []byte("y"))
	type tagList struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	list := func(query string) (tagList, result) {
		r := e.do("GET", "/v2/lib/x/tags/list"+query, nil)
		e.expect(r, 200, "")
		var tl tagList
		if err := json.Unmarshal(r.body, &tl); err != nil {
			t.Fatal(err)
		}
		return tl, r
	}
	cases := []struct {
		query string
		want  string
		link  string
	}{
		{"", "a,b,c,d,e", ""},
		{"?n=2", "a,b", `</v2/lib/x/tags/list?last=b&n=2>; rel="next"`},
		{"?n=2&last=b", "c,d", `</v2/lib/x/tags/list?last=d&n=2>; rel="next"`},
		{"?n=2&last=d", "e", ""},
		{"?last=c", "d,e", ""},
		{"?n=5", "a,b,c,d,e", ""},
		{"?n=0", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			tl, r := list(tc.query)
			if tl.Name != "lib/x" || strings.Join(tl.Tags, ",") != tc.want || r.hdr.Get("Link") != tc.link {
				t.Fatalf("got %+v link %q", tl, r.hdr.Get("Link"))
			}
			if tl.Tags == nil {
				t.Fatal("tags is null, want []")
			}
		})
	}
	e.expect(e.do("GET", "/v2/lib/x/tags/list?n=abc", nil), 400, "PAGINATION_NUMBER_INVALID")
	e.expect(e.do("GET", "/v2/lib/none/tags/list?n=0", nil), 404, "NAME_UNKNOWN")

	r := e.do("GET", "/v2/_catalog?n=1", nil)
	e.expect(r, 200, "")
	if string(r.body) != `{"repositories":["lib/x"]}` || r.hdr.Get("Link") != `</v2/_catalog?last=lib%2Fx&n=1>; rel="next"` {
		t.Fatalf("catalog %s link %q", r.body, r.hdr.Get("Link"))
	}
	r = e.do("GET", "/v2/_catalog?n=1&last=lib/x", nil)
	if string(r.body) != `{"repositories":["lib/y"]}` || r.hdr.Get("Link") != "" {
		t.Fatalf("catalog page 2 %s link %q", r.body, r.hdr.Get("Link"))
	}
}

func TestReferrers(t *testing.T) {
	e := newEnv(t)
	type index struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []hubmesh.Descriptor `json:"manifests"`
	}
	get := func(path string) (index, result) {
		r := e.do("GET", path, nil)
		e.expect(r, 200, "")
		if r.hdr.Get("Content-Type") != mediaTypeOCIIndex {
			t.Fatalf("Content-Type %q", r.hdr.Get("Content-Type"))
		}
		var ix index
		if err := json.Unmarshal(r.body, &ix); err != nil {
			t.Fatal(err)
		}
		if ix.SchemaVersion != 2 || ix.MediaType != mediaTypeOCIIndex || ix.Manifests == nil {
			t.Fatalf("not an image index: %s", r.body)
		}
		return ix, r
	}
	subject := digest.FromString("subject")
	// unknown repository and no referrers: an empty index, not a 404
	if ix, _ := get("/v2/empty/referrers/" + subject.String()); len(ix.Manifests) != 0 {
		t.Fatalf("%+v", ix)
	}
	var digests []digest.Digest
	for _, at := range []string{"application/vnd.example.a", "application/vnd.example.b"} {
		m := e.image("r", map[string]any{
			"artifactType": at,
			"annotations":  map[string]string{"k": at},
			"subject":      map[string]any{"mediaType": mediaTypeOCIManifest, "digest": subject, "size": 10},
		})
		e.expect(e.putManifest("r", digest.FromBytes(m).String(), mediaTypeOCIManifest, m), 201, "")
		digests = append(digests, digest.FromBytes(m))
	}
	ix, r := get("/v2/r/referrers/" + subject.String())
	if len(ix.Manifests) != 2 || r.hdr.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("all referrers: %+v", ix)
	}
	ix, r = get("/v2/r/referrers/" + subject.String() + "?artifactType=application/vnd.example.b")
	if len(ix.Manifests) != 1 || ix.Manifests[0].Digest != digests[1] || ix.Manifests[0].ArtifactType != "application/vnd.example.b" ||
		ix.Manifests[0].Annotations["k"] != "application/vnd.example.b" || ix.Manifests[0].MediaType != mediaTypeOCIManifest {
		t.Fatalf("filtered: %+v", ix)
	}
	if r.hdr.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("OCI-Filters-Applied %q", r.hdr.Get("OCI-Filters-Applied"))
	}
}

func TestStoreErrorsMapToWire(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("apply: %w", hubmesh.ErrNotLeader), 503, "UNAVAILABLE"},
		{fmt.Errorf("quorum: %w", hubmesh.ErrUnavailable), 503, "UNAVAILABLE"},
		{fmt.Errorf("acl: %w", hubmesh.ErrDenied), 403, "DENIED"},
		{errors.New("pebble: disk on fire at /var/lib/secret"), 500, "UNKNOWN"},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			e.reg.setFail(tc.err)
			defer e.reg.setFail(nil)
			r := e.do("GET", "/v2/r/manifests/latest", nil)
			e.expect(r, tc.status, tc.code)
			if tc.status == 503 && r.hdr.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if tc.status >= 500 && strings.Contains(string(r.body), "disk on fire") {
				t.Errorf("5xx leaks its cause: %s", r.body)
			}
		})
	}
	if n := strings.Count(e.logs.String(), "disk on fire"); n != 1 {
		t.Fatalf("500 cause logged %d times, want once:\n%s", n, e.logs.String())
	}
	if r := e.do("GET", "/v2/r/manifests/latest", nil); r.message() == "internal error" {
		t.Fatal("4xx hides its message")
	}
}

// TestPutManifestStoreErrors pins how a store's refusal of a pushed
// manifest reads on the wire.
func TestPutManifestStoreErrors(t *testing.T) {
	e := newEnv(t)
	payload := e.image("r", nil)
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("child: %w", hubmesh.ErrManifestUnknown), 400, "MANIFEST_BLOB_UNKNOWN"},
		{fmt.Errorf("layer: %w", hubmesh.ErrManifestBlobUnknown), 400, "MANIFEST_BLOB_UNKNOWN"},
		{fmt.Errorf("too many tags: %w", hubmesh.ErrInvalid), 400, "MANIFEST_INVALID"},
		{fmt.Errorf("layer: %w", hubmesh.ErrSizeInvalid), 400, "SIZE_INVALID"},
		{fmt.Errorf("repo: %w", hubmesh.ErrRepoUnknown), 404, "NAME_UNKNOWN"},
		{fmt.Errorf("apply: %w", hubmesh.ErrNotLeader), 503, "UNAVAILABLE"},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			e.reg.setFail(tc.err)
			defer e.reg.setFail(nil)
			r := e.putManifest("r", "latest", mediaTypeOCIManifest, payload)
			e.expect(r, tc.status, tc.code)
			if tc.status < 500 && !strings.Contains(r.message(), tc.err.Error()) {
				t.Fatalf("message %q does not carry the store's reason %q", r.message(), tc.err)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	pr := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = pr })
	data := randomBytes(t, 1234)
	d := e.pushBlob("secret/name", data)
	e.do("GET", "/v2/secret/name/blobs/"+d.String(), nil)
	e.do("GET", "/v2/secret/name/manifests/nope", nil)
	mfs, err := pr.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
				if strings.Contains(l.GetValue(), "secret") {
					t.Errorf("metric %s has a repository name in label %s", mf.GetName(), l.GetName())
				}
			}
			key := mf.GetName() + " " + labels["route"] + " " + labels["method"] + " " + labels["code"]
			switch {
			case m.GetCounter() != nil:
				found[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				found[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"hubmesh_registry_requests_total /v2/{name}/blobs/uploads/ POST 201":       1,
		"hubmesh_registry_requests_total /v2/{name}/blobs/{digest} GET 200":        1,
		"hubmesh_registry_requests_total /v2/{name}/manifests/{reference} GET 404": 1,
		"hubmesh_registry_request_bytes_total /v2/{name}/blobs/uploads/  ":         1234,
		"hubmesh_registry_response_bytes_total /v2/{name}/blobs/{digest}  ":        1234,
		"hubmesh_registry_request_duration_seconds /v2/{name}/blobs/{digest} GET ": 1,
	}
	for k, v := range want {
		if found[k] != v {
			t.Errorf("%s = %v, want %v", k, found[k], v)
		}
	}
}

// readerFromRecorder is a ResponseWriter with a ReadFrom, like net/http's.
type readerFromRecorder struct {
	*httptest.ResponseRecorder
	readFrom int
}

func (r *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.readFrom++
	return io.Copy(r.ResponseRecorder, src)
}

func TestResponseWriterKeepsReadFrom(t *testing.T) {
	rec := &readerFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	rw := &responseWriter{ResponseWriter: rec}
	n, err := io.CopyN(rw, strings.NewReader("hello world"), 5)
	if err != nil || n != 5 {
		t.Fatalf("CopyN: %d, %v", n, err)
	}
	if rec.readFrom != 1 || rec.Body.String() != "hello" || rw.written != 5 || rw.status() != 200 {
		t.Fatalf("readFrom calls %d body %q written %d status %d", rec.readFrom, rec.Body.String(), rw.written, rw.status())
	}
	if http.NewResponseController(rw).Flush() != nil {
		t.Fatal("Flush does not reach the wrapped writer")
	}
	// a writer without ReadFrom still works
	plain := httptest.NewRecorder()
	rw = &responseWriter{ResponseWriter: plain}
	if _, err := io.Copy(rw, strings.NewReader("abc")); err != nil || plain.Body.String() != "abc" {
		t.Fatalf("plain copy: %v %q", err, plain.Body.String())
	}
}

func TestToAPIErrorMapsEverySentinel(t *testing.T) {
	cases := []struct {
		err    error
		code   string
		status int
	}{
		{hubmesh.ErrRepoUnknown, "NAME_UNKNOWN", 404},
		{hubmesh.ErrManifestUnknown, "MANIFEST_UNKNOWN", 404},
		{hubmesh.ErrBlobUnknown, "BLOB_UNKNOWN", 404},
		{hubmesh.ErrUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404},
		{hubmesh.ErrManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", 400},
		{hubmesh.ErrDigestMismatch, "DIGEST_INVALID", 400},
		{hubmesh.ErrRangeInvalid, "RANGE_INVALID", 416},
		{hubmesh.ErrSizeInvalid, "SIZE_INVALID", 400},
		{hubmesh.ErrNotLeader, "UNAVAILABLE", 503},
		{hubmesh.ErrUnavailable, "UNAVAILABLE", 503},
		{context.DeadlineExceeded, "UNAVAILABLE", 503},
		{context.Canceled, "UNAVAILABLE", 503},
		{hubmesh.ErrDenied, "DENIED", 403},
		{hubmesh.ErrExists, "DENIED", 409},
		{hubmesh.ErrNotFound, "NOT_FOUND", 404},
		{hubmesh.ErrInvalid, "UNSUPPORTED", 400},
		{&bodyError{io.ErrUnexpectedEOF}, "BLOB_UPLOAD_INVALID", 400},
		{errors.New("boom"), "UNKNOWN", 500},
	}
	for _, tc := range cases {
		t.Run(tc.err.Error(), func(t *testing.T) {
			ae := toAPIError(fmt.Errorf("context: %w", tc.err))
			row := errorTable[ae.code]
			if row.code != tc.code || row.status != tc.status {
				t.Fatalf("got %s %d, want %s %d", row.code, row.status, tc.code, tc.status)
			}
			if !errors.Is(ae, tc.err) {
				t.Fatal("the wire error does not wrap its cause")
			}
		})
	}
	for c := range codeCount {
		if errorTable[c].code == "" || errorTable[c].status == 0 || errorTable[c].message == "" {
			t.Errorf("error table row %d is incomplete", c)
		}
	}
}
