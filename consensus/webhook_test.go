package consensus

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hubmesh/hubmesh"
)

var hookT0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testHook(id, repo, org, name string, events ...string) hubmesh.Webhook {
	if len(events) == 0 {
		events = []string{hubmesh.EventPush}
	}
	return hubmesh.Webhook{
		ID: id, Repo: repo, Org: org, Name: name, URL: "https://ci.example/" + name,
		Secret: "s3cret", CallbackKey: strings.Repeat("k", 32), Events: events,
		Format: hubmesh.FormatDocker, Created: hookT0,
	}
}

func webhookCommands() []Command {
	disabled, url := true, "https://x.example/y"
	evs := []string{hubmesh.EventTagDelete}
	return []Command{
		&CreateWebhook{Webhook: testHook("0123456789abcdef", "acme/api", "", "ci")},
		&UpdateWebhook{ID: "0123456789abcdef", Update: hubmesh.WebhookUpdate{URL: &url, Events: &evs, Disabled: &disabled, At: hookT0}},
		&DeleteWebhook{ID: "0123456789abcdef"},
		&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: "0000000000000001" + "0001-0123456789abcdef", Attempt: 1, At: hookT0, Code: 500, Status: "500 Internal Server Error", NextAttempt: hookT0.Add(time.Second), MaxAttempts: 3, MaxFailures: 5}},
		&SetWebhookCallback{Delivery: "00000000000000010001-0123456789abcdef", Callback: hubmesh.WebhookCallback{State: hubmesh.CallbackSuccess, Description: "ok", At: hookT0}},
		&RedeliverWebhook{Delivery: "00000000000000010001-0123456789abcdef", At: hookT0},
	}
}

func TestWebhookCommandsRoundTrip(t *testing.T) {
	checkCommandsRoundTrip(t, webhookCommands(), TypeCreateWebhook, TypeRedeliverWebhook)
}

var undecodableWebhook = map[Type]string{
	TypeCreateWebhook:        `{"webhook":{"id":7}}`,
	TypeUpdateWebhook:        `{"id":"0123456789abcdef","update":{"chain":"yes"}}`,
	TypeDeleteWebhook:        `{"id":["x"]}`,
	TypeRecordWebhookAttempt: `{"attempt":{"attempt":"first"}}`,
	TypeSetWebhookCallback:   `{"delivery":"x","callback":{"at":"noon"}}`,
	TypeRedeliverWebhook:     `{"delivery":1}`,
}

func TestWebhookDecodeFailure(t *testing.T) {
	for typ, payload := range undecodableWebhook {
		t.Run(typ.String(), func(t *testing.T) {
			if _, err := Decode(envelope(typ, payload)); !errors.Is(err, hubmesh.ErrInvalid) {
				t.Fatalf("Decode error %v, want ErrInvalid", err)
			}
			h := newFSM(t)
			h.mustApply(&CreateWebhook{Webhook: testHook("0123456789abcdef", "acme/api", "", "ci")})
			h.mustHalt(envelope(typ, payload))
		})
	}
}

