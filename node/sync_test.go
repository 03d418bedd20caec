package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestSyncPolicy(t *testing.T) {
	p, err := parseSyncPolicy([]string{"acme/*:v*", "library/*", "solo"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		repo, tag string
		want      bool
	}{
		{"acme/api", "v1", true},
		{"acme/api", "v1.2.3", true},
		{"acme/api", "latest", false},
		{"acme/team/api", "v1", false}, // * does not cross /
		{"library/alpine", "latest", true},
		{"library/alpine", "3.20", true},
		{"solo", "anything", true},
		{"other/x", "v1", false},
	}
	for _, tc := range tests {
		if got := p.match(tc.repo, tc.tag); got != tc.want {
			t.Errorf("match(%q, %q) = %v, want %v", tc.repo, tc.tag, got, tc.want)
		}
	}
	if !p.repo("acme/api") || p.repo("other/x") {
		t.Error("repo() disagrees with the rules")
	}
	for _, bad := range []string{"", "acme/*:", "/acme", "acme/", "acme/[:v1", "acme/*:[v"} {
		if _, err := parseSyncPolicy([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	cfg := Default()
	cfg.Sync = []string{"ok/*", "acme/[x"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a bad sync pattern")
	}
}

// TestMirrorSync joins a mirror with a sync policy to a one-voter
// cluster: it fetches the blobs of matching images as they are pushed
// (and only those), and serves them once the voter is gone.
func TestMirrorSync(t *testing.T) {
	base1, stop1 := startNode(t, t.TempDir())
	tok := joinToken(t, base1, "mirror", "1h")
	mirror, _ := startNode(t, t.TempDir(), func(c *Config) {
		c.Join, c.JoinToken, c.Role = base1, tok, "mirror"
		c.Sync = []string{"team/*:v*"}
	})
	waitFor(t, "the mirror to join", 30*time.Second, func() bool { return len(clusterStatus(t, mirror).Members) == 2 })

	pushImage(t, base1, "team/app", "dev") // tag does not match
	pushImage(t, base1, "other/app", "v1") // repository does not match
	manifest, mdgst, layer := pushImage(t, base1, "team/app", "v1")
	waitFor(t, "the mirror to hold the layer and config of team/app:v1", 30*time.Second, func() bool {
		return storeBlobs(t, mirror) >= 2
	})
	if n := storeBlobs(t, mirror); n != 2 {
		t.Errorf("the mirror holds %d blobs, want 2 (only team/app:v1)", n)
	}

	stop1()
	resp, got := do(t, http.MethodGet, mirror+"/v2/team/app/manifests/v1", "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, manifest) || resp.Header.Get("Docker-Content-Digest") != mdgst.String() {
		t.Fatalf("manifest from the cut-off mirror: %s %s", resp.Status, got)
	}
	resp, got = do(t, http.MethodGet, fmt.Sprintf("%s/v2/team/app/blobs/%s", mirror, digest.FromBytes(layer)), "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, layer) {
		t.Fatalf("layer from the cut-off mirror: %s (%d bytes)", resp.Status, len(got))
	}

	// offline: ready (a mirror), says why, and refuses writes with the reason
	waitFor(t, "the mirror to report itself offline", 30*time.Second, func() bool {
		resp, got := do(t, http.MethodGet, mirror+"/readyz", "", nil)
		var body struct {
			Ready   bool   `json:"ready"`
			Offline bool   `json:"offline"`
			Reason  string `json:"reason"`
		}
		return resp.StatusCode == http.StatusOK && json.Unmarshal(got, &body) == nil &&
			body.Ready && body.Offline && body.Reason == offlineReason
	})
	if st := clusterStatus(t, mirror); !st.Offline || st.OfflineReason != offlineReason {
		t.Errorf("cluster status of the cut-off mirror: offline %v %q", st.Offline, st.OfflineReason)
	}
	waitFor(t, "writes to be refused with the reason", 30*time.Second, func() bool {
		resp, got := do(t, http.MethodPost, mirror+"/v2/team/app/blobs/uploads/", "", nil)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(got), offlineReason) &&
			resp.Header.Get("Retry-After") != ""
	})
	resp, got = do(t, http.MethodPut, mirror+"/v2/team/app/manifests/v2", "application/vnd.oci.image.manifest.v1+json", manifest)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(got), offlineReason) {
		t.Errorf("manifest PUT to the cut-off mirror: %s %s; want 503 naming the reason", resp.Status, got)
	}
}
