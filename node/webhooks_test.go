package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/registryapi"
)

var hookT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeHookStore keeps webhooks and deliveries in memory with the FSM's
// rules for recording attempts.
type fakeHookStore struct {
	leader atomic.Bool
	mu     sync.Mutex
	hooks  map[string]hubmesh.Webhook
	ds     map[string]hubmesh.WebhookDelivery
	order  []string
	repos  map[string]hubmesh.Repository
}

func newFakeHookStore() *fakeHookStore {
	s := &fakeHookStore{hooks: map[string]hubmesh.Webhook{}, ds: map[string]hubmesh.WebhookDelivery{}, repos: map[string]hubmesh.Repository{}}
	s.leader.Store(true)
	return s
}

func (s *fakeHookStore) IsLeader() bool { return s.leader.Load() }

func (s *fakeHookStore) add(hook hubmesh.Webhook, ev hubmesh.WebhookEvent) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks[hook.ID] = hook
	id := ev.ID + "-" + hook.ID
	s.ds[id] = hubmesh.WebhookDelivery{ID: id, Hook: hook.ID, Event: ev, State: hubmesh.DeliveryPending, NextAttempt: ev.At}
	s.order = append(s.order, id)
	return id
}

func (s *fakeHookStore) DueWebhookDeliveries(now time.Time, limit int) ([]hubmesh.WebhookDelivery, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []hubmesh.WebhookDelivery
	var next time.Time
	for _, id := range s.order {
		d := s.ds[id]
		if d.State != hubmesh.DeliveryPending {
			continue
		}
		if d.NextAttempt.After(now) {
			if next.IsZero() || d.NextAttempt.Before(next) {
				next = d.NextAttempt
			}
			continue
		}
		if len(out) < limit {
			out = append(out, d)
		}
	}
	return out, next, nil
}

func (s *fakeHookStore) WebhookChanges() <-chan struct{} { return make(chan struct{}) }

func (s *fakeHookStore) Webhook(_ context.Context, id string) (hubmesh.Webhook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hooks[id]
	if !ok {
		return h, hubmesh.ErrNotFound
	}
	return h, nil
}

func (s *fakeHookStore) Repository(_ context.Context, name string) (hubmesh.Repository, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.repos[name]
	if !ok {
		return r, hubmesh.ErrRepoUnknown
	}
	return r, nil
}

func (s *fakeHookStore) RecordWebhookAttempt(_ context.Context, a hubmesh.WebhookAttempt) (consensus.WebhookAttemptResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.ds[a.Delivery]
	if d.State != hubmesh.DeliveryPending || a.Attempt <= d.Attempts {
		return consensus.WebhookAttemptResult{State: d.State}, nil
	}
	h := s.hooks[d.Hook]
	d.Attempts, d.LastCode, d.LastStatus, d.LastBody, d.LastLatencyMs = a.Attempt, a.Code, a.Status, a.Body, a.LatencyMs
	res := consensus.WebhookAttemptResult{}
	if a.OK {
		d.State, h.Failures = hubmesh.DeliveryDelivered, 0
	} else {
		h.Failures++
		d.NextAttempt = a.NextAttempt
		if a.MaxAttempts > 0 && d.Attempts >= a.MaxAttempts {
			d.State = hubmesh.DeliveryFailed
		}
		if a.MaxFailures > 0 && h.Failures >= a.MaxFailures && !h.Disabled {
			h.Disabled, res.Disabled = true, true
			for id, o := range s.ds {
				if o.Hook == h.ID && o.State == hubmesh.DeliveryPending && id != d.ID {
					o.State = hubmesh.DeliveryFailed
					s.ds[id] = o
				}
			}
			if d.State == hubmesh.DeliveryPending {
				d.State = hubmesh.DeliveryFailed
			}
		}
	}
	s.ds[d.ID], s.hooks[h.ID] = d, h
	res.State = d.State
	return res, nil
}

func (s *fakeHookStore) delivery(id string) hubmesh.WebhookDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ds[id]
}

type fakeAudit struct {
	mu  sync.Mutex
	evs []hubmesh.AuditEvent
}

func (a *fakeAudit) Audit(ev hubmesh.AuditEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.evs = append(a.evs, ev)
}

// receiver records what it is sent and answers with the codes in script
// (the last one repeats).
type receiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	script []int
	got    []*http.Request
	bodies [][]byte
	srv    *httptest.Server
}

