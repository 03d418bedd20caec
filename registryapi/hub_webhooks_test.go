package registryapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

func init() {
	hookBody := map[string]string{"name": "string", "url": "string", "secret": "string", "events": "array", "format": "string", "chain": "boolean"}
	patchBody := map[string]string{"url": "string", "secret": "string", "events": "array", "format": "string", "chain": "boolean", "disabled": "boolean"}
	for _, s := range []struct{ base, tag, who string }{
		{"/api/v1/repositories/{ns}/{name}/webhooks", "repository", "repository administrators"},
		{"/api/v1/orgs/{org}/webhooks", "organization-wide", "organization owners"},
	} {
		apiOps = append(apiOps,
			apiOp{"GET", s.base, "List the " + s.tag + " webhooks (" + s.who + ")", "webhooks", "user", nil, nil, 200, listPage[webhookView]{}},
			apiOp{"POST", s.base, "Create a " + s.tag + " webhook; events default to push, format to docker; the secret is never shown", "webhooks", "user", nil, hookBody, 201, webhookView{}},
			apiOp{"GET", s.base + "/{hook}", "Get a " + s.tag + " webhook", "webhooks", "user", nil, nil, 200, webhookView{}},
			apiOp{"PATCH", s.base + "/{hook}", "Change a " + s.tag + " webhook; disabled=false re-enables it", "webhooks", "user", nil, patchBody, 200, webhookView{}},
			apiOp{"DELETE", s.base + "/{hook}", "Delete a " + s.tag + " webhook and its delivery log", "webhooks", "user", nil, nil, 204, nil},
			apiOp{"GET", s.base + "/{hook}/deliveries", "Delivery log, newest first: state, attempts, response code, latency, start of the body, callback", "webhooks", "user", []string{"page_size", "last"}, nil, 200, listPage[hubmesh.WebhookDelivery]{}},
			apiOp{"POST", s.base + "/{hook}/deliveries/{id}/redeliver", "Deliver again (same delivery id)", "webhooks", "user", nil, nil, 202, hubmesh.WebhookDelivery{}},
		)
	}
	apiOps = append(apiOps, apiOp{"POST", "/api/v1/callbacks/{id}", "A receiver reports on a delivery through its callback_url (token= in the URL is the credential)", "webhooks", "none", []string{"token"}, map[string]string{"state": "string", "description": "string", "context": "string", "target_url": "string"}, 200, hubmesh.WebhookCallback{}})
}

// fakeWebhooks is an in-memory Webhooks.
type fakeWebhooks struct {
	mu         sync.Mutex
	hooks      map[string]hubmesh.Webhook
	deliveries map[string]hubmesh.WebhookDelivery
	actors     []string
}

func newFakeWebhooks() *fakeWebhooks {
	return &fakeWebhooks{hooks: map[string]hubmesh.Webhook{}, deliveries: map[string]hubmesh.WebhookDelivery{}}
}

func (f *fakeWebhooks) CreateWebhook(ctx context.Context, h hubmesh.Webhook) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.hooks {
		if o.Repo == h.Repo && o.Org == h.Org && o.Name == h.Name {
			return fmt.Errorf("webhook %s: %w", h.Name, hubmesh.ErrExists)
		}
	}
	if h.Format != hubmesh.FormatDocker && h.Format != hubmesh.FormatCloudEvents {
		return fmt.Errorf("%w: format %q", hubmesh.ErrInvalid, h.Format)
	}
	f.actors = append(f.actors, ActorFrom(ctx))
	f.hooks[h.ID] = h
	return nil
}

func (f *fakeWebhooks) UpdateWebhook(_ context.Context, id string, u hubmesh.WebhookUpdate) (hubmesh.Webhook, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hooks[id]
	if !ok {
		return h, hubmesh.ErrNotFound
	}
	if u.URL != nil {
		h.URL = *u.URL
	}
	if u.Disabled != nil {
		h.Disabled = *u.Disabled
	}
	f.hooks[id] = h
	return h, nil
}

func (f *fakeWebhooks) DeleteWebhook(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.hooks, id)
	return nil
}

func (f *fakeWebhooks) Webhook(_ context.Context, id string) (hubmesh.Webhook, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.hooks[id]
	if !ok {
		return h, hubmesh.ErrNotFound
	}
	return h, nil
}

