// Package deploy holds the deployment files of hubmesh (the FROM scratch
// Dockerfile; compose files and manifests as they come) and the tests that
// run them against the machine's Docker daemon.
package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

func TestMain(m *testing.M) { nodetest.Main(m) }

// dockerRun runs one docker CLI command with a deadline and returns its
// trimmed stdout; it fails the test with stderr on error.
func dockerRun(t *testing.T, docker string, args ...string) string {
	t.Helper()
	out, err := dockerTry(t.Context(), docker, args...)
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func dockerTry(ctx context.Context, docker string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, docker, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// TestImage builds the FROM scratch image from deploy/Dockerfile, runs it,
// waits for its HEALTHCHECK (which runs `hubmesh healthcheck` inside an
// image with no shell) to report healthy, pushes and pulls through the
// published port, and checks that `docker stop` ends the node cleanly.
func TestImage(t *testing.T) {
	docker := nodetest.RequireDocker(t)
	if docker == "" {
		return
	}
	bin := nodetest.Binary(t)

	buildDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(buildDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bin, filepath.Join(buildDir, "bin", "hubmesh"), 0o755)
	copyFile(t, "Dockerfile", filepath.Join(buildDir, "Dockerfile"), 0o644)

	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	tag := "hubmesh-image-test:" + hex.EncodeToString(suffix)
	dockerRun(t, docker, "build", "--quiet", "-t", tag, buildDir)
	t.Cleanup(func() { _, _ = dockerTry(context.Background(), docker, "image", "rm", "--force", tag) })

	// The administrator's password comes from a file mounted into the
	// container, as a secret would be.
	admin := credentials{user: "admin", password: randomHex(16)}
	pwFile := writePasswordFile(t, admin.password)
	cid := dockerRun(t, docker, "run", "--detach", "--health-interval", "1s", "--publish", "127.0.0.1::5000",
		"--volume", pwFile+":"+containerPasswordFile+":ro", "--env", "HUBMESH_ADMIN_PASSWORD_FILE="+containerPasswordFile, tag)
	t.Cleanup(func() { _, _ = dockerTry(context.Background(), docker, "rm", "--force", "--volumes", cid) })

	hostPort := dockerRun(t, docker, "port", cid, "5000/tcp")
	base := "http://" + strings.Split(hostPort, "\n")[0]

	deadline := time.Now().Add(60 * time.Second)
	for {
		state := dockerRun(t, docker, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", cid)
		if state == "running healthy" {
			break
		}
		if !strings.HasPrefix(state, "running") || time.Now().After(deadline) {
			logs, _ := dockerTry(context.Background(), docker, "logs", cid)
			t.Fatalf("container state %q (want running healthy); logs:\n%s", state, logs)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(200 * time.Millisecond):
		}
	}

	// Healthy means the process answers; ready means it has a leader and
	// its first administrator exists. Wait for that before logging in.
	for {
		r := request(t, credentials{}, http.MethodGet, base+"/readyz", "", nil)
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %s; not ready within 60s", r.status, r.body)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Anonymous writes are refused; the administrator's go through.
	if r := request(t, credentials{}, http.MethodPost, base+"/v2/alice/app/blobs/uploads/", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous upload: %d %s, want 401", r.status, r.body)
	}
	// A blob and a manifest through the published port, read back.
	blob := []byte("hello from a FROM scratch hubmesh")
	bd := digest.FromBytes(blob)
	httpDo(t, admin, http.MethodPost, fmt.Sprintf("%s/v2/alice/app/blobs/uploads/?digest=%s", base, bd), "application/octet-stream", blob, http.StatusCreated)
	cfg := []byte(`{}`)
	cd := digest.FromBytes(cfg)
	httpDo(t, admin, http.MethodPost, fmt.Sprintf("%s/v2/alice/app/blobs/uploads/?digest=%s", base, cd), "application/octet-stream", cfg, http.StatusCreated)
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`, cd, len(cfg), bd, len(blob))
	httpDo(t, admin, http.MethodPut, base+"/v2/alice/app/manifests/1.0", "application/vnd.oci.image.manifest.v1+json", manifest, http.StatusCreated)
	if got := httpDo(t, admin, http.MethodGet, base+"/v2/alice/app/manifests/1.0", "", nil, http.StatusOK); !bytes.Equal(got, manifest) {
		t.Fatalf("manifest read back differs: %s", got)
	}
	// alice/app is public: anyone may pull it.
	if got := httpDo(t, credentials{}, http.MethodGet, fmt.Sprintf("%s/v2/alice/app/blobs/%s", base, bd), "", nil, http.StatusOK); !bytes.Equal(got, blob) {
		t.Fatalf("blob read back differs: %q", got)
	}

	dockerRun(t, docker, "stop", "--time", "20", cid)
	if code := dockerRun(t, docker, "inspect", "--format", "{{.State.ExitCode}}", cid); code != "0" {
		logs, _ := dockerTry(context.Background(), docker, "logs", cid)
		t.Fatalf("exit code after docker stop = %s, want 0; logs:\n%s", code, logs)
	}
}

// httpDo sends one request (see request) and fails the test unless it
// answers want; it returns the body.
func httpDo(t *testing.T, cred credentials, method, url, ctype string, body []byte, want int) []byte {
	t.Helper()
	r := request(t, cred, method, url, ctype, body)
	if r.status != want {
		t.Fatalf("%s %s: %d %s (want %d)", method, url, r.status, r.body, want)
	}
	return r.body
}

// containerPasswordFile is where the containers of the tests (and of
// docker-compose.yml) find the administrator's password.
const containerPasswordFile = "/run/secrets/hubmesh-admin-password"

// writePasswordFile writes password to a file of the test's (mode 0600)
// and returns its path, for a bind mount.
func writePasswordFile(t *testing.T, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
