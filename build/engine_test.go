package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/node/nodetest"
)

// realEngine returns a client of this machine's Docker daemon, or skips
// loudly (fails under CI) when there is none.
func realEngine(t *testing.T) *Engine {
	t.Helper()
	nodetest.RequireDocker(t)
	e, err := NewEngine(EngineHostFromEnv())
	if err != nil {
		nodetest.Missing(t, "DOCKER_HOST %q: %v", EngineHostFromEnv(), err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.Ping(t.Context()); err != nil {
		nodetest.Missing(t, "Docker Engine API at %s: %v", EngineHostFromEnv(), err)
	}
	return e
}

func randomName(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "hubmesh-buildtest-" + hex.EncodeToString(b)
}

// busyboxImage builds a local base image with a static busybox as
// /bin/sh, for RUN steps without pulling from the internet, and returns
// its reference.
func busyboxImage(t *testing.T, e *Engine) string {
	t.Helper()
	bin := "/bin/busybox"
	if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() {
		if bin, err = exec.LookPath("busybox"); err != nil {
			nodetest.Missing(t, "busybox: no /bin/busybox and none on PATH (make tools installs busybox-static)")
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\n"})
	if err := os.WriteFile(filepath.Join(dir, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	ref := randomName(t) + ":base"
	buildImage(t, e, dir, BuildOptions{Tags: []string{ref}, Builder: BuilderClassic})
	return ref
}

// buildImage builds dir and removes the image when the test ends.
func buildImage(t *testing.T, e *Engine, dir string, opts BuildOptions) string {
	t.Helper()
	tarball, err := TarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer tarball.Close()
	var log bytes.Buffer
	id, err := e.Build(t.Context(), tarball, opts, &log)
	if err != nil {
		t.Fatalf("Build: %v\n%s", err, log.String())
	}
	removeAtCleanup(t, e, append(opts.Tags, id)...)
	return id
}

func removeAtCleanup(t *testing.T, e *Engine, refs ...string) {
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, ref := range refs {
			if err := e.RemoveImage(ctx, ref); err != nil && !errors.Is(err, hubmesh.ErrNotFound) {
				t.Errorf("remove %s: %v", ref, err)
			}
		}
	})
}

// imageConfig is the part of GET /images/{id}/json the tests check.
type imageConfig struct {
	Config struct {
		Labels map[string]string
	}
}

func inspectImage(t *testing.T, e *Engine, id string) imageConfig {
	t.Helper()
	resp, err := e.do(t.Context(), http.MethodGet, "/images/"+id+"/json", nil, nil, nil)
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	defer resp.Body.Close()
	var v imageConfig
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return v
}

func TestEngineBuild(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	base := busyboxImage(t, e)
	tests := []struct {
		name       string
		files      map[string]string // "{base}" in a Dockerfile is the busybox image
		dockerfile string
		wantLog    map[string][]string // by builder: substrings of the log
		wantErr    string              // substring of a *BuildError message; "" means success
	}{
		{name: "copy from context", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nARG GREETING\nLABEL greeting=$GREETING\nCOPY hello.txt /hello.txt\n", "hello.txt": "hello\n"},
			wantLog: map[string][]string{BuilderBuildKit: {"] COPY hello.txt /hello.txt\n#3 DONE "}, BuilderClassic: {"Step 4/5 : COPY"}}},
		{name: "dockerfile in a subdirectory", dockerfile: "docker/Dockerfile.prod", files: map[string]string{
			"docker/Dockerfile.prod": "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "hello\n"}},
		{name: "run", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM {base}\nARG GREETING\nRUN echo out-$GREETING; echo err >&2; printf unterminated\n"},
			wantLog: map[string][]string{
				BuilderBuildKit: {"] RUN echo out-hi; echo err", "\n#5 out-hi\n", "\n#5 err\n", "\n#5 unterminated\n", "\n#5 DONE "},
				BuilderClassic:  {"out-hi\n"}}},
		{name: "failing run", dockerfile: "Dockerfile", files: map[string]string{
			// BuildKit: "exit code: 7", classic: "returned a non-zero code: 7".
			"Dockerfile": "FROM {base}\nRUN exit 7\n"}, wantErr: "code: 7",
			wantLog: map[string][]string{BuilderBuildKit: {"] RUN exit 7\n#5 ERROR: "}}},
		{name: "failing step", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nCOPY missing.txt /missing.txt\n"}, wantErr: "missing.txt"},
		{name: "unknown instruction", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nFROBNICATE x\n"}, wantErr: "frobnicate"},
	}
	for _, builder := range []string{BuilderBuildKit, BuilderClassic} {
		for _, tc := range tests {
			t.Run(builder+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				files := maps.Clone(tc.files)
				files[tc.dockerfile] = strings.ReplaceAll(files[tc.dockerfile], "{base}", base)
				writeFiles(t, dir, files)
				tarball, err := TarContext(dir, tc.dockerfile)
				if err != nil {
					t.Fatal(err)
				}
				defer tarball.Close()
				ref := randomName(t) + ":t1"
				var log bytes.Buffer
				id, err := e.Build(t.Context(), tarball, BuildOptions{
					Tags: []string{ref}, Dockerfile: tc.dockerfile, NoCache: true, Builder: builder,
					BuildArgs: map[string]string{"GREETING": "hi"}, Labels: map[string]string{"org.hubmesh.test": "1"},
				}, &log)
				t.Logf("build log:\n%s", log.String())
				for _, want := range tc.wantLog[builder] {
					if !strings.Contains(log.String(), want) {
						t.Errorf("log does not contain %q", want)
					}
				}
				if tc.wantErr != "" {
					var be *BuildError
					if !errors.As(err, &be) || !errors.Is(err, hubmesh.ErrInvalid) ||
						!strings.Contains(strings.ToLower(be.Message), tc.wantErr) {
						t.Fatalf("Build = %q, %v; want a BuildError mentioning %q", id, err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				removeAtCleanup(t, e, ref)
				if !strings.HasPrefix(id, "sha256:") || !strings.Contains(log.String(), "COPY") && !strings.Contains(log.String(), "RUN") {
					t.Fatalf("Build = %q, log %q", id, log.String())
				}
				if builder == BuilderBuildKit && !strings.Contains(log.String(), "#1 ") {
					t.Fatalf("no BuildKit progress in the log")
				}
				labels := inspectImage(t, e, ref).Config.Labels
				if labels["org.hubmesh.test"] != "1" || tc.name == "copy from context" && labels["greeting"] != "hi" {
					t.Fatalf("image labels %v: want the build's labels and the build arg's", labels)
				}
			})
		}
	}
}

// TestEngineBuildRegistryBase builds FROM a base image on a plain-HTTP
// registry at 127.0.0.1 (insecure by default for the daemon), as builders
// do from the mesh.
func TestEngineBuildRegistryBase(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	reg := newFakeRegistry(t, map[string]string{"hello.txt": "hello from the base\n"})
	for _, builder := range []string{BuilderBuildKit, BuilderClassic} {
		t.Run(builder, func(t *testing.T) {
			t.Parallel()
			base := reg.host + "/acme/" + randomName(t) + ":1"
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"Dockerfile": "FROM " + base + "\nCOPY x.txt /x.txt\n", "x.txt": "x\n"})
			removeAtCleanup(t, e, base) // the classic builder keeps the base image
			ref := randomName(t) + ":t1"
			buildImage(t, e, dir, BuildOptions{Tags: []string{ref}, Builder: builder, NoCache: true})
			if !reg.pulled(strings.TrimPrefix(base, reg.host+"/")) {
				t.Fatalf("the registry served no manifest of %s", base)
			}
		})
	}
}

// fakeRegistry serves one single-layer image under any name and tag,
// read-only and anonymous.
type fakeRegistry struct {
	host     string
	manifest []byte
	blobs    map[string][]byte
	mu       sync.Mutex
	served   map[string]bool // "name:tag" whose manifest was fetched
}

func newFakeRegistry(t *testing.T, files map[string]string) *fakeRegistry {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(layer.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	digest := func(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer.Bytes())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": map[string]any{"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config), "digest": digest(config)},
		"layers": []map[string]any{{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": gz.Len(), "digest": digest(gz.Bytes())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRegistry{manifest: manifest, served: map[string]bool{},
		blobs: map[string][]byte{digest(config): config, digest(gz.Bytes()): gz.Bytes()}}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	p := req.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	case strings.Contains(p, "/manifests/"):
		name, ref, _ := strings.Cut(strings.TrimPrefix(p, "/v2/"), "/manifests/")
		r.mu.Lock()
		r.served[name+":"+ref] = true
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
		w.Header().Set("Docker-Content-Digest", fmt.Sprintf("sha256:%x", sha256.Sum256(r.manifest)))
		w.Header().Set("Content-Length", strconv.Itoa(len(r.manifest)))
		if req.Method != http.MethodHead {
			_, _ = w.Write(r.manifest)
		}
	case strings.Contains(p, "/blobs/"):
		b, ok := r.blobs[p[strings.LastIndex(p, "/")+1:]]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if req.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	default:
		http.NotFound(w, req)
	}
}

// pulled reports whether the manifest of name:tag, or of name by digest,
// was fetched.
func (r *fakeRegistry) pulled(ref string) bool {
	name, _, _ := strings.Cut(ref, ":")
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.served {
		if k == ref || strings.HasPrefix(k, name+":") {
			return true
		}
	}
	return false
}

func TestEngineBuildMissingDockerfile(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	for _, builder := range []string{BuilderBuildKit, BuilderClassic} {
		t.Run(builder, func(t *testing.T) {
			t.Parallel()
			// TarContext refuses first; a daemon given no Dockerfile says so too.
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"Dockerfile": "FROM scratch\n"})
			tarball, err := TarContext(dir, "Dockerfile")
			if err != nil {
				t.Fatal(err)
			}
			defer tarball.Close()
			_, err = e.Build(t.Context(), tarball, BuildOptions{Dockerfile: "Nope", Builder: builder}, nil)
			var be *BuildError
			t.Logf("daemon: %v", err)
			if !errors.As(err, &be) || !strings.Contains(be.Message, "Nope") {
				t.Fatalf("Build without the Dockerfile = %v; want a BuildError naming it", err)
			}
		})
	}
}

// ustarContext is a small build context tar without PAX headers, which
// Build sends as is.
func ustarContext(t *testing.T, pad int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, content := range map[string]string{"Dockerfile": "FROM scratch\nCOPY pad /pad\n", "pad": strings.Repeat("p", pad)} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestEngineBuildFallback runs Build against a fake daemon that refuses
// BuildKit, to check the choice of builder and the fallback.
func TestEngineBuildFallback(t *testing.T) {
	t.Parallel()
	const (
		classicStream  = `{"stream":"Step 1/2 : FROM scratch\n"}` + "\n" + `{"aux":{"ID":"sha256:c1"}}` + "\n" + `{"stream":"Successfully built c1\n"}` + "\n"
		buildKitStream = `{"id":"moby.image.id","aux":{"ID":"sha256:b2"}}` + "\n"
	)
	type request struct {
		query url.Values
		auth  string
		body  []byte
	}
	tests := []struct {
		name    string
		refusal string // the answer to version=2, "" to accept it
		status  int
		readAll bool // the daemon reads the whole body before answering version=2
		pad     int  // bytes of context beyond the Dockerfile
		opts    BuildOptions
		// per Build of two in a row: the versions requested, and the error
		want    [2][]string
		wantErr [2]error
	}{
		{name: "buildkit accepted", want: [2][]string{{"2"}, {"2"}}},
		{name: "buildkit refused", refusal: "buildkit is not enabled on daemon", status: 400, pad: 100 << 10,
			want: [2][]string{{"2", "1"}, {"1"}}},
		{name: "old daemon", refusal: "invalid version 2", status: 500,
			want: [2][]string{{"2", "1"}, {"1"}}},
		{name: "refused after the whole context", refusal: "buildkit is not enabled on daemon", status: 400, readAll: true, pad: replayLimit,
			want: [2][]string{{"2"}, {"1"}}, wantErr: [2]error{hubmesh.ErrUnavailable, nil}},
		{name: "buildkit required", refusal: "buildkit is not enabled on daemon", status: 400, opts: BuildOptions{Builder: BuilderBuildKit},
			want: [2][]string{{"2"}, {"2"}}, wantErr: [2]error{hubmesh.ErrUnavailable, hubmesh.ErrUnavailable}},
		{name: "other daemon error", refusal: "no space left on device", status: 500,
			want: [2][]string{{"2"}, {"2"}}, wantErr: [2]error{hubmesh.ErrInvalid, hubmesh.ErrInvalid}},
		{name: "classic", opts: BuildOptions{Builder: BuilderClassic}, want: [2][]string{{"1"}, {"1"}}},
		{name: "registry auths go classic", opts: BuildOptions{RegistryAuths: map[string]RegistryAuth{"reg:5000": {RegistryToken: "tok"}}},
			want: [2][]string{{"1"}, {"1"}}},
		{name: "registry auths with buildkit", opts: BuildOptions{Builder: BuilderBuildKit, RegistryAuths: map[string]RegistryAuth{"reg:5000": {}}},
			wantErr: [2]error{hubmesh.ErrInvalid, hubmesh.ErrInvalid}},
		{name: "unknown builder", opts: BuildOptions{Builder: "kaniko"}, wantErr: [2]error{hubmesh.ErrInvalid, hubmesh.ErrInvalid}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu   sync.Mutex
				reqs []request
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body := io.Reader(r.Body)
				bk := r.URL.Query().Get("version") == "2"
				if bk && tc.refusal != "" && !tc.readAll {
					body = io.LimitReader(body, 1000) // the daemon refuses before reading the context
				}
				b, _ := io.ReadAll(body)
				mu.Lock()
				reqs = append(reqs, request{query: r.URL.Query(), auth: r.Header.Get("X-Registry-Config"), body: b})
				mu.Unlock()
				switch {
				case bk && tc.refusal != "":
					w.WriteHeader(tc.status)
					_ = json.NewEncoder(w).Encode(map[string]string{"message": tc.refusal})
				case bk:
					_, _ = io.WriteString(w, buildKitStream)
				default:
					_, _ = io.WriteString(w, classicStream)
				}
			}))
			t.Cleanup(srv.Close)
			e, err := NewEngine("tcp://" + strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Close() })
			tarball := ustarContext(t, tc.pad)
			opts := tc.opts
			opts.Tags, opts.Dockerfile, opts.NoCache = []string{"reg:5000/acme/api:t1"}, "Dockerfile", true
			opts.BuildArgs, opts.Labels = map[string]string{"A": "1"}, map[string]string{"l": "v"}
			for i := range 2 {
				mu.Lock()
				reqs = nil
				mu.Unlock()
				var log bytes.Buffer
				id, err := e.Build(t.Context(), bytes.NewReader(tarball), opts, &log)
				mu.Lock()
				var versions []string
				for _, r := range reqs {
					versions = append(versions, r.query.Get("version"))
					if r.query.Get("t") != "reg:5000/acme/api:t1" || r.query.Get("dockerfile") != "Dockerfile" || r.query.Get("nocache") != "1" ||
						r.query.Get("buildargs") != `{"A":"1"}` || r.query.Get("labels") != `{"l":"v"}` {
						t.Errorf("build %d: query %v", i, r.query)
					}
					if (r.auth != "") != (len(opts.RegistryAuths) > 0) {
						t.Errorf("build %d: X-Registry-Config %q", i, r.auth)
					}
				}
				if last := len(reqs) - 1; err == nil && !bytes.Equal(reqs[last].body, tarball) {
					t.Errorf("build %d: the daemon got %d bytes of context, want the %d sent", i, len(reqs[last].body), len(tarball))
				}
				mu.Unlock()
				if !slices.Equal(versions, tc.want[i]) {
					t.Errorf("build %d: versions requested %q, want %q", i, versions, tc.want[i])
				}
				if tc.wantErr[i] != nil {
					if !errors.Is(err, tc.wantErr[i]) {
						t.Errorf("build %d = %q, %v; want %v", i, id, err, tc.wantErr[i])
					}
					continue
				}
				wantID := "sha256:c1"
				if versions[len(versions)-1] == "2" {
					wantID = "sha256:b2"
				}
				if err != nil || id != wantID {
					t.Errorf("build %d = %q, %v; want %s", i, id, err, wantID)
				}
				if len(versions) == 2 && !strings.Contains(log.String(), "refused BuildKit ("+tc.refusal+")") {
					t.Errorf("build %d: log %q does not say why BuildKit was not used", i, log.String())
				}
			}
		})
	}
}

func TestEngineRemoveMissing(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	if err := e.RemoveImage(t.Context(), randomName(t)+":none"); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("RemoveImage of a missing image: %v, want ErrNotFound", err)
	}
}