func (f *fakeWebhooks) Webhooks(_ context.Context, repo, org string) ([]hubmesh.Webhook, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hubmesh.Webhook
	for _, h := range f.hooks {
		if h.Repo == repo && h.Org == org {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b hubmesh.Webhook) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *fakeWebhooks) WebhookDeliveries(_ context.Context, hook string, p hubmesh.Page) ([]hubmesh.WebhookDelivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return newestFirst(f.deliveries, p, func(d hubmesh.WebhookDelivery) (string, bool) { return d.ID, d.Hook == hook }), nil
}

func (f *fakeWebhooks) WebhookDelivery(_ context.Context, id string) (hubmesh.WebhookDelivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.deliveries[id]
	if !ok {
		return d, hubmesh.ErrNotFound
	}
	return d, nil
}

func (f *fakeWebhooks) RedeliverWebhook(_ context.Context, id string, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.deliveries[id]
	d.State, d.NextAttempt = hubmesh.DeliveryPending, at
	f.deliveries[id] = d
	return nil
}

func (f *fakeWebhooks) SetWebhookCallback(_ context.Context, id string, cb hubmesh.WebhookCallback) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.deliveries[id]
	d.Callback = &cb
	f.deliveries[id] = d
	return nil
}

// newHookEnv is an authEnv whose Hub has webhooks, and a URL check that
// refuses loopback targets.
func newHookEnv(t *testing.T) (*authEnv, *fakeWebhooks) {
	e := newAuthEnv(t)
	wh := newFakeWebhooks()
	e.withHub(HubConfig{
		Webhooks: wh,
		WebhookURLCheck: func(_ context.Context, u string) error {
			if strings.Contains(u, "127.0.0.1") {
				return fmt.Errorf("%w: loopback address refused by the egress policy", hubmesh.ErrDenied)
			}
			return nil
		},
	})
	e.addUser("alice", false)
	e.addUser("bob", false)
	e.addOrg("acme", "alice")
	e.addRepo("acme/api", false)
	return e, wh
}

