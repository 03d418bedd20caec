package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// mirrorService is the mirror node of deploy/docker-compose.mirror.yml.
const mirrorService = "node4"

// mirrorSync is the sync policy the test gives the mirror.
const mirrorSync = "acme/*:v*"

const (
	// mirrorSyncTimeout bounds the wait for the mirror to hold the blobs
	// of a pushed image, or to see a tag pushed elsewhere.
	mirrorSyncTimeout = 30 * time.Second
	// mirrorOfflineTimeout bounds the wait, once the mirror is cut off,
	// for it to say it is offline (a missed heartbeat) and to refuse
	// writes (offlineGrace, 5 s, later).
	mirrorOfflineTimeout = 30 * time.Second
)

// TestComposeMirror runs docker-compose.yml with docker-compose.mirror.yml:
// three voters and node4, a mirror with the sync policy acme/*:v*. An image
// pushed with the docker CLI to node1 is prefetched by the mirror. Cut off
// the mesh network, the mirror stays ready and says it is offline, the
// image still pulls through it with the docker CLI (so every blob was
// local), and a docker push to it fails with the reason. Connected again,
// it catches up: an image pushed to node1 later is prefetched and pulls
// through it.
func TestComposeMirror(t *testing.T) {
	c := newCompose(t, "docker-compose.yml", "docker-compose.mirror.yml")
	if c == nil {
		return
	}
	c.env = append(c.env, "HUBMESH_NODE4_PORT=127.0.0.1:0", "HUBMESH_SYNC="+mirrorSync)
	start := time.Now()
	c.composeRun("up", "--detach", "--no-color")
	c.waitMirrorFormed()
	t.Logf("compose project %s: three voters and a mirror formed one cluster in %s", c.project, time.Since(start).Round(time.Millisecond))

	before := c.mirrorBlobs(t.Context())
	v1 := c.push("node1", "acme/app:v1")
	n1 := c.waitPrefetched(v1, before)

	mesh := c.network("mesh")
	cid := c.container(mirrorService)
	c.dockerRun("network", "disconnect", mesh, cid)
	cut := time.Now()
	t.Logf("cut %s off the mesh network", mirrorService)
	maddr := c.addr(mirrorService)

	// The mirror notices, stays ready, says why, and refuses writes.
	eventually(t, mirrorOfflineTimeout, mirrorService+" says it is offline in /readyz", func(ctx context.Context) error {
		return wantReadyz(ctx, maddr, true)
	})
	eventually(t, mirrorOfflineTimeout, mirrorService+" refuses writes", func(ctx context.Context) error {
		r := request(t, c.admin, http.MethodPost, "http://"+maddr+"/v2/acme/app/blobs/uploads/", "", nil)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "offline") {
			return fmt.Errorf("blob upload: %d %s", r.status, strings.TrimSpace(string(r.body)))
		}
		return nil
	})
	t.Logf("%s offline and refusing writes %s after the cut", mirrorService, time.Since(cut).Round(time.Millisecond))
	r := request(t, c.admin, http.MethodPost, "http://"+maddr+"/v2/acme/app/blobs/uploads/", "", nil)
	wantRefused(t, "blob upload on the offline mirror", r)

	// Everything of v1 is local: it pulls with the docker CLI, identical.
	c.pull(mirrorService, v1)

	// A docker push to the mirror fails. The image is v1 retagged, so its
	// blobs are there and the push reaches the manifest, which is refused.
	// The docker CLI shows no body of a 5xx answer (the distribution
	// client reads error bodies of 4xx only), just the status line, so the
	// node puts the reason there ("503 Offline (no raft leader: ...)");
	// the body is checked on the same request sent directly.
	ref := maddr + "/" + v1.repoTag
	refused := maddr + "/acme/app:v1-cut"
	t.Cleanup(func() {
		for _, r := range []string{ref, refused} {
			_, _ = runCmd(context.Background(), nil, c.docker, "image", "rm", "--force", r)
		}
	})
	auth := c.dockerAuth(maddr)
	c.dockerRunEnv(auth, "pull", ref)
	c.dockerRun("tag", ref, refused)
	out, err := runCmd(t.Context(), append([]string{"DOCKER_BUILDKIT=0"}, auth...), c.docker, "push", refused)
	if err == nil {
		t.Fatalf("docker push to the offline mirror succeeded: %s", out)
	}
	if !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "offline from its cluster") {
		t.Fatalf("docker push to the offline mirror: %v; want 503 with the offline reason", err)
	}
	t.Logf("docker push to the offline mirror: %v", err)
	c.dockerRun("image", "rm", ref, refused)
	manifest, mediaType := getManifest(t, c.admin, maddr, "acme/app", "v1")
	r = request(t, c.admin, http.MethodPut, "http://"+maddr+"/v2/acme/app/manifests/v1-cut", mediaType, manifest)
	wantRefused(t, "manifest PUT on the offline mirror", r)
	if !strings.Contains(string(r.body), "no raft leader: this node is offline from its cluster") {
		t.Fatalf("manifest PUT on the offline mirror: %s; want the reason", trimBody(r.body))
	}

	// Connected again, it catches up and prefetches what is pushed later.
	healed := time.Now()
	c.dockerRun("network", "connect", "--alias", mirrorService, mesh, cid)
	eventually(t, mirrorOfflineTimeout, mirrorService+" online again", func(ctx context.Context) error {
		return wantReadyz(ctx, maddr, false)
	})
	t.Logf("%s online %s after reconnecting", mirrorService, time.Since(healed).Round(time.Millisecond))
	v2 := c.push("node1", "acme/app:v2")
	eventually(t, mirrorSyncTimeout, mirrorService+" sees acme/app:v2", func(ctx context.Context) error {
		r := request(t, c.admin, http.MethodHead, "http://"+maddr+"/v2/acme/app/manifests/v2", "", nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("HEAD acme/app:v2: %d", r.status)
		}
		return nil
	})
	c.waitPrefetched(v2, n1)
	c.pull(mirrorService, v2)
	// The push refused while offline did not happen later.
	if r := request(t, c.admin, http.MethodHead, "http://"+c.addr("node1")+"/v2/acme/app/manifests/v1-cut", "", nil); r.status != http.StatusNotFound {
		t.Fatalf("HEAD acme/app:v1-cut on node1 after reconnecting: %d, want 404", r.status)
	}
}

