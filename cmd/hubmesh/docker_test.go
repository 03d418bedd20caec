package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// dockerTimeout bounds one docker CLI command.
const dockerTimeout = 3 * time.Minute

// TestDockerPushPull builds a FROM scratch image with the machine's Docker
// daemon, pushes it to a node, removes it locally, pulls it back and checks
// that the image ID and the registry digest are the ones pushed. Loopback
// registries are insecure by default, so plain HTTP on 127.0.0.1 works.
func TestDockerPushPull(t *testing.T) {
	docker := nodetest.RequireDocker(t)
	p := nodetest.Start(t, nodetest.Options{})
	reg := adminRegistry(p)
	// The docker CLI reads the administrator's credentials from a config
	// of the test's own and hands them to the daemon for push and pull.
	user, password := p.Admin()
	dockerEnv := []string{"DOCKER_CONFIG=" + nodetest.DockerConfig(t, []string{p.Addr()}, user, password)}
	run := func(args ...string) string {
		t.Helper()
		// The classic builder: FROM scratch needs no BuildKit and no base image.
		return strings.TrimSpace(string(command(t, dockerTimeout, append([]string{"DOCKER_BUILDKIT=0"}, dockerEnv...), docker, args...)))
	}

	ctxDir := t.TempDir()
	marker := "hubmesh e2e " + sha256Hex(randomBytes(t, 32)) + "\n"
	files := map[string]string{
		"hello.txt":  marker,
		"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL org.opencontainers.image.title=hubmesh-e2e\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ref := p.Addr() + "/alice/app:1.0"
	run("build", "--quiet", "-t", ref, ctxDir)
	t.Cleanup(func() {
		// The test context is done by now; use a fresh deadline.
		_, _, _ = runCommandCtx(context.Background(), dockerTimeout, "", os.Environ(), docker, "image", "rm", "--force", ref)
	})
	builtID := run("image", "inspect", "--format", "{{.Id}}", ref)

	out := run("push", ref)
	t.Logf("docker push: %s", out)
	var repoDigests []string
	if err := json.Unmarshal([]byte(run("image", "inspect", "--format", "{{json .RepoDigests}}", ref)), &repoDigests); err != nil {
		t.Fatal(err)
	}
	pushed := ""
	for _, rd := range repoDigests {
		if name, d, ok := strings.Cut(rd, "@"); ok && name == p.Addr()+"/alice/app" {
			pushed = d
		}
	}
	if pushed == "" {
		t.Fatalf("no RepoDigest for %s after push: %q", ref, repoDigests)
	}
	hdr := http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"}}
	r, err := reg.do(t.Context(), http.MethodHead, "/v2/alice/app/manifests/1.0", hdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || r.Header.Get("Docker-Content-Digest") != pushed {
		t.Fatalf("HEAD manifest alice/app:1.0: %d Docker-Content-Digest %q, want 200 %s", r.Status, r.Header.Get("Docker-Content-Digest"), pushed)
	}

	run("image", "rm", ref)
	if _, _, err := runCommand(t, dockerTimeout, dockerEnv, docker, "image", "inspect", ref); err == nil {
		t.Fatalf("%s still present after docker image rm", ref)
	}
	run("pull", ref)
	if got := run("image", "inspect", "--format", "{{.Id}}", ref); got != builtID {
		t.Fatalf("pulled image ID %s, want the built %s", got, builtID)
	}
	if got := run("image", "inspect", "--format", "{{json .RepoDigests}}", ref); !strings.Contains(got, pushed) {
		t.Fatalf("pulled RepoDigests %s, want %s", got, pushed)
	}
	// The pulled file system holds the file that was built into it.
	cid := run("create", ref, "/hello.txt")
	t.Cleanup(func() {
		_, _, _ = runCommandCtx(context.Background(), dockerTimeout, "", os.Environ(), docker, "rm", "--force", cid)
	})
	exported := command(t, dockerTimeout, dockerEnv, docker, "export", cid)
	got, err := fileInTar(bytes.NewReader(exported), "hello.txt")
	if err != nil || string(got) != marker {
		t.Fatalf("hello.txt in the pulled image: %q, %v; want %q", got, err, marker)
	}
	t.Logf("docker: pushed, removed and pulled %s (%s, image %s)", ref, pushed, builtID)
}