func TestHubWebhooks(t *testing.T) {
	e, wh := newHookEnv(t)
	alice, bob := basic("alice", testPassword), basic("bob", testPassword)
	const base = "/api/v1/repositories/acme/api/webhooks"
	body := map[string]any{"name": "ci", "url": "https://ci.example/hook", "secret": "s3cret", "events": []string{"push", "tag_delete"}}

	e.expect(e.json("POST", base, "", body), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.json("POST", base, bob, body), http.StatusForbidden, "DENIED")
	r := e.json("POST", base, alice, body)
	e.expect(r, http.StatusCreated, "")
	if strings.Contains(string(r.body), "s3cret") || strings.Contains(string(r.body), "callback_key") {
		t.Fatalf("secret shown: %s", r.body)
	}
	v := decode[webhookView](t, r)
	if v.Name != "ci" || v.Repository != "acme/api" || !v.HasSecret || v.Format != "docker" || !slices.Equal(v.Events, []string{"push", "tag_delete"}) {
		t.Fatalf("created %+v", v)
	}
	if wh.actors[0] != "alice" {
		t.Fatalf("actor in the store's context %q, want alice", wh.actors[0])
	}
	e.expect(e.json("POST", base, alice, body), http.StatusConflict, "")
	e.expect(e.json("POST", base, alice, map[string]any{"name": "x", "url": "http://127.0.0.1:9/"}), http.StatusBadRequest, "UNSUPPORTED")
	e.expect(e.json("POST", base, alice, map[string]any{"name": "x", "url": "https://a/", "format": "xml"}), http.StatusBadRequest, "")
	e.expect(e.json("POST", base, alice, map[string]any{"url": "https://a/"}), http.StatusBadRequest, "")
	e.expect(e.json("POST", "/api/v1/repositories/acme/nope/webhooks", alice, body), http.StatusNotFound, "")

	list := decode[listPage[webhookView]](t, e.json("GET", base, alice, nil))
	if list.Count != 1 || list.Results[0].ID != v.ID {
		t.Fatalf("list %+v", list)
	}
	e.expect(e.json("GET", base, bob, nil), http.StatusForbidden, "DENIED")
	e.expect(e.json("GET", base+"/ci", alice, nil), http.StatusOK, "")
	e.expect(e.json("GET", base+"/nope", alice, nil), http.StatusNotFound, "")
	p := decode[webhookView](t, e.json("PATCH", base+"/ci", alice, map[string]any{"disabled": true}))
	if !p.Disabled {
		t.Fatalf("patched %+v", p)
	}
	e.expect(e.json("PATCH", base+"/ci", alice, map[string]any{"url": "http://127.0.0.1/"}), http.StatusBadRequest, "")

	// The delivery log, redelivery and the callback.
	did := "00000000000000050001-" + v.ID
	wh.deliveries[did] = hubmesh.WebhookDelivery{ID: did, Hook: v.ID, State: hubmesh.DeliveryFailed, Attempts: 3, LastCode: 500}
	ds := decode[listPage[hubmesh.WebhookDelivery]](t, e.json("GET", base+"/ci/deliveries", alice, nil))
	if ds.Count != 1 || ds.Results[0].LastCode != 500 {
		t.Fatalf("deliveries %+v", ds)
	}
	e.expect(e.json("POST", base+"/ci/deliveries/"+did+"/redeliver", alice, nil), http.StatusAccepted, "")
	if wh.deliveries[did].State != hubmesh.DeliveryPending {
		t.Fatalf("not redelivered: %+v", wh.deliveries[did])
	}
	e.expect(e.json("POST", base+"/ci/deliveries/00000000000000050001-ffffffffffffffff/redeliver", alice, nil), http.StatusNotFound, "")

	hk := wh.hooks[v.ID]
	cb := map[string]string{"state": "success", "description": "built", "context": "ci", "target_url": "https://ci.example/1"}
	e.expect(e.json("POST", "/api/v1/callbacks/"+did+"?token=wrong", "", cb), http.StatusForbidden, "DENIED")
	e.expect(e.json("POST", "/api/v1/callbacks/nope?token=x", "", cb), http.StatusForbidden, "DENIED")
	e.expect(e.json("POST", "/api/v1/callbacks/"+did+"?token="+CallbackToken(hk.CallbackKey, did), "", cb), http.StatusOK, "")
	if got := wh.deliveries[did].Callback; got == nil || got.State != "success" || got.TargetURL != "https://ci.example/1" {
		t.Fatalf("callback stored %+v", got)
	}

	e.expect(e.json("DELETE", base+"/ci", alice, nil), http.StatusNoContent, "")
	e.expect(e.json("GET", base+"/ci", alice, nil), http.StatusNotFound, "")

	// Organization-wide webhooks: owners only.
	const org = "/api/v1/orgs/acme/webhooks"
	e.expect(e.json("POST", org, bob, body), http.StatusForbidden, "DENIED")
	ov := decode[webhookView](t, e.json("POST", org, alice, map[string]any{"name": "all", "url": "https://ci.example/all", "format": "cloudevents"}))
	if ov.Org != "acme" || ov.Repository != "" || ov.Format != "cloudevents" || ov.HasSecret {
		t.Fatalf("org hook %+v", ov)
	}
	var raw map[string]any
	if err := json.Unmarshal(e.json("GET", org+"/all", alice, nil).body, &raw); err != nil || raw["name"] != "all" {
		t.Fatalf("org hook get %v %v", raw, err)
	}
}

func TestCallbackToken(t *testing.T) {
	a, b := CallbackToken("key-1", "d1"), CallbackToken("key-2", "d1")
	if len(a) != 32 || a == b || a == CallbackToken("key-1", "d2") || a != CallbackToken("key-1", "d1") {
		t.Fatalf("tokens %s %s", a, b)
	}
}

// newestFirst is the page p of the items that keep selects, by id
// descending, as the metadata plane pages delivery logs and build
// histories (p.Last: the id of the last item of the previous page).
func newestFirst[K comparable, T any](items map[K]T, p hubmesh.Page, keep func(T) (id string, ok bool)) []T {
	var out []T
	for _, it := range items {
		if id, ok := keep(it); ok && (p.Last == "" || id < p.Last) {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, func(a, b T) int {
		ia, _ := keep(a)
		ib, _ := keep(b)
		return strings.Compare(ib, ia)
	})
	if p.N > 0 && len(out) > p.N {
		out = out[:p.N]
	}
	return out
}
