package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// testLogger sends a node's logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startNode runs a node on loopback ports in dataDir until the test ends or
// the returned stop is called; it returns once the addr file is written.
// testAdminPassword is the password of admin on every node these tests
// start; do sends it with each request.
const testAdminPassword = "node-test-admin-pw"

func startNode(t *testing.T, dataDir string, opts ...func(*Config)) (base string, stop func()) {
	t.Helper()
	_, base, stop = runTestNode(t, dataDir, opts...)
	return base, stop
}

// runTestNode is startNode that also returns the node, for tests that
// drive its parts directly.
func runTestNode(t *testing.T, dataDir string, opts ...func(*Config)) (n *Node, base string, stop func()) {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(testAdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.AdminPasswordFile = pwFile
	cfg.DataDir = dataDir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.P2PAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.AddrFile = filepath.Join(t.TempDir(), "addr.json")
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(t.Context())
	n, err := New(ctx, cfg, testLogger(t))
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30s of cancel")
		}
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)

	deadline, dcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer dcancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if a, err := ReadAddrFile(cfg.AddrFile); err == nil {
			return n, "http://" + a.HTTP, stop
		}
		select {
		case err := <-done:
			t.Fatalf("node stopped before serving: %v", err)
		case <-deadline.Done():
			t.Fatal("no addr file within 30s")
		case <-tick.C:
		}
	}
}

func do(t *testing.T, method, url, ctype string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.SetBasicAuth(adminUser, testAdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// pushImage pushes one layer, a config and a manifest to repo:tag and
// returns the manifest bytes and digest.
func pushImage(t *testing.T, base, repo, tag string) ([]byte, digest.Digest, []byte) {
	t.Helper()
	layer := make([]byte, 64<<10)
	if _, err := rand.Read(layer); err != nil {
		t.Fatal(err)
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	for _, blob := range [][]byte{layer, config} {
		d := digest.FromBytes(blob)
		resp, body := do(t, http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/?digest=%s", base, repo, d), "application/octet-stream", blob)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("monolithic upload: %s %s", resp.Status, body)
		}
	}
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`,
		digest.FromBytes(config), len(config), digest.FromBytes(layer), len(layer))
	resp, body := do(t, http.MethodPut, fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, tag), "application/vnd.oci.image.manifest.v1+json", manifest)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("manifest PUT: %s %s", resp.Status, body)
	}
	return manifest, digest.FromBytes(manifest), layer
}

// TestNodeServesAndKeepsStateAcrossRestart runs a real node in process:
// Raft on pebble, the blob store and the API, then stops it and starts it
// again on the same data directory.
func TestNodeServesAndKeepsStateAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	base, stop := startNode(t, dir)

	for _, path := range []string{"/healthz", "/readyz", "/v2/"} {
		if resp, body := do(t, http.MethodGet, base+path, "", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, resp.Status, body)
		}
	}
	manifest, mdgst, layer := pushImage(t, base, "alice/app", "1.0")

	resp, metrics := do(t, http.MethodGet, base+"/metrics", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %s", resp.Status)
	}
	for _, want := range []string{`hubmesh_raft_state{state="Leader"} 1`, "hubmesh_store_bytes", "hubmesh_repositories 1"} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stop()

	base, _ = startNode(t, dir)
	resp, got := do(t, http.MethodGet, base+"/v2/alice/app/manifests/1.0", "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, manifest) {
		t.Fatalf("manifest after restart: %s, %d bytes (want %d)", resp.Status, len(got), len(manifest))
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != mdgst.String() {
		t.Errorf("Docker-Content-Digest = %q, want %s", h, mdgst)
	}
	resp, got = do(t, http.MethodGet, fmt.Sprintf("%s/v2/alice/app/blobs/%s", base, digest.FromBytes(layer)), "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, layer) {
		t.Fatalf("layer after restart: %s, %d bytes", resp.Status, len(got))
	}
	resp, got = do(t, http.MethodGet, base+"/v2/alice/app/tags/list", "", nil)
	var tags struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(got, &tags); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tags list: %s %s", resp.Status, got)
	}
	if tags.Name != "alice/app" || len(tags.Tags) != 1 || tags.Tags[0] != "1.0" {
		t.Errorf("tags = %+v", tags)
	}
}

func TestNewFailsClearly(t *testing.T) {
	t.Run("port in use", func(t *testing.T) {
		base, _ := startNode(t, t.TempDir())
		cfg := Default()
		cfg.DataDir = t.TempDir()
		cfg.HTTPAddr = strings.TrimPrefix(base, "http://")
		cfg.P2PAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		_, err := New(t.Context(), cfg, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("New on a used port = %v", err)
		}
	})
	t.Run("data dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Default()
		cfg.DataDir = file
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.P2PAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		_, err := New(t.Context(), cfg, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "data-dir") {
			t.Fatalf("New with a file as data dir = %v", err)
		}
	})
}