func TestWebhookValidate(t *testing.T) {
	bad := func(mut func(h *hubmesh.Webhook)) Command {
		h := testHook("0123456789abcdef", "acme/api", "", "ci")
		mut(&h)
		return &CreateWebhook{Webhook: h}
	}
	for name, c := range map[string]Command{
		"no scope":        bad(func(h *hubmesh.Webhook) { h.Repo = "" }),
		"both scopes":     bad(func(h *hubmesh.Webhook) { h.Org = "acme" }),
		"org chain":       bad(func(h *hubmesh.Webhook) { h.Repo, h.Org, h.Chain = "", "acme", true }),
		"bad id":          bad(func(h *hubmesh.Webhook) { h.ID = "XYZ" }),
		"bad name":        bad(func(h *hubmesh.Webhook) { h.Name = "a b" }),
		"ftp url":         bad(func(h *hubmesh.Webhook) { h.URL = "ftp://x/y" }),
		"user in url":     bad(func(h *hubmesh.Webhook) { h.URL = "https://u:p@x/y" }),
		"long url":        bad(func(h *hubmesh.Webhook) { h.URL = "https://x/" + strings.Repeat("a", 3000) }),
		"no events":       bad(func(h *hubmesh.Webhook) { h.Events = nil }),
		"unknown event":   bad(func(h *hubmesh.Webhook) { h.Events = []string{"pull"} }),
		"dup event":       bad(func(h *hubmesh.Webhook) { h.Events = []string{"push", "push"} }),
		"bad format":      bad(func(h *hubmesh.Webhook) { h.Format = "xml" }),
		"short cb key":    bad(func(h *hubmesh.Webhook) { h.CallbackKey = "k" }),
		"long secret":     bad(func(h *hubmesh.Webhook) { h.Secret = strings.Repeat("s", 300) }),
		"bad delivery id": &RedeliverWebhook{Delivery: "nope"},
		"callback state":  &SetWebhookCallback{Delivery: "00000000000000010001-0123456789abcdef", Callback: hubmesh.WebhookCallback{State: "great"}},
		"attempt 0":       &RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: "00000000000000010001-0123456789abcdef"}},
		"long body":       &RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: "00000000000000010001-0123456789abcdef", Attempt: 1, Body: strings.Repeat("b", MaxDeliveryBody+1)}},
	} {
		if err := c.validate(); !errors.Is(err, hubmesh.ErrInvalid) {
			t.Errorf("%s: validate = %v, want ErrInvalid", name, err)
		}
	}
}

// pushTag pushes a fresh manifest to repo under tag, as user.
func pushTag(h *fsmHarness, repo, tag, user string) *hubmesh.Manifest {
	layer := blobDesc("layer " + repo + tag)
	h.mustApply(&LinkBlobs{Repo: repo, Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})
	m := imageManifest(repo, tag, layer)
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{tag}, Pusher: user})
	return m
}

