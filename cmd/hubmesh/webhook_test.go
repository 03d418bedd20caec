package main_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// hookReceiver is a webhook receiver on 127.0.0.1:0: it checks each
// delivery's signature and records the delivery ids per tag.
type hookReceiver struct {
	t      *testing.T
	secret string
	url    string

	mu       sync.Mutex
	byTag    map[string]map[string]int // tag -> delivery id -> times received
	received int
	changed  chan struct{}
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{t: t, secret: secret, url: "http://" + ln.Addr().String() + "/hook",
		byTag: map[string]map[string]int{}, changed: make(chan struct{}, 1)}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m := hmac.New(sha256.New, []byte(r.secret))
	m.Write(body)
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); !hmac.Equal([]byte(req.Header.Get("X-Hub-Signature-256")), []byte(want)) {
		r.t.Errorf("delivery %s: signature %q, want %q", req.Header.Get("X-Hubmesh-Delivery"), req.Header.Get("X-Hub-Signature-256"), want)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p struct {
		Event    string `json:"event"`
		PushData struct {
			Tag    string `json:"tag"`
			Pusher string `json:"pusher"`
		} `json:"push_data"`
		Repository struct {
			RepoName string `json:"repo_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("delivery body %q: %v", body, err)
		return
	}
	id := req.Header.Get("X-Hubmesh-Delivery")
	if p.Event == "push" && (p.PushData.Pusher != nodetest.AdminUser || p.Repository.RepoName != "admin/app" || id == "") {
		r.t.Errorf("push delivery %s: %s", id, body)
	}
	r.mu.Lock()
	if p.Event == "push" {
		if r.byTag[p.PushData.Tag] == nil {
			r.byTag[p.PushData.Tag] = map[string]int{}
		}
		r.byTag[p.PushData.Tag][id]++
	}
	r.received++
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusOK)
}

// waitTags waits until a push of every tag has arrived.
func (r *hookReceiver) waitTags(ctx context.Context, tags []string) error {
	for {
		r.mu.Lock()
		missing := 0
		for _, tag := range tags {
			if len(r.byTag[tag]) == 0 {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d push events never arrived: %w", missing, len(tags), ctx.Err())
		case <-r.changed:
		}
	}
}

// TestWebhooksAcrossLeaderCrash pushes a stream of tags to a three-node
// cluster whose leader delivers webhooks, kills the leader with SIGKILL in
// the middle, and checks that every push event arrives, signed, and that
// a repeat carries the delivery id of the first attempt.
func TestWebhooksAcrossLeaderCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	secret := "webhook-test-secret"
	rcv := newHookReceiver(t, secret)
	procs := nodetest.StartCluster(t, 3, nodetest.Options{Args: []string{"--webhook-allow-cidrs", "127.0.0.0/8"}})
	leader := nodetest.Leader(t, procs, nodetest.DefaultClusterTimeout)
	var api *nodetest.Process // a node that survives: the test talks to it
	for _, p := range procs {
		if p != leader {
			api = p
			break
		}
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) nodetest.CLIResult {
		t.Helper()
		res := nodetest.CLI(t, 0, api.Env(), args...)
		if res.Code != 0 {
			t.Fatalf("hubmesh %s: %s", strings.Join(args, " "), res)
		}
		return res
	}
	cli("repo", "create", "admin/app")
	cli("webhook", "add", "admin/app", "--name", "ci", "--url", rcv.url, "--secret-file", secretFile)
	if out := cli("webhook", "ls", "admin/app").Stdout; !strings.Contains(out, "ci") || !strings.Contains(out, rcv.url) {
		t.Fatalf("webhook ls: %s", out)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	reg := adminRegistry(api)
	im := randomImage(t, 1024)
	const n, killAt = 20, 8
	var tags []string
	retried := map[string]bool{} // a push retried after an unknown outcome may be two events
	for i := range n {
		if i == killAt {
			leader.Kill()
			t.Logf("killed the leader %s after %d pushes", leader.PeerID(), i)
		}
		tag := fmt.Sprintf("v%02d", i)
		tags = append(tags, tag)
		for attempt := 0; ; attempt++ {
			pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
			err := reg.push(pctx, "admin/app", tag, im)
			pcancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("push %s: %v", tag, err)
			}
			retried[tag] = true
			t.Logf("push %s (attempt %d): %v; retrying", tag, attempt+1, err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // pacing between retries, not synchronisation
			}
		}
	}
	if err := rcv.waitTags(ctx, tags); err != nil {
		t.Fatal(err)
	}

	rcv.mu.Lock()
	repeats := 0
	for _, tag := range tags {
		ids := rcv.byTag[tag]
		if len(ids) > 1 && !retried[tag] {
			t.Errorf("tag %s arrived as %d different deliveries %v: a repeat must carry the same delivery id", tag, len(ids), ids)
		}
		for id, times := range ids {
			if times > 1 {
				repeats += times - 1
				t.Logf("delivery %s (tag %s) arrived %d times", id, tag, times)
			}
		}
	}
	rcv.mu.Unlock()
	t.Logf("%d push events, %d repeats of unconfirmed deliveries", len(tags), repeats)
	if repeats > 4 {
		t.Errorf("%d repeats: more than the deliveries in flight when the leader died", repeats)
	}

	// The delivery log, read through a surviving node, shows every push
	// delivered once the new leader has recorded them.
	deadline := time.Now().Add(time.Minute)
	for {
		var ds []struct {
			State string `json:"state"`
			Event struct {
				Type string `json:"type"`
				Tag  string `json:"tag"`
			} `json:"event"`
		}
		res := cli("webhook", "deliveries", "admin/app", "ci", "--json", "--limit", "0")
		if err := json.Unmarshal([]byte(res.Stdout), &ds); err != nil {
			t.Fatalf("webhook deliveries --json: %v: %s", err, res.Stdout)
		}
		delivered := map[string]bool{}
		for _, d := range ds {
			if d.Event.Type == "push" && d.State == "delivered" {
				delivered[d.Event.Tag] = true
			}
		}
		if len(delivered) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery log shows %d of %d pushes delivered: %s", len(delivered), n, res.Stdout)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(250 * time.Millisecond): // polling the log
		}
	}
}

// TestWebhookEgressRefused: without --webhook-allow-cidrs a node refuses
// webhooks to loopback and private addresses.
func TestWebhookEgressRefused(t *testing.T) {
	p := nodetest.Start(t, nodetest.Options{})
	if res := nodetest.CLI(t, 0, p.Env(), "repo", "create", "admin/app"); res.Code != 0 {
		t.Fatalf("repo create: %s", res)
	}
	for _, u := range []string{"http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]/x"} {
		res := nodetest.CLI(t, 0, p.Env(), "webhook", "add", "admin/app", "--name", "x", "--url", u)
		if res.Code == 0 || !strings.Contains(res.Stderr, "egress policy") {
			t.Errorf("webhook to %s: %s; want a refusal naming the egress policy", u, res)
		}
	}
	if res := nodetest.CLI(t, 0, p.Env(), "webhook", "ls", "admin/app", "--json"); res.Code != 0 || strings.TrimSpace(res.Stdout) != "[]" {
		t.Fatalf("webhook ls after refusals: %s", res)
	}
}