func newReceiver(t *testing.T, secret string, script ...int) *receiver {
	r := &receiver{t: t, secret: secret, script: script}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got, r.bodies = append(r.got, req), append(r.bodies, b)
		code := http.StatusOK
		if len(r.script) > 0 {
			code = r.script[0]
			if len(r.script) > 1 {
				r.script = r.script[1:]
			}
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d", code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestWorker(t *testing.T, store *fakeHookStore, allow ...string) (*hookWorker, *clock, *fakeAudit) {
	eg, err := newEgress(allow)
	if err != nil {
		t.Fatal(err)
	}
	au := &fakeAudit{}
	w := newHookWorker(store, au, eg, "http://node1:5000", 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := &clock{t: hookT0}
	w.now, w.jitter = c.now, func() float64 { return 0 }
	return w, c, au
}

func testWebhook(id, url string) hubmesh.Webhook {
	return hubmesh.Webhook{ID: id, Repo: "acme/api", Name: "ci-" + id, URL: url, Secret: "s3cret", CallbackKey: strings.Repeat("k", 32),
		Events: []string{hubmesh.EventPush}, Format: hubmesh.FormatDocker}
}

func pushEvent(n int, tag string) hubmesh.WebhookEvent {
	return hubmesh.WebhookEvent{ID: fmt.Sprintf("%016x0001", n), Type: hubmesh.EventPush, Repo: "acme/api", Tag: tag,
		Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Actor: "alice", At: hookT0}
}

func TestHookDeliverySignedPayload(t *testing.T) {
	rcv := newReceiver(t, "s3cret")
	store := newFakeHookStore()
	store.repos["acme/api"] = hubmesh.Repository{Name: "acme/api", Description: "the API", StarCount: 3, Created: hookT0.Add(-time.Hour)}
	w, _, _ := newTestWorker(t, store, "127.0.0.0/8")
	did := store.add(testWebhook("00000000000000a1", rcv.srv.URL+"/hook"), pushEvent(5, "v1"))
	ce := testWebhook("00000000000000a2", rcv.srv.URL+"/ce")
	ce.Format, ce.Secret = hubmesh.FormatCloudEvents, ""
	store.add(ce, pushEvent(5, "v1"))

	if _, err := w.round(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := store.delivery(did); d.State != hubmesh.DeliveryDelivered || d.LastCode != 200 || d.LastBody != "answer 200" {
		t.Fatalf("delivery %+v", d)
	}
	if rcv.requests() != 2 {
		t.Fatalf("%d requests", rcv.requests())
	}
	var req *http.Request
	var body, ceBody []byte
	for i, r := range rcv.got {
		if r.URL.Path == "/hook" {
			req, body = r, rcv.bodies[i]
		} else {
			ceBody = rcv.bodies[i]
			if r.Header.Get("X-Hub-Signature-256") != "" || r.Header.Get("Content-Type") != "application/cloudevents+json; charset=utf-8" {
				t.Errorf("cloudevents headers %v", r.Header)
			}
		}
	}
	if got, want := req.Header.Get("X-Hub-Signature-256"), Signature("s3cret", body); got != want || !strings.HasPrefix(got, "sha256=") {
		t.Fatalf("signature %q, want %q", got, want)
	}
	if req.Header.Get("X-Hubmesh-Delivery") != did || req.Header.Get("X-Hubmesh-Timestamp") != fmt.Sprint(hookT0.Unix()) || req.Header.Get("X-Hubmesh-Event") != "push" {
		t.Fatalf("headers %v", req.Header)
	}
	var p struct {
		CallbackURL string         `json:"callback_url"`
		Event       string         `json:"event"`
		PushData    map[string]any `json:"push_data"`
		Repository  map[string]any `json:"repository"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	wantCB := "http://node1:5000/api/v1/callbacks/" + did + "?token=" + registryapi.CallbackToken(strings.Repeat("k", 32), did)
	if p.CallbackURL != wantCB || p.Event != "push" || p.PushData["tag"] != "v1" || p.PushData["pusher"] != "alice" ||
		p.PushData["pushed_at"] != float64(hookT0.Unix()) {
		t.Fatalf("payload %s", body)
	}
	for _, f := range []string{"comment_count", "date_created", "description", "dockerfile", "full_description", "is_official",
		"is_private", "is_trusted", "name", "namespace", "owner", "repo_name", "repo_url", "star_count", "status"} {
		if _, ok := p.Repository[f]; !ok {
			t.Errorf("repository.%s missing", f)
		}
	}
	if p.Repository["repo_name"] != "acme/api" || p.Repository["name"] != "api" || p.Repository["star_count"] != float64(3) || p.Repository["description"] != "the API" {
		t.Fatalf("repository %v", p.Repository)
	}
	var ev map[string]any
	if err := json.Unmarshal(ceBody, &ev); err != nil || ev["specversion"] != "1.0" || ev["type"] != "io.hubmesh.push" ||
		ev["subject"] != "acme/api:v1" || ev["id"] != pushEvent(5, "v1").ID {
		t.Fatalf("cloud event %s (%v)", ceBody, err)
	}
}

func TestHookRetryBackoff(t *testing.T) {
	rcv := newReceiver(t, "", 500, 503, 200)
	store := newFakeHookStore()
	w, clk, _ := newTestWorker(t, store, "127.0.0.0/8")
	w.maxFailures = 0
	did := store.add(testWebhook("00000000000000a1", rcv.srv.URL), pushEvent(1, "v1"))
	for i, step := range []struct {
		advance time.Duration
		want    int // requests so far
		state   string
	}{
		{0, 1, hubmesh.DeliveryPending},
		{4 * time.Second, 1, hubmesh.DeliveryPending},   // first retry after 5 s
		{1 * time.Second, 2, hubmesh.DeliveryPending},   // due now
		{9 * time.Second, 2, hubmesh.DeliveryPending},   // second retry after 10 s
		{1 * time.Second, 3, hubmesh.DeliveryDelivered}, // the third attempt succeeds
		{time.Hour, 3, hubmesh.DeliveryDelivered},
	} {
		clk.add(step.advance)
		next, err := w.round(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		d := store.delivery(did)
		if rcv.requests() != step.want || d.State != step.state {
			t.Fatalf("step %d: %d requests, state %s (next %v), want %d %s", i, rcv.requests(), d.State, next, step.want, step.state)
		}
	}
	for _, r := range rcv.got {
		if r.Header.Get("X-Hubmesh-Delivery") != did {
			t.Fatalf("retry with delivery id %q, want %q", r.Header.Get("X-Hubmesh-Delivery"), did)
		}
	}
	if d := store.delivery(did); d.Attempts != 3 {
		t.Fatalf("attempts %d", d.Attempts)
	}
}

func TestHookBackoff(t *testing.T) {
	w := &hookWorker{backoffMin: 5 * time.Second, backoffMax: time.Hour, jitter: func() float64 { return 0 }}
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 5: 80 * time.Second, 10: 2560 * time.Second, 11: time.Hour, 100: time.Hour} {
		if got := w.backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
	w.jitter = func() float64 { return 0.999 }
	if got := w.backoff(3); got <= 10*time.Second || got > 20*time.Second {
		t.Errorf("jittered backoff(3) = %v, want in (10s, 20s]", got)
	}
	total := time.Duration(0)
	w.jitter = func() float64 { return 0 }
	for n := 1; n < hookMaxAttempts; n++ {
		total += w.backoff(n)
	}
	if total < 3*time.Hour {
		t.Errorf("retries span %v, want hours", total)
	}
}

func TestHookDisableAfterFailures(t *testing.T) {
	rcv := newReceiver(t, "", 500)
	store := newFakeHookStore()
	w, clk, au := newTestWorker(t, store, "127.0.0.0/8")
	hook := testWebhook("00000000000000a1", rcv.srv.URL)
	var ids []string
	for i := range 4 {
		ids = append(ids, store.add(hook, pushEvent(i+1, "v1")))
	}
	// One round: the deliveries of one webhook go in order; the third
	// failure (maxFailures 3) disables it and fails the fourth.
	if _, err := w.round(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	if _, err := w.round(t.Context()); err != nil {
		t.Fatal(err)
	}
	if h, _ := store.Webhook(t.Context(), hook.ID); !h.Disabled {
		t.Fatalf("webhook not disabled: %+v", h)
	}
	if rcv.requests() != 3 {
		t.Fatalf("%d requests, want 3", rcv.requests())
	}
	if d := store.delivery(ids[3]); d.State != hubmesh.DeliveryFailed {
		t.Fatalf("last delivery %+v", d)
	}
	if len(au.evs) != 1 || au.evs[0].Action != "webhook.disable" || !strings.Contains(au.evs[0].Target, hook.Name) {
		t.Fatalf("audit %+v", au.evs)
	}
}

func TestHookFollowerDoesNotDeliver(t *testing.T) {
	rcv := newReceiver(t, "")
	store := newFakeHookStore()
	store.leader.Store(false)
	w, _, _ := newTestWorker(t, store, "127.0.0.0/8")
	did := store.add(testWebhook("00000000000000a1", rcv.srv.URL), pushEvent(1, "v1"))
	if _, err := w.round(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rcv.requests() != 0 || store.delivery(did).State != hubmesh.DeliveryPending {
		t.Fatal("a follower delivered")
	}
}

func TestHookRefusedByEgressPolicy(t *testing.T) {
	rcv := newReceiver(t, "")
	store := newFakeHookStore()
	w, _, _ := newTestWorker(t, store) // no allow-list: loopback is refused
	did := store.add(testWebhook("00000000000000a1", rcv.srv.URL), pushEvent(1, "v1"))
	if _, err := w.round(t.Context()); err != nil {
		t.Fatal(err)
	}
	d := store.delivery(did)
	if rcv.requests() != 0 || d.Attempts != 1 || d.LastCode != 0 || !strings.Contains(d.LastStatus, "egress policy") {
		t.Fatalf("delivery to loopback: %d requests, %+v", rcv.requests(), d)
	}
}

func TestEgressPolicy(t *testing.T) {
	for _, tc := range []struct {
		ip    string
		allow []string
		ok    bool
	}{
		{"8.8.8.8", nil, true},
		{"2001:4860:4860::8888", nil, true},
		{"127.0.0.1", nil, false},
		{"127.1.2.3", nil, false},
		{"::1", nil, false},
		{"::ffff:127.0.0.1", nil, false},
		{"10.1.2.3", nil, false},
		{"172.16.0.1", nil, false},
		{"192.168.1.1", nil, false},
		{"169.254.169.254", nil, false},
		{"fe80::1", nil, false},
		{"fd00::1", nil, false},
		{"0.0.0.0", nil, false},
		{"::", nil, false},
		{"224.0.0.1", nil, false},
		{"ff02::1", nil, false},
		{"100.64.0.1", nil, false},
		{"255.255.255.255", nil, false},
		{"64:ff9b::a00:1", nil, false},
		{"127.0.0.1", []string{"127.0.0.0/8"}, true},
		{"::ffff:127.0.0.1", []string{"127.0.0.0/8"}, true},
		{"10.1.2.3", []string{"127.0.0.0/8"}, false},
		{"10.1.2.3", []string{"10.0.0.0/8", "127.0.0.0/8"}, true},
	} {
		e, err := newEgress(tc.allow)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.permitted(netip.MustParseAddr(tc.ip)); got != tc.ok {
			t.Errorf("%s allow %v: permitted %v, want %v", tc.ip, tc.allow, got, tc.ok)
		}
	}
	if _, err := newEgress([]string{"10.0.0.0/33"}); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestEgressDial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	post := func(e *egress, url string) (int, error) {
		resp, err := e.client(5*time.Second).Post(url, "text/plain", nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	closed, _ := newEgress(nil)
	if _, err := post(closed, srv.URL); err == nil || !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("loopback without allow-list: %v", err)
	}
	// A name resolving to a refused address (DNS rebinding) is refused
	// too, and the URL check says so at once.
	closed.resolve = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.0.0.7")}, nil
	}
	if _, err := post(closed, "http://hooks.example:"+port+"/"); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("private name: %v", err)
	}
	if err := closed.checkURL(t.Context(), "http://hooks.example/x"); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("checkURL: %v", err)
	}
	if err := closed.checkURL(t.Context(), "http://[::1]:80/x"); !errors.Is(err, hubmesh.ErrDenied) {
		t.Fatalf("checkURL literal: %v", err)
	}
	open, _ := newEgress([]string{"127.0.0.0/8"})
	// The dialer connects to the address it checked: a name that resolves
	// to one refused and one allowed address uses the allowed one.
	open.resolve = func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	if code, err := post(open, "http://hooks.example:"+port+"/"); err != nil || code != http.StatusNoContent {
		t.Fatalf("allowed: %d %v", code, err)
	}
	if code, err := post(open, srv.URL+"/redirect"); err != nil || code != http.StatusFound {
		t.Fatalf("redirect: %d %v, want the 302 itself", code, err)
	}
	if err := open.checkURL(t.Context(), srv.URL); err != nil {
		t.Fatalf("checkURL allowed: %v", err)
	}
}

func TestClip(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "a\x00b": "ab", "\xffz": "\uFFFD", "ééé": "é"} {
		if got := clip(in, 3); got != want {
			t.Errorf("clip(%q) = %q, want %q", in, got, want)
		}
	}
	if got := clip(strings.Repeat("é", 10), 5); got != "éé" {
		t.Errorf("clip cut a rune: %q", got)
	}
}
