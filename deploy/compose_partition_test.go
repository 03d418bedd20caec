package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// refuseWithin bounds how long a node cut off from the leader may take to
// refuse a write: the forwarding timeout (about 3 s) plus slack for a busy
// machine. A write that hangs past it is a failure.
const refuseWithin = 10 * time.Second

// TestComposePartition cuts one follower off the mesh network of
// deploy/docker-compose.yml (docker network disconnect; its published
// registry port lives on a network of its own and keeps answering). Cut
// off, the node refuses writes fast with 503 and Retry-After, still serves
// the images it holds, and answers for what it lacks without hanging;
// the other two go on taking pushes. Connected again, it catches up: what
// was pushed meanwhile pulls through it, and it takes writes again.
func TestComposePartition(t *testing.T) {
	c := startCompose(t)
	if c == nil {
		return
	}
	// The leader every node agrees on (on a busy machine an election may
	// be under way right after a push).
	st := c.waitFormed(composeServices...)
	leader := serviceOf(st, st.Leader)
	victim := others(leader)[1]
	majority := others(victim)

	// The victim pulls an image before the partition, so it holds every
	// blob of it.
	held := c.push(majority[0], "alice/held:1")
	c.pull(victim, held)
	manifest, mediaType := getManifest(t, c.admin, c.addr(victim), "alice/held", "1")

	mesh := c.dockerRun("network", "ls", "--quiet",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.network=mesh")
	if mesh == "" || strings.Contains(mesh, "\n") {
		t.Fatalf("the mesh network of project %s: %q", c.project, mesh)
	}
	cid := c.container(victim)
	c.dockerRun("network", "disconnect", mesh, cid)
	t.Logf("cut %s off the mesh network (leader %s)", victim, leader)
	vaddr := c.addr(victim)

	// Writes through the victim are refused, fast, with Retry-After (it
	// checks the administrator's credentials from its local state).
	r := request(t, c.admin, http.MethodPut, "http://"+vaddr+"/v2/alice/held/manifests/refused", mediaType, manifest)
	wantRefused(t, "manifest PUT on "+victim, r)
	blob := make([]byte, 512)
	_, _ = rand.Read(blob)
	r = request(t, c.admin, http.MethodPost, fmt.Sprintf("http://%s/v2/alice/held/blobs/uploads/?digest=%s", vaddr, digest.FromBytes(blob)), "application/octet-stream", blob)
	wantRefused(t, "blob upload on "+victim, r)

	// What it holds still pulls through it.
	c.pull(victim, held)

	// The majority side goes on taking pushes.
	during := c.push(majority[0], "alice/app:during")
	c.pull(majority[1], during)

	// What the victim has not seen is answered from its local state (the
	// read barrier cannot reach the leader): not found, and without a hang.
	r = request(t, c.admin, http.MethodHead, "http://"+vaddr+"/v2/alice/app/manifests/during", "", nil)
	if r.status != http.StatusNotFound || r.took > refuseWithin {
		t.Fatalf("HEAD of a manifest pushed during the partition, on %s: %d after %s; want 404 within %s", victim, r.status, r.took, refuseWithin)
	}

	// What the victim must catch up to: the leader's applied index. On a
	// busy machine the majority may be between leaders for a moment.
	var target uint64
	eventually(t, composeFormTimeout, "the majority names its leader", func(ctx context.Context) error {
		ls, err := status(ctx, c.addr(majority[0]))
		if err != nil {
			return err
		}
		l := serviceOf(ls, ls.Leader)
		if l == "" || l == victim {
			return fmt.Errorf("%s names leader %q", majority[0], ls.Leader)
		}
		lst, err := status(ctx, c.addr(l))
		if err != nil {
			return err
		}
		target = lst.Raft.AppliedIndex
		return nil
	})

	healed := time.Now()
	c.dockerRun("network", "connect", "--alias", victim, mesh, cid)
	c.waitCaughtUp(victim, target, 60*time.Second)
	t.Logf("%s reconnected and applied index %d within %s", victim, target, time.Since(healed).Round(time.Millisecond))
	c.waitFormed(composeServices...)

	c.pull(victim, during)
	// The write refused during the partition did not happen later.
	for _, s := range composeServices {
		if r := request(t, c.admin, http.MethodHead, "http://"+c.addr(s)+"/v2/alice/held/manifests/refused", "", nil); r.status != http.StatusNotFound {
			t.Fatalf("HEAD alice/held:refused on %s after healing: %d, want 404", s, r.status)
		}
	}
	after := c.push(victim, "alice/app:after")
	for _, s := range majority {
		c.pull(s, after)
	}
}

// response is what the tests read of an HTTP response.
type response struct {
	status     int
	retryAfter string
	body       []byte
	took       time.Duration
}

// credentials are Basic credentials of a request; the zero value sends
// none.
type credentials struct{ user, password string }

// request sends one request under httpTimeout, with Basic credentials
// when cred has a user.
func request(t *testing.T, cred credentials, method, url, ctype string, body []byte) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if cred.user != "" {
		req.SetBasicAuth(cred.user, cred.password)
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return response{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: b, took: time.Since(start)}
}

// wantRefused checks that a write was refused the way a client can act
// on: 503 with a Retry-After in seconds, within refuseWithin.
func wantRefused(t *testing.T, what string, r response) {
	t.Helper()
	secs, err := strconv.Atoi(r.retryAfter)
	if r.status != http.StatusServiceUnavailable || err != nil || secs < 1 || r.took > refuseWithin {
		t.Fatalf("%s: %d Retry-After %q after %s (%s); want 503 with Retry-After within %s", what, r.status, r.retryAfter, r.took, bytes.TrimSpace(r.body), refuseWithin)
	}
	t.Logf("%s: 503, Retry-After %s, after %s", what, r.retryAfter, r.took.Round(time.Millisecond))
}

// getManifest reads a manifest as stored, with its media type.
func getManifest(t *testing.T, cred credentials, addr, repo, ref string) ([]byte, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred.user != "" {
		req.SetBasicAuth(cred.user, cred.password)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/%s:%s: %s %s", addr, repo, ref, resp.Status, b)
	}
	return b, resp.Header.Get("Content-Type")
}