// fakeDaemon answers /images/{name}/push with a canned JSON stream and
// records the request, so Push is tested without a registry.
func fakeDaemon(t *testing.T, stream string, status int) (*Engine, *http.Request) {
	t.Helper()
	var got http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = *r.Clone(r.Context())
		w.WriteHeader(status)
		_, _ = io.WriteString(w, stream)
	}))
	t.Cleanup(srv.Close)
	e, err := NewEngine("tcp://" + strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, &got
}

func TestEnginePush(t *testing.T) {
	t.Parallel()
	const digest = "sha256:" + "ab" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
	ok := `{"status":"The push refers to repository [reg:5000/acme/api]"}
{"status":"Preparing","progressDetail":{},"id":"1a2b"}
{"status":"Pushing","progressDetail":{"current":512,"total":1024},"progress":"[=>  ]","id":"1a2b"}
{"status":"Pushed","progressDetail":{},"id":"1a2b"}
{"status":"t1: digest: ` + digest + ` size: 527"}
{"progressDetail":{},"aux":{"Tag":"t1","Digest":"` + digest + `","Size":527}}
`
	tests := []struct {
		name    string
		stream  string
		status  int
		wantErr error
		errText string
	}{
		{name: "ok", stream: ok, status: 200},
		{name: "denied", stream: `{"status":"Preparing"}` + "\n" + `{"errorDetail":{"message":"unauthorized: authentication required"},"error":"unauthorized: authentication required"}`,
			status: 200, wantErr: hubmesh.ErrDenied, errText: "unauthorized"},
		{name: "registry down", stream: `{"errorDetail":{"message":"dial tcp: connection refused"},"error":"dial tcp: connection refused"}`,
			status: 200, wantErr: hubmesh.ErrUnavailable, errText: "connection refused"},
		{name: "no such image", stream: `{"message":"An image does not exist locally with the tag: reg:5000/acme/api"}`,
			status: 404, wantErr: hubmesh.ErrNotFound, errText: "does not exist locally"},
		{name: "truncated stream", stream: `{"status":"Preparing"}`, status: 200, wantErr: hubmesh.ErrUnavailable, errText: "no digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, req := fakeDaemon(t, tc.stream, tc.status)
			var log bytes.Buffer
			auth := RegistryAuth{Username: "builder", Password: "tok", ServerAddress: "reg:5000"}
			got, err := e.Push(t.Context(), "reg:5000/acme/api:t1", auth, &log)
			if req.URL.Path != "/images/reg:5000/acme/api/push" || req.URL.Query().Get("tag") != "t1" {
				t.Fatalf("request %s %s", req.Method, req.URL)
			}
			raw, err2 := base64.URLEncoding.DecodeString(req.Header.Get("X-Registry-Auth"))
			var sent RegistryAuth
			if err2 != nil || json.Unmarshal(raw, &sent) != nil || sent != auth {
				t.Fatalf("X-Registry-Auth %q decodes to %+v (%v)", req.Header.Get("X-Registry-Auth"), sent, err2)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Push = %q, %v; want %v containing %q", got, err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil || got != digest {
				t.Fatalf("Push = %q, %v; want %s", got, err, digest)
			}
			if want := "1a2b: Pushed\n"; !strings.Contains(log.String(), want) || strings.Contains(log.String(), "[=>") {
				t.Fatalf("log %q: want status lines without progress bars", log.String())
			}
		})
	}
}

func TestEngineBadInput(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"ftp://x", "unix://", "tcp://", "::"} {
		if _, err := NewEngine(host); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("NewEngine(%q) = %v, want ErrInvalid", host, err)
		}
	}
	e, err := NewEngine("unix:///nonexistent/docker.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Ping(t.Context()); !errors.Is(err, hubmesh.ErrUnavailable) {
		t.Errorf("Ping of a missing socket = %v, want ErrUnavailable", err)
	}
	for _, ref := range []string{"reg/acme/api", "reg:5000/acme/api", "a b:t"} {
		if _, err := e.Push(t.Context(), ref, RegistryAuth{}, nil); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("Push(%q) = %v, want ErrInvalid", ref, err)
		}
	}
}
