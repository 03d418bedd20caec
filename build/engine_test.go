package build

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

func TestEngineBuild(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	tests := []struct {
		name       string
		files      map[string]string
		dockerfile string
		wantErr    string // substring of a *BuildError message; "" means success
	}{
		{name: "copy from context", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nARG GREETING\nLABEL greeting=$GREETING\nCOPY hello.txt /hello.txt\n", "hello.txt": "hello\n"}},
		{name: "dockerfile in a subdirectory", dockerfile: "docker/Dockerfile.prod", files: map[string]string{
			"docker/Dockerfile.prod": "FROM scratch\nCOPY hello.txt /\n", "hello.txt": "hello\n"}},
		{name: "failing step", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nCOPY missing.txt /missing.txt\n"}, wantErr: "missing.txt"},
		{name: "unknown instruction", dockerfile: "Dockerfile", files: map[string]string{
			"Dockerfile": "FROM scratch\nFROBNICATE x\n"}, wantErr: "frobnicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			tarball, err := TarContext(dir, tc.dockerfile)
			if err != nil {
				t.Fatal(err)
			}
			defer tarball.Close()
			ref := randomName(t) + ":t1"
			var log bytes.Buffer
			id, err := e.Build(t.Context(), tarball, BuildOptions{
				Tags: []string{ref}, Dockerfile: tc.dockerfile, NoCache: true,
				BuildArgs: map[string]string{"GREETING": "hi"}, Labels: map[string]string{"org.hubmesh.test": "1"},
			}, &log)
			t.Logf("build log:\n%s", log.String())
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
			t.Cleanup(func() {
				// t.Context is already cancelled when cleanups run.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := e.RemoveImage(ctx, ref); err != nil {
					t.Errorf("remove %s: %v", ref, err)
				}
			})
			if !strings.HasPrefix(id, "sha256:") || !strings.Contains(log.String(), "COPY") {
				t.Fatalf("Build = %q, log %q", id, log.String())
			}
		})
	}
}

func TestEngineBuildMissingDockerfile(t *testing.T) {
	t.Parallel()
	e := realEngine(t)
	// TarContext refuses first; a daemon given no Dockerfile says so too.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM scratch\n"})
	tarball, err := TarContext(dir, "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer tarball.Close()
	_, err = e.Build(t.Context(), tarball, BuildOptions{Dockerfile: "Nope"}, nil)
	var be *BuildError
	t.Logf("daemon: %v", err)
	if !errors.As(err, &be) || !strings.Contains(be.Message, "Nope") {
		t.Fatalf("Build without the Dockerfile = %v; want a BuildError naming it", err)
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