func dueAll(t *testing.T, f *stateMachine) []hubmesh.WebhookDelivery {
	t.Helper()
	ds, _, err := f.due(hookT0.Add(1000*time.Hour), 10000)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func mustHook(t *testing.T, f *stateMachine, id string) hubmesh.Webhook {
	t.Helper()
	h, err := f.webhook(id)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustDelivery(t *testing.T, f *stateMachine, id string) hubmesh.WebhookDelivery {
	t.Helper()
	d, err := f.delivery(id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const (
	hookRepo = "00000000000000a1"
	hookOrg  = "00000000000000b1"
	hookOff  = "00000000000000c1"
	hookElse = "00000000000000d1"
)

func TestFSMWebhookOutbox(t *testing.T) {
	h := newFSM(t)
	// No webhook: a push writes no outbox record.
	pushTag(h, "acme/quiet", "v1", "alice")
	if n := keysUnder(h.dump(), "delivery/"); n != 0 {
		t.Fatalf("%d deliveries without webhooks", n)
	}
	h.mustApply(&CreateWebhook{Webhook: testHook(hookRepo, "acme/api", "", "ci", hubmesh.EventPush, hubmesh.EventTagDelete)})
	h.mustApply(&CreateWebhook{Webhook: testHook(hookOrg, "", "acme", "all", hubmesh.EventPush, hubmesh.EventTagDelete, hubmesh.EventRepoCreate, hubmesh.EventRepoDelete)})
	off := testHook(hookOff, "acme/api", "", "off")
	h.mustApply(&CreateWebhook{Webhook: off})
	disabled := true
	h.mustApply(&UpdateWebhook{ID: hookOff, Update: hubmesh.WebhookUpdate{Disabled: &disabled}})
	h.mustApply(&CreateWebhook{Webhook: testHook(hookElse, "other/api", "", "ci")})
	if err := h.applyErr(&CreateWebhook{Webhook: testHook("00000000000000e1", "acme/api", "", "ci")}); !errors.Is(err, hubmesh.ErrExists) {
		t.Fatalf("same name: %v", err)
	}

	m := pushTag(h, "acme/api", "v1", "alice")
	pushIndex := h.index
	ds := dueAll(t, h.f)
	// repo_create (org hook), then push to the repo hook and the org hook.
	want := []struct{ typ, hook string }{
		{hubmesh.EventRepoCreate, hookOrg}, {hubmesh.EventPush, hookRepo}, {hubmesh.EventPush, hookOrg},
	}
	if len(ds) != len(want) {
		t.Fatalf("due %d deliveries %+v, want %d", len(ds), ds, len(want))
	}
	for i, w := range want {
		d := ds[i]
		if d.Event.Type != w.typ || d.Hook != w.hook || d.State != hubmesh.DeliveryPending || d.Event.Repo != "acme/api" {
			t.Errorf("delivery %d = %+v, want %s to %s", i, d, w.typ, w.hook)
		}
		if !strings.HasPrefix(d.Event.ID, fmt.Sprintf("%016x", pushIndex)) || d.ID != d.Event.ID+"-"+d.Hook {
			t.Errorf("delivery %d: ids %s / %s not derived from index %d", i, d.ID, d.Event.ID, pushIndex)
		}
	}
	if p := ds[1]; p.Event.Tag != "v1" || p.Event.Digest != m.Digest || p.Event.Actor != "alice" || !p.Event.At.Equal(m.Created) {
		t.Errorf("push event %+v", p.Event)
	}
	if ds[1].Event.ID == ds[0].Event.ID || ds[1].Event.ID != ds[2].Event.ID {
		t.Errorf("event ids %s %s %s: want one per event", ds[0].Event.ID, ds[1].Event.ID, ds[2].Event.ID)
	}

	h.mustApply(&DeleteTag{Repo: "acme/api", Tag: "v1", At: hookT0, Actor: "bob"})
	h.mustApply(&DeleteRepository{Name: "acme/api", At: hookT0, Actor: "bob"})
	ds = dueAll(t, h.f)
	types := map[string]int{}
	for _, d := range ds {
		types[d.Event.Type+"/"+d.Hook]++
	}
	wantTypes := map[string]int{
		"repo_create/" + hookOrg: 1, "push/" + hookRepo: 1, "push/" + hookOrg: 1,
		"tag_delete/" + hookRepo: 1, "tag_delete/" + hookOrg: 1, "repo_delete/" + hookOrg: 1,
	}
	if !maps.Equal(types, wantTypes) {
		t.Fatalf("events %v, want %v", types, wantTypes)
	}
	if d, _ := h.f.deliveries(hookOff, hubmesh.Page{}); len(d) != 0 {
		t.Fatalf("disabled webhook got %d deliveries", len(d))
	}
	// Repository webhooks outlive the repository; the log lists newest first.
	log, err := h.f.deliveries(hookRepo, hubmesh.Page{N: 1})
	if err != nil || len(log) != 1 || log[0].Event.Type != hubmesh.EventTagDelete {
		t.Fatalf("delivery log page %+v, %v", log, err)
	}
	rest, _ := h.f.deliveries(hookRepo, hubmesh.Page{Last: log[0].ID})
	if len(rest) != 1 || rest[0].Event.Type != hubmesh.EventPush {
		t.Fatalf("second page %+v", rest)
	}

	// Deleting the namespace deletes its webhooks and their deliveries.
	// (An org cannot be created over a namespace that holds repositories.)
	h.mustApply(&DeleteRepository{Name: "acme/quiet", At: hookT0, Actor: "bob"})
	h.mustApply(&CreateUser{User: testUser("owner")})
	h.mustApply(&CreateOrg{Org: hubmesh.Org{Name: "acme", Owner: "owner"}})
	h.mustApply(&DeleteOrg{Name: "acme"})
	st := h.dump()
	for _, id := range []string{hookRepo, hookOrg, hookOff} {
		if _, ok := st["hook/"+id]; ok {
			t.Errorf("webhook %s survived its namespace", id)
		}
	}
	if keysUnder(st, "hookdue/") != 0 || keysUnder(st, "delivery/") != 0 || keysUnder(st, "hookrepo/acme") != 0 {
		t.Errorf("outbox keys survived the namespace: %d due, %d deliveries", keysUnder(st, "hookdue/"), keysUnder(st, "delivery/"))
	}
	if _, err := h.f.webhook(hookElse); err != nil {
		t.Errorf("another namespace's webhook went too: %v", err)
	}
}

func TestFSMWebhookAttempts(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateWebhook{Webhook: testHook(hookRepo, "acme/api", "", "ci")})
	pushTag(h, "acme/api", "v1", "alice")
	pushTag(h, "acme/api", "v2", "alice")
	ds := dueAll(t, h.f)
	if len(ds) != 2 {
		t.Fatalf("due %d", len(ds))
	}
	first, second := ds[0].ID, ds[1].ID
	fail := func(id string, n int, next time.Time) WebhookAttemptResult {
		res := h.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{
			Delivery: id, Attempt: n, At: hookT0, Code: 503, Status: "503 Service Unavailable", Body: "busy",
			NextAttempt: next, MaxAttempts: 3, MaxFailures: 4,
		}})
		return res.(WebhookAttemptResult)
	}
	later := hookT0.Add(time.Hour)
	if r := fail(first, 1, later); r.State != hubmesh.DeliveryPending || r.Disabled {
		t.Fatalf("after one failure: %+v", r)
	}
	if d := mustDelivery(t, h.f, first); d.Attempts != 1 || d.LastCode != 503 || d.LastBody != "busy" || !d.NextAttempt.Equal(later) {
		t.Fatalf("delivery after a failure %+v", d)
	}
	// Recording the same attempt again (a retry after an unknown outcome)
	// changes nothing.
	before := h.dump()
	fail(first, 1, later.Add(time.Hour))
	after := h.dump()
	delete(before, string(keyApplied))
	delete(after, string(keyApplied))
	if !maps.Equal(before, after) {
		t.Fatal("a repeated attempt record changed the state")
	}
	// Not due before its next attempt.
	if due, next, _ := h.f.due(hookT0.Add(time.Minute), 10); len(due) != 1 || due[0].ID != second || !next.Equal(later) {
		t.Fatalf("due before the retry: %+v next %v", due, next)
	}
	// Success resets the failure count and finishes the delivery.
	res := h.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: second, Attempt: 1, At: hookT0, OK: true, Code: 200}})
	if res.(WebhookAttemptResult).State != hubmesh.DeliveryDelivered || mustHook(t, h.f, hookRepo).Failures != 0 {
		t.Fatalf("after success: %+v, hook %+v", res, mustHook(t, h.f, hookRepo))
	}
	if r := fail(second, 2, later); r.State != hubmesh.DeliveryDelivered {
		t.Fatalf("an attempt on a delivered delivery changed it: %+v", r)
	}
	// Attempts run out: failed, no longer due.
	fail(first, 2, later)
	if r := fail(first, 3, later); r.State != hubmesh.DeliveryFailed {
		t.Fatalf("after MaxAttempts: %+v", r)
	}
	if due := dueAll(t, h.f); len(due) != 0 {
		t.Fatalf("still due: %+v", due)
	}
	// Redeliver makes it pending again, attempts keep counting.
	h.mustApply(&RedeliverWebhook{Delivery: first, At: hookT0})
	if d := mustDelivery(t, h.f, first); d.State != hubmesh.DeliveryPending || d.Attempts != 3 {
		t.Fatalf("redelivered %+v", d)
	}
	// The fourth consecutive failure disables the webhook and fails what
	// was pending.
	pushTag(h, "acme/api", "v3", "alice")
	for _, d := range dueAll(t, h.f) {
		if d.ID != first {
			fail(d.ID, 1, later) // the third consecutive failure
		}
	}
	if r := fail(first, 4, later); !r.Disabled {
		t.Fatalf("fourth failure did not disable: %+v (hook %+v)", r, mustHook(t, h.f, hookRepo))
	}
	hk := mustHook(t, h.f, hookRepo)
	if !hk.Disabled || hk.DisabledReason == "" {
		t.Fatalf("hook %+v", hk)
	}
	if due := dueAll(t, h.f); len(due) != 0 {
		t.Fatalf("due after disable: %+v", due)
	}
	if err := h.applyErr(&RedeliverWebhook{Delivery: first, At: hookT0}); !errors.Is(err, hubmesh.ErrInvalid) {
		t.Fatalf("redeliver on a disabled webhook: %v", err)
	}
	pushTag(h, "acme/api", "v4", "alice")
	if due := dueAll(t, h.f); len(due) != 0 {
		t.Fatalf("a disabled webhook got a delivery: %+v", due)
	}
	enable := false
	h.mustApply(&UpdateWebhook{ID: hookRepo, Update: hubmesh.WebhookUpdate{Disabled: &enable}})
	if hk := mustHook(t, h.f, hookRepo); hk.Disabled || hk.Failures != 0 {
		t.Fatalf("enabled hook %+v", hk)
	}
	h.mustApply(&RedeliverWebhook{Delivery: first, At: hookT0})
	if due := dueAll(t, h.f); len(due) != 1 {
		t.Fatalf("due after enable and redeliver: %+v", due)
	}
	// Deleting the webhook deletes its log and due keys.
	h.mustApply(&DeleteWebhook{ID: hookRepo})
	st := h.dump()
	if keysUnder(st, "delivery/") != 0 || keysUnder(st, "hookdue/") != 0 || keysUnder(st, "hookrepo/") != 0 {
		t.Fatal("webhook state survived DeleteWebhook")
	}
	if err := h.applyErr(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: first, Attempt: 9, At: hookT0}}); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("attempt on a deleted delivery: %v", err)
	}
}