// waitMirrorFormed waits until node1..3 agree on a leader and list three
// live voters and the mirror as a live nonvoter, and the mirror follows
// the same leader and is ready.
func (c *composeCluster) waitMirrorFormed() {
	c.t.Helper()
	eventually(c.t, composeFormTimeout, "three live voters and a live mirror", func(ctx context.Context) error {
		leader := ""
		for _, s := range append(composeServices[:len(composeServices):len(composeServices)], mirrorService) {
			addr, err := c.addrTry(ctx, s)
			if err != nil {
				return err
			}
			st, err := status(ctx, addr)
			if err != nil {
				return err
			}
			if err := votersAndMirror(st); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s sees leader %s, others %s", s, st.Leader, leader)
			}
			leader = st.Leader
			if s == mirrorService {
				if err := wantReadyz(ctx, addr, false); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// votersAndMirror checks a status for a leader, three live voters and
// the mirror (node4) as a live nonvoter.
func votersAndMirror(st nodetest.Status) error {
	if !st.Healthy || st.Leader == "" {
		return fmt.Errorf("no leader (raft %s)", st.Raft.State)
	}
	if len(st.Members) != 4 {
		return fmt.Errorf("%d members, want 4", len(st.Members))
	}
	for _, m := range st.Members {
		host, _, _ := net.SplitHostPort(m.HTTP)
		want := "voter"
		if host == mirrorService {
			want = "nonvoter"
		}
		if m.Role != want || m.State != "alive" {
			return fmt.Errorf("member %s (%s) is %s %s, want %s alive", m.ID, m.HTTP, m.Role, m.State, want)
		}
	}
	return nil
}

// wantReadyz checks the mirror's /readyz: 200 (a mirror stays ready when
// cut off) and offline, with the reason, or not.
func wantReadyz(ctx context.Context, addr string, offline bool) error {
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body struct {
		Ready   bool   `json:"ready"`
		Offline bool   `json:"offline"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return fmt.Errorf("/readyz: %d %q: %w", resp.StatusCode, b, err)
	}
	if resp.StatusCode != http.StatusOK || !body.Ready || body.Offline != offline {
		return fmt.Errorf("/readyz: %d %s; want 200, ready, offline %v", resp.StatusCode, trimBody(b), offline)
	}
	if offline && !strings.Contains(body.Reason, "offline") {
		return fmt.Errorf("/readyz: %s; want the reason", trimBody(b))
	}
	return nil
}

// trimBody trims a response body for a message.
func trimBody(b []byte) string { return strings.TrimSpace(string(b)) }

// mirrorBlobs returns how many blobs the mirror holds in its own store.
func (c *composeCluster) mirrorBlobs(ctx context.Context) int64 {
	c.t.Helper()
	st, err := status(ctx, c.addr(mirrorService))
	if err != nil {
		c.t.Fatal(err)
	}
	return st.Blobs.Count
}

// waitPrefetched waits until the mirror's store holds at least the blobs
// of img (config and layers, read from node1) more than it held before,
// and returns the count then.
func (c *composeCluster) waitPrefetched(img testImage, before int64) int64 {
	c.t.Helper()
	repo, tag, _ := strings.Cut(img.repoTag, ":")
	raw, _ := getManifest(c.t, c.admin, c.addr("node1"), repo, tag)
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.Config.Digest == "" {
		c.t.Fatalf("manifest of %s: %v: %s", img.repoTag, err, raw)
	}
	want := before + 1 + int64(len(m.Layers))
	start := time.Now()
	var n int64
	eventually(c.t, mirrorSyncTimeout, fmt.Sprintf("%s prefetches %s (%d blobs)", mirrorService, img.repoTag, want), func(ctx context.Context) error {
		addr, err := c.addrTry(ctx, mirrorService)
		if err != nil {
			return err
		}
		st, err := status(ctx, addr)
		if err != nil {
			return err
		}
		if n = st.Blobs.Count; n < want {
			return fmt.Errorf("%d blobs", n)
		}
		return nil
	})
	c.t.Logf("%s prefetched %s (%d blobs in its store) within %s", mirrorService, img.repoTag, n, time.Since(start).Round(time.Millisecond))
	return n
}

// network returns the ID of the project's network name.
func (c *composeCluster) network(name string) string {
	c.t.Helper()
	id := c.dockerRun("network", "ls", "--quiet",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.network="+name)
	if id == "" || strings.Contains(id, "\n") {
		c.t.Fatalf("the %s network of project %s: %q", name, c.project, id)
	}
	return id
}