func TestFSMWebhookChain(t *testing.T) {
	h := newFSM(t)
	a, b := testHook("00000000000000a1", "acme/api", "", "1-build"), testHook("00000000000000a2", "acme/api", "", "2-deploy")
	a.Chain, b.Chain = true, true
	h.mustApply(&CreateWebhook{Webhook: b}) // creation order does not matter: names do
	h.mustApply(&CreateWebhook{Webhook: a})
	h.mustApply(&CreateWebhook{Webhook: testHook("00000000000000a3", "acme/api", "", "3-notify")})
	pushTag(h, "acme/api", "v1", "alice")
	ds := dueAll(t, h.f)
	if len(ds) != 2 || ds[0].Hook != a.ID || ds[1].Hook != "00000000000000a3" {
		t.Fatalf("due at first %+v", ds)
	}
	second := ds[0].Event.ID + "-" + b.ID
	if d := mustDelivery(t, h.f, second); d.State != hubmesh.DeliveryWaiting || d.WaitFor != ds[0].ID {
		t.Fatalf("chained delivery %+v", d)
	}
	h.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: ds[0].ID, Attempt: 1, At: hookT0, OK: true, Code: 200}})
	if d := mustDelivery(t, h.f, second); d.State != hubmesh.DeliveryWaiting {
		t.Fatalf("released before the callback: %+v", d)
	}
	h.mustApply(&SetWebhookCallback{Delivery: ds[0].ID, Callback: hubmesh.WebhookCallback{State: hubmesh.CallbackSuccess, Description: "built", At: hookT0}})
	if d := mustDelivery(t, h.f, second); d.State != hubmesh.DeliveryPending {
		t.Fatalf("not released by success: %+v", d)
	}
	if d := mustDelivery(t, h.f, ds[0].ID); d.Callback == nil || d.Callback.Description != "built" {
		t.Fatalf("callback not stored: %+v", d)
	}
	// A failure report fails the rest of the chain.
	pushTag(h, "acme/api", "v2", "alice")
	ds = dueAll(t, h.f)
	var head string
	for _, d := range ds {
		if d.Hook == a.ID && d.Event.Tag == "v2" {
			head = d.ID
		}
	}
	h.mustApply(&SetWebhookCallback{Delivery: head, Callback: hubmesh.WebhookCallback{State: hubmesh.CallbackFailure, At: hookT0}})
	ev, _, _ := splitDeliveryID(head)
	if d := mustDelivery(t, h.f, ev+"-"+b.ID); d.State != hubmesh.DeliveryFailed {
		t.Fatalf("chain after a failure: %+v", d)
	}
}

// TestFSMWebhookBacklogBounded: a webhook keeps at most
// MaxDeliveriesPerHook records; with all of them unfinished a new event is
// counted as dropped, and a finished record makes room for the next.
func TestFSMWebhookBacklogBounded(t *testing.T) {
	h := newFSM(t)
	h.mustApply(&CreateWebhook{Webhook: testHook(hookRepo, "acme/api", "", "ci")})
	layer := blobDesc("layer")
	h.mustApply(&LinkBlobs{Repo: "acme/api", Blobs: []hubmesh.Descriptor{layer}, Node: "n1"})
	m := imageManifest("acme/api", "v", layer)
	var logs []*raft.Log
	for i := range MaxDeliveriesPerHook + 1 {
		logs = append(logs, h.entry(&PutManifest{Manifest: *m, Tags: []string{fmt.Sprintf("t%d", i)}}))
	}
	for i, res := range h.f.ApplyBatch(logs) {
		if err, ok := res.(error); ok {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	hk := mustHook(t, h.f, hookRepo)
	if hk.Deliveries != MaxDeliveriesPerHook || hk.Dropped != 1 {
		t.Fatalf("hook after %d events: %d records, %d dropped", MaxDeliveriesPerHook+1, hk.Deliveries, hk.Dropped)
	}
	ds, _, _ := h.f.due(hookT0.Add(1000*time.Hour), 1)
	h.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: ds[0].ID, Attempt: 1, At: hookT0, OK: true}})
	h.mustApply(&PutManifest{Manifest: *m, Tags: []string{"next"}})
	hk = mustHook(t, h.f, hookRepo)
	if hk.Deliveries != MaxDeliveriesPerHook || hk.Dropped != 1 {
		t.Fatalf("after a finished record made room: %d records, %d dropped", hk.Deliveries, hk.Dropped)
	}
	if _, err := h.f.delivery(ds[0].ID); !errors.Is(err, hubmesh.ErrNotFound) {
		t.Fatalf("oldest finished record kept: %v", err)
	}
}

func TestSnapshotRoundTripWebhooks(t *testing.T) {
	src := newFSM(t)
	src.mustApply(&CreateWebhook{Webhook: testHook(hookRepo, "acme/api", "", "ci")})
	src.mustApply(&CreateWebhook{Webhook: testHook(hookOrg, "", "acme", "all", hubmesh.EventRepoCreate)})
	pushTag(src, "acme/api", "v1", "alice")
	ds := dueAll(t, src.f)
	src.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: ds[0].ID, Attempt: 1, At: hookT0, Code: 500, NextAttempt: hookT0.Add(time.Hour)}})
	dst := newFSM(t)
	restoreInto(t, src, dst, "hook/", "hookrepo/", "hookorg/", "delivery/", "hookdue/")
	dst.index = src.index
	dst.mustApply(&RecordWebhookAttempt{Attempt: hubmesh.WebhookAttempt{Delivery: ds[0].ID, Attempt: 2, At: hookT0, OK: true}})
	if d := mustDelivery(t, dst.f, ds[0].ID); d.State != hubmesh.DeliveryDelivered || d.Attempts != 2 {
		t.Fatalf("delivery after restore %+v", d)
	}
}
