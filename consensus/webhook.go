package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Webhooks: their configuration, and the outbox of events to deliver. The
// FSM appends a delivery record for each (event, webhook) pair when a tag is
// pushed or deleted, a repository is created or deleted, or a build is
// queued, started or ended (build.go), and an enabled webhook of the
// repository (or of its organization) asks for that event.
// Apply has no side effects: the leader's delivery worker (node) reads the
// due deliveries, POSTs them, and records each outcome with
// RecordWebhookAttempt before it moves on, so a confirmed delivery is never
// repeated after a crash or a leader change, and an unconfirmed one is
// repeated with the same delivery id. Keys (see keys.go):
//
//	hook/<id>                         JSON hubmesh.Webhook (secret included)
//	hookrepo/<repo>\x00<name>         id of a repository webhook
//	hookorg/<org>\x00<name>           id of an organization webhook
//	delivery/<hook id>\x00<event id>  JSON hubmesh.WebhookDelivery (event included)
//	hookdue/<16 hex ns>\x00<delivery id>
//	                                  empty: a pending delivery, by next attempt time
//
// Event ids are the Raft index of the command (16 hex digits) and a
// sequence number within it (4 hex digits), so they sort in log order and
// every replica derives the same ones. A delivery id is
// "<event id>-<webhook id>".

// Limits of the webhook state.
const (
	// MaxWebhooks is the most webhooks a repository or an organization has.
	MaxWebhooks = 25
	// MaxDeliveriesPerHook is the most delivery records a webhook keeps.
	// When it is reached the oldest finished record makes room; when every
	// record is unfinished the event is not recorded for that webhook and
	// its Dropped counter goes up.
	MaxDeliveriesPerHook = 1000
	// MaxDeliveryBody is the most bytes of a response body a delivery
	// record keeps.
	MaxDeliveryBody = 1024

	maxHookURLLen    = 2048
	maxHookSecretLen = 256
	maxCallbackText  = 1024
	maxStatusLen     = 256
)

// Command types of webhooks.
type (
	// CreateWebhook creates a webhook; its ID is set by the proposer.
	// A webhook of the same name in the same scope fails with
	// hubmesh.ErrExists.
	CreateWebhook struct {
		Webhook hubmesh.Webhook `json:"webhook"`
	}
	// UpdateWebhook changes a webhook. Disabling it fails its pending
	// deliveries; enabling it resets its failure count. Its result is the
	// updated hubmesh.Webhook.
	UpdateWebhook struct {
		ID     string                `json:"id"`
		Update hubmesh.WebhookUpdate `json:"update"`
	}
	// DeleteWebhook removes a webhook and its delivery records.
	DeleteWebhook struct {
		ID string `json:"id"`
	}
	// RecordWebhookAttempt records the outcome of one delivery attempt.
	// Its result is a WebhookAttemptResult.
	RecordWebhookAttempt struct {
		Attempt hubmesh.WebhookAttempt `json:"attempt"`
	}
	// SetWebhookCallback stores what a receiver reported through the
	// callback URL; success releases the next delivery of a chain, failure
	// or error fails it.
	SetWebhookCallback struct {
		Delivery string                  `json:"delivery"`
		Callback hubmesh.WebhookCallback `json:"callback"`
	}
	// RedeliverWebhook makes a finished delivery pending again, due At. A
	// pending one is left as it is.
	RedeliverWebhook struct {
		Delivery string    `json:"delivery"`
		At       time.Time `json:"at"`
	}
)

// WebhookAttemptResult is the result of RecordWebhookAttempt.
type WebhookAttemptResult struct {
	// Disabled is set when this attempt disabled the webhook.
	Disabled bool `json:"disabled,omitempty"`
	// State is the delivery's state after the attempt.
	State string `json:"state"`
}

// Type implements Command.
func (*CreateWebhook) Type() Type { return TypeCreateWebhook }

// Type implements Command.
func (*UpdateWebhook) Type() Type { return TypeUpdateWebhook }

// Type implements Command.
func (*DeleteWebhook) Type() Type { return TypeDeleteWebhook }

// Type implements Command.
func (*RecordWebhookAttempt) Type() Type { return TypeRecordWebhookAttempt }

// Type implements Command.
func (*SetWebhookCallback) Type() Type { return TypeSetWebhookCallback }

// Type implements Command.
func (*RedeliverWebhook) Type() Type { return TypeRedeliverWebhook }

var (
	prefixHook     = []byte("hook/")
	prefixHookRepo = []byte("hookrepo/")
	prefixHookOrg  = []byte("hookorg/")
	prefixDelivery = []byte("delivery/")
	prefixHookDue  = []byte("hookdue/")
)

func hookKey(id string) []byte { return key(prefixHook, id) }

func hookNameKey(h *hubmesh.Webhook) []byte {
	if h.Org != "" {
		return key(prefixHookOrg, h.Org, h.Name)
	}
	return key(prefixHookRepo, h.Repo, h.Name)
}

func deliveryKey(hook, event string) []byte { return key(prefixDelivery, hook, event) }

func dueKey(at time.Time, delivery string) []byte {
	ns := max(at.UnixNano(), 0)
	if at.IsZero() {
		ns = 0
	}
	return key(prefixHookDue, fmt.Sprintf("%016x", ns), delivery)
}

var (
	hookIDRe   = regexp.MustCompile(`^[a-f0-9]{8,32}$`)
	hookNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
	eventIDRe  = regexp.MustCompile(`^[a-f0-9]{20}$`)
	knownEvent = []string{
		hubmesh.EventPush, hubmesh.EventTagDelete, hubmesh.EventRepoCreate, hubmesh.EventRepoDelete,
		hubmesh.EventBuildQueued, hubmesh.EventBuildStarted, hubmesh.EventBuildSuccess, hubmesh.EventBuildFailure,
		hubmesh.EventBuildCancelled,
	}
)

func checkHookID(id string) error {
	if !hookIDRe.MatchString(id) {
		return fmt.Errorf("%w: webhook id %q", hubmesh.ErrInvalid, id)
	}
	return nil
}

// splitDeliveryID splits "<event id>-<webhook id>".
func splitDeliveryID(id string) (event, hook string, err error) {
	event, hook, ok := strings.Cut(id, "-")
	if !ok || !eventIDRe.MatchString(event) || checkHookID(hook) != nil {
		return "", "", fmt.Errorf("%w: delivery id %q", hubmesh.ErrInvalid, id)
	}
	return event, hook, nil
}

// CheckWebhookURL checks the form of a webhook URL: http or https, a
// host, no user information, at most 2048 bytes. Where it may point is
// the delivering node's egress policy.
func CheckWebhookURL(raw string) error {
	if err := checkID("webhook url", raw, maxHookURLLen); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: webhook url %q: want http(s)://host[:port]/path without user information", hubmesh.ErrInvalid, raw)
	}
	return nil
}

func checkEvents(evs []string) error {
	if len(evs) == 0 || len(evs) > len(knownEvent) {
		return fmt.Errorf("%w: webhook events: want 1 to %d of %s", hubmesh.ErrInvalid, len(knownEvent), strings.Join(knownEvent, ", "))
	}
	for i, e := range evs {
		if !slices.Contains(knownEvent, e) || slices.Contains(evs[:i], e) {
			return fmt.Errorf("%w: webhook event %q: want distinct ones of %s", hubmesh.ErrInvalid, e, strings.Join(knownEvent, ", "))
		}
	}
	return nil
}

func checkFormat(f string) error {
	if f != hubmesh.FormatDocker && f != hubmesh.FormatCloudEvents {
		return fmt.Errorf("%w: webhook format %q: want docker or cloudevents", hubmesh.ErrInvalid, f)
	}
	return nil
}

func (c *CreateWebhook) validate() error {
	h := &c.Webhook
	if err := checkHookID(h.ID); err != nil {
		return err
	}
	switch {
	case h.Repo != "" && h.Org == "":
		if err := checkRepo(h.Repo); err != nil {
			return err
		}
	case h.Repo == "" && h.Org != "":
		if err := checkNamespace(h.Org); err != nil {
			return err
		}
		if h.Chain {
			return fmt.Errorf("%w: chains are a repository option", hubmesh.ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: a webhook belongs to exactly one repository or organization", hubmesh.ErrInvalid)
	}
	if !hookNameRe.MatchString(h.Name) {
		return fmt.Errorf("%w: webhook name %q: want 1 to 64 of a-z, A-Z, 0-9, '_', '.', '-'", hubmesh.ErrInvalid, h.Name)
	}
	if err := CheckWebhookURL(h.URL); err != nil {
		return err
	}
	if err := checkText("webhook secret", h.Secret, maxHookSecretLen); err != nil {
		return err
	}
	if len(h.CallbackKey) < 16 || len(h.CallbackKey) > 128 {
		return fmt.Errorf("%w: webhook callback key of %d bytes", hubmesh.ErrInvalid, len(h.CallbackKey))
	}
	if err := checkEvents(h.Events); err != nil {
		return err
	}
	return checkFormat(h.Format)
}

func (c *UpdateWebhook) validate() error {
	if err := checkHookID(c.ID); err != nil {
		return err
	}
	u := &c.Update
	if u.URL != nil {
		if err := CheckWebhookURL(*u.URL); err != nil {
			return err
		}
	}
	if u.Secret != nil {
		if err := checkText("webhook secret", *u.Secret, maxHookSecretLen); err != nil {
			return err
		}
	}
	if u.Events != nil {
		if err := checkEvents(*u.Events); err != nil {
			return err
		}
	}
	if u.Format != nil {
		return checkFormat(*u.Format)
	}
	return nil
}

func (c *DeleteWebhook) validate() error { return checkHookID(c.ID) }

func (c *RecordWebhookAttempt) validate() error {
	a := &c.Attempt
	if _, _, err := splitDeliveryID(a.Delivery); err != nil {
		return err
	}
	if a.Attempt < 1 || a.MaxAttempts < 0 || a.MaxFailures < 0 || a.LatencyMs < 0 {
		return fmt.Errorf("%w: webhook attempt %d of delivery %s", hubmesh.ErrInvalid, a.Attempt, a.Delivery)
	}
	if err := checkText("attempt status", a.Status, maxStatusLen); err != nil {
		return err
	}
	return checkText("attempt body", a.Body, MaxDeliveryBody)
}

func (c *SetWebhookCallback) validate() error {
	if _, _, err := splitDeliveryID(c.Delivery); err != nil {
		return err
	}
	cb := &c.Callback
	switch cb.State {
	case hubmesh.CallbackSuccess, hubmesh.CallbackFailure, hubmesh.CallbackError:
	default:
		return fmt.Errorf("%w: callback state %q: want success, failure or error", hubmesh.ErrInvalid, cb.State)
	}
	for _, f := range []struct{ what, v string }{{"description", cb.Description}, {"context", cb.Context}, {"target_url", cb.TargetURL}} {
		if err := checkText("callback "+f.what, f.v, maxCallbackText); err != nil {
			return err
		}
	}
	return nil
}

func (c *RedeliverWebhook) validate() error {
	_, _, err := splitDeliveryID(c.Delivery)
	return err
}

// ---- apply ----

func (c *CreateWebhook) apply(tx *txn) (any, error) {
	h := c.Webhook
	if tx.has(hookKey(h.ID)) || tx.has(hookNameKey(&h)) {
		return nil, fmt.Errorf("webhook %s: %w", h.Name, hubmesh.ErrExists)
	}
	var scopeKey []byte
	if h.Org != "" {
		scopeKey = scope(prefixHookOrg, h.Org)
	} else {
		scopeKey = scope(prefixHookRepo, h.Repo)
	}
	if n := len(tx.keys(scopeKey)); n >= MaxWebhooks {
		return nil, fmt.Errorf("create webhook %s: %w: %d webhooks, at most %d", h.Name, hubmesh.ErrInvalid, n, MaxWebhooks)
	}
	h.Disabled, h.DisabledReason, h.Failures, h.Deliveries, h.Dropped = false, "", 0, 0, 0
	if h.Updated.IsZero() {
		h.Updated = h.Created
	}
	tx.setJSON(hookKey(h.ID), h)
	tx.set(hookNameKey(&h), []byte(h.ID))
	return nil, nil
}

func (tx *txn) hook(id string) (hubmesh.Webhook, bool) {
	var h hubmesh.Webhook
	ok := tx.getJSON(hookKey(id), &h)
	return h, ok
}

func (c *UpdateWebhook) apply(tx *txn) (any, error) {
	h, ok := tx.hook(c.ID)
	if !ok {
		return nil, fmt.Errorf("webhook %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	u := &c.Update
	if u.Chain != nil && *u.Chain && h.Org != "" {
		return nil, fmt.Errorf("%w: chains are a repository option", hubmesh.ErrInvalid)
	}
	if u.URL != nil {
		h.URL = *u.URL
	}
	if u.Secret != nil {
		h.Secret = *u.Secret
	}
	if u.Events != nil {
		h.Events = slices.Clone(*u.Events)
	}
	if u.Format != nil {
		h.Format = *u.Format
	}
	if u.Chain != nil {
		h.Chain = *u.Chain
	}
	if u.At.After(h.Updated) {
		h.Updated = u.At
	}
	if u.Disabled != nil && *u.Disabled != h.Disabled {
		if *u.Disabled {
			tx.disableHook(&h, "disabled by a user", u.At)
		} else {
			h.Disabled, h.DisabledReason, h.Failures = false, "", 0
		}
	}
	tx.setJSON(hookKey(h.ID), h)
	return h, nil
}

func (c *DeleteWebhook) apply(tx *txn) (any, error) {
	h, ok := tx.hook(c.ID)
	if !ok {
		return nil, fmt.Errorf("webhook %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	tx.deleteHook(&h)
	return nil, nil
}

// deleteHook removes h, its name and its deliveries.
func (tx *txn) deleteHook(h *hubmesh.Webhook) {
	tx.forDeliveries(h.ID, func(k []byte, d *hubmesh.WebhookDelivery) bool {
		if d.State == hubmesh.DeliveryPending {
			tx.del(dueKey(d.NextAttempt, d.ID))
		}
		tx.del(k)
		return true
	})
	tx.del(hookNameKey(h))
	tx.del(hookKey(h.ID))
}

// deleteHooksOf removes the webhooks of namespace ns: its organization
// webhooks and those of its repositories (a new owner of the name must
// not inherit them).
func (tx *txn) deleteHooksOf(ns string) {
	var ids []string
	for _, pre := range [][]byte{scope(prefixHookOrg, ns), append(bytes.Clone(prefixHookRepo), ns+"/"...)} {
		err := scan(tx.b, pre, nil, 0, func(_, v []byte) error {
			ids = append(ids, string(v))
			return nil
		})
		if err != nil {
			panic(fmt.Sprintf("consensus: fsm: scan %q: %v", pre, err))
		}
	}
	for _, id := range ids {
		if h, ok := tx.hook(id); ok {
			tx.deleteHook(&h)
		}
	}
}

// forDeliveries calls fn for each delivery record of hook, oldest first,
// until fn returns false.
func (tx *txn) forDeliveries(hook string, fn func(k []byte, d *hubmesh.WebhookDelivery) bool) {
	type rec struct {
		k []byte
		d hubmesh.WebhookDelivery
	}
	var recs []rec
	err := scan(tx.b, scope(prefixDelivery, hook), nil, 0, func(k, v []byte) error {
		var d hubmesh.WebhookDelivery
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("corrupt value of %q: %w", k, err)
		}
		recs = append(recs, rec{bytes.Clone(k), d})
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("consensus: fsm: scan deliveries of %s: %v", hook, err))
	}
	for i := range recs {
		if !fn(recs[i].k, &recs[i].d) {
			return
		}
	}
}

// disableHook disables h (the caller writes h) and fails its pending and
// waiting deliveries.
func (tx *txn) disableHook(h *hubmesh.Webhook, reason string, at time.Time) {
	h.Disabled, h.DisabledReason = true, reason
	tx.forDeliveries(h.ID, func(k []byte, d *hubmesh.WebhookDelivery) bool {
		if d.State == hubmesh.DeliveryPending || d.State == hubmesh.DeliveryWaiting {
			tx.finish(d, hubmesh.DeliveryFailed, "webhook disabled: "+reason, at)
		}
		return true
	})
}

// putDelivery writes d.
func (tx *txn) putDelivery(d *hubmesh.WebhookDelivery) {
	tx.setJSON(deliveryKey(d.Hook, d.Event.ID), d)
}

// setDue makes d pending, due at.
func (tx *txn) setDue(d *hubmesh.WebhookDelivery, at time.Time) {
	if d.State == hubmesh.DeliveryPending {
		tx.del(dueKey(d.NextAttempt, d.ID))
	}
	d.State, d.NextAttempt = hubmesh.DeliveryPending, at
	tx.set(dueKey(at, d.ID), nil)
	tx.hooksChanged = true
}

// finish ends d in state (delivered or failed), writes it, and releases
// or fails the next delivery of its chain.
func (tx *txn) finish(d *hubmesh.WebhookDelivery, state, status string, at time.Time) {
	if d.State == hubmesh.DeliveryPending {
		tx.del(dueKey(d.NextAttempt, d.ID))
	}
	d.State, d.NextAttempt = state, time.Time{}
	if status != "" {
		d.LastStatus = truncateText(status, maxStatusLen)
	}
	tx.putDelivery(d)
	if state == hubmesh.DeliveryFailed {
		tx.releaseNext(d, false, at)
	}
}

// releaseNext makes the waiting next delivery of d's chain pending (ok) or
// fails it.
func (tx *txn) releaseNext(d *hubmesh.WebhookDelivery, ok bool, at time.Time) {
	if d.Next == "" {
		return
	}
	ev, hook, err := splitDeliveryID(d.Next)
	if err != nil {
		return
	}
	var next hubmesh.WebhookDelivery
	if !tx.getJSON(deliveryKey(hook, ev), &next) || next.State != hubmesh.DeliveryWaiting {
		return
	}
	if ok {
		tx.setDue(&next, at)
		tx.putDelivery(&next)
		return
	}
	tx.finish(&next, hubmesh.DeliveryFailed, "previous webhook of the chain did not succeed", at)
}

// truncateText cuts s to at most n bytes without splitting a UTF-8
// sequence.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (c *RecordWebhookAttempt) apply(tx *txn) (any, error) {
	a := &c.Attempt
	ev, hookID, _ := splitDeliveryID(a.Delivery)
	var d hubmesh.WebhookDelivery
	if !tx.getJSON(deliveryKey(hookID, ev), &d) {
		return nil, fmt.Errorf("delivery %s: %w", a.Delivery, hubmesh.ErrNotFound)
	}
	if d.State != hubmesh.DeliveryPending || a.Attempt <= d.Attempts {
		return WebhookAttemptResult{State: d.State}, nil // recorded before, or finished meanwhile
	}
	h, ok := tx.hook(hookID)
	if !ok {
		return nil, fmt.Errorf("webhook %s: %w", hookID, hubmesh.ErrNotFound)
	}
	d.Attempts = a.Attempt
	d.LastAttempt, d.LastCode, d.LastLatencyMs = a.At, a.Code, a.LatencyMs
	d.LastStatus, d.LastBody = a.Status, a.Body
	res := WebhookAttemptResult{}
	if a.OK {
		h.Failures = 0
		tx.finish(&d, hubmesh.DeliveryDelivered, "", a.At)
	} else {
		h.Failures++
		if a.MaxAttempts > 0 && d.Attempts >= a.MaxAttempts {
			tx.finish(&d, hubmesh.DeliveryFailed, "", a.At)
		} else {
			tx.setDue(&d, a.NextAttempt)
			tx.putDelivery(&d)
		}
		if a.MaxFailures > 0 && h.Failures >= a.MaxFailures && !h.Disabled {
			tx.disableHook(&h, fmt.Sprintf("%d consecutive failed attempts", h.Failures), a.At)
			res.Disabled = true
		}
	}
	tx.setJSON(hookKey(h.ID), h)
	var now hubmesh.WebhookDelivery
	tx.getJSON(deliveryKey(hookID, ev), &now)
	res.State = now.State
	return res, nil
}

func (c *SetWebhookCallback) apply(tx *txn) (any, error) {
	ev, hookID, _ := splitDeliveryID(c.Delivery)
	var d hubmesh.WebhookDelivery
	if !tx.getJSON(deliveryKey(hookID, ev), &d) {
		return nil, fmt.Errorf("delivery %s: %w", c.Delivery, hubmesh.ErrNotFound)
	}
	cb := c.Callback
	d.Callback = &cb
	tx.putDelivery(&d)
	tx.releaseNext(&d, cb.State == hubmesh.CallbackSuccess, cb.At)
	return nil, nil
}

func (c *RedeliverWebhook) apply(tx *txn) (any, error) {
	ev, hookID, _ := splitDeliveryID(c.Delivery)
	var d hubmesh.WebhookDelivery
	if !tx.getJSON(deliveryKey(hookID, ev), &d) {
		return nil, fmt.Errorf("delivery %s: %w", c.Delivery, hubmesh.ErrNotFound)
	}
	h, ok := tx.hook(hookID)
	if !ok {
		return nil, fmt.Errorf("webhook %s: %w", hookID, hubmesh.ErrNotFound)
	}
	if h.Disabled {
		return nil, fmt.Errorf("redeliver %s: %w: webhook %s is disabled; enable it first", c.Delivery, hubmesh.ErrInvalid, h.Name)
	}
	if d.State == hubmesh.DeliveryPending {
		return nil, nil
	}
	d.Callback = nil
	tx.setDue(&d, c.At)
	tx.putDelivery(&d)
	return nil, nil
}

// ---- the outbox ----

// emit appends event typ of repo to the outbox, as emitEvent does.
func (tx *txn) emit(typ, repo, tag string, d digest.Digest, actor string, at time.Time) {
	tx.emitEvent(hubmesh.WebhookEvent{Type: typ, Repo: repo, Tag: tag, Digest: d, Actor: actor, At: at})
}

// emitEvent appends ev (its ID set here) to the outbox: one delivery for
// each enabled webhook of ev.Repo and of its namespace that asks for
// ev.Type, due at ev.At. It writes nothing when none does. Repository
// webhooks come first, in name order; the chained ones among them form
// the chain of this event.
func (tx *txn) emitEvent(ev hubmesh.WebhookEvent) {
	typ, repo, at := ev.Type, ev.Repo, ev.At
	var hooks []hubmesh.Webhook
	scopes := [][]byte{scope(prefixHookRepo, repo)}
	if ns := hubmesh.RepoOf(repo); ns != "" {
		scopes = append(scopes, scope(prefixHookOrg, ns))
	}
	for _, pre := range scopes {
		err := scan(tx.b, pre, nil, 0, func(_, v []byte) error {
			if h, ok := tx.hook(string(v)); ok && !h.Disabled && slices.Contains(h.Events, typ) {
				hooks = append(hooks, h)
			}
			return nil
		})
		if err != nil {
			panic(fmt.Sprintf("consensus: fsm: scan %q: %v", pre, err))
		}
	}
	if len(hooks) == 0 {
		return
	}
	ev.ID = tx.nextID()
	var out []hubmesh.WebhookDelivery
	prev := -1 // index in out of the previous chained delivery
	for i := range hooks {
		h := &hooks[i]
		if !tx.makeRoom(h) {
			h.Dropped++
			tx.setJSON(hookKey(h.ID), h)
			continue
		}
		h.Deliveries++
		tx.setJSON(hookKey(h.ID), h)
		del := hubmesh.WebhookDelivery{ID: ev.ID + "-" + h.ID, Hook: h.ID, Event: ev, State: hubmesh.DeliveryPending, NextAttempt: at}
		if h.Chain && h.Repo != "" {
			if prev >= 0 {
				del.State, del.NextAttempt, del.WaitFor = hubmesh.DeliveryWaiting, time.Time{}, out[prev].ID
				out[prev].Next = del.ID
			}
			prev = len(out)
		}
		out = append(out, del)
	}
	for i := range out {
		if out[i].State == hubmesh.DeliveryPending {
			tx.set(dueKey(out[i].NextAttempt, out[i].ID), nil)
			tx.hooksChanged = true
		}
		tx.putDelivery(&out[i])
	}
}

// nextID is the next id numbered within the entry being applied: its Raft
// index (16 hex digits) and a sequence number (4 hex digits). Event and
// build ids come from it, so they sort in log order and every replica
// derives the same ones.
func (tx *txn) nextID() string {
	tx.seq++
	return fmt.Sprintf("%016x%04x", tx.index, tx.seq)
}

// makeRoom reports whether h may take one more delivery record, deleting
// its oldest finished record when it holds MaxDeliveriesPerHook.
func (tx *txn) makeRoom(h *hubmesh.Webhook) bool {
	if h.Deliveries < MaxDeliveriesPerHook {
		return true
	}
	made := false
	tx.forDeliveries(h.ID, func(k []byte, d *hubmesh.WebhookDelivery) bool {
		if d.State == hubmesh.DeliveryDelivered || d.State == hubmesh.DeliveryFailed {
			tx.del(k)
			h.Deliveries--
			made = true
			return false
		}
		return true
	})
	return made
}

// ---- reads ----

// notifier wakes the one consumer of a kind of change (the webhook
// delivery worker, the builder), coalescing the signals. The zero value is
// ready.
type notifier struct {
	once sync.Once
	ch   chan struct{}
}

func (h *notifier) c() chan struct{} {
	h.once.Do(func() { h.ch = make(chan struct{}, 1) })
	return h.ch
}

func (h *notifier) wake() {
	select {
	case h.c() <- struct{}{}:
	default:
	}
}

// actorKey is the context key of WithActor.
type actorKey struct{}

// WithActor returns ctx carrying the name of the user on whose behalf the
// commands proposed under it act; the outbox records it as the pusher of
// an event.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// actorOf is the actor WithActor stored in ctx, or "".
func actorOf(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

// CreateWebhook creates h (h.ID set by the caller, random). It fails with
// hubmesh.ErrExists when its scope has a webhook of that name.
func (n *Node) CreateWebhook(ctx context.Context, h hubmesh.Webhook) error {
	_, err := n.Apply(ctx, &CreateWebhook{Webhook: h})
	return err
}

// UpdateWebhook changes webhook id and returns it as updated.
func (n *Node) UpdateWebhook(ctx context.Context, id string, u hubmesh.WebhookUpdate) (hubmesh.Webhook, error) {
	res, err := n.Apply(ctx, &UpdateWebhook{ID: id, Update: u})
	if err != nil {
		return hubmesh.Webhook{}, err
	}
	return resultAs[hubmesh.Webhook](TypeUpdateWebhook, res)
}

// DeleteWebhook removes webhook id and its delivery log.
func (n *Node) DeleteWebhook(ctx context.Context, id string) error {
	_, err := n.Apply(ctx, &DeleteWebhook{ID: id})
	return err
}

// RecordWebhookAttempt records the outcome of a delivery attempt. It is
// safe to retry: an attempt not newer than the recorded ones changes
// nothing.
func (n *Node) RecordWebhookAttempt(ctx context.Context, a hubmesh.WebhookAttempt) (WebhookAttemptResult, error) {
	res, err := n.Apply(ctx, &RecordWebhookAttempt{Attempt: a})
	if err != nil {
		return WebhookAttemptResult{}, err
	}
	return resultAs[WebhookAttemptResult](TypeRecordWebhookAttempt, res)
}

// SetWebhookCallback stores a receiver's callback report on delivery id.
func (n *Node) SetWebhookCallback(ctx context.Context, id string, cb hubmesh.WebhookCallback) error {
	_, err := n.Apply(ctx, &SetWebhookCallback{Delivery: id, Callback: cb})
	return err
}

// RedeliverWebhook makes delivery id pending again, due at.
func (n *Node) RedeliverWebhook(ctx context.Context, id string, at time.Time) error {
	_, err := n.Apply(ctx, &RedeliverWebhook{Delivery: id, At: at})
	return err
}

// Webhook returns webhook id (secret included), or an error wrapping
// hubmesh.ErrNotFound.
func (n *Node) Webhook(ctx context.Context, id string) (hubmesh.Webhook, error) {
	return readFresh(ctx, n, func() (hubmesh.Webhook, error) { return n.fsm.webhook(id) }, notFound)
}

func (f *stateMachine) webhook(id string) (hubmesh.Webhook, error) {
	if err := checkHookID(id); err != nil {
		return hubmesh.Webhook{}, err
	}
	return getOne[hubmesh.Webhook](f, hookKey(id), fmt.Errorf("webhook %s: %w", id, hubmesh.ErrNotFound))
}

// Webhooks lists the webhooks of repository repo, or of organization org
// when repo is empty, in name order.
func (n *Node) Webhooks(ctx context.Context, repo, org string) ([]hubmesh.Webhook, error) {
	return readFresh(ctx, n, func() ([]hubmesh.Webhook, error) { return n.fsm.webhooks(repo, org) }, emptyList)
}

func (f *stateMachine) webhooks(repo, org string) ([]hubmesh.Webhook, error) {
	pre := scope(prefixHookRepo, repo)
	if repo == "" {
		pre = scope(prefixHookOrg, org)
	}
	out := []hubmesh.Webhook{}
	err := f.readSnapshot(func(r reader) error {
		return scan(r, pre, nil, 0, func(_, v []byte) error {
			var h hubmesh.Webhook
			ok, err := readJSON(r, hookKey(string(v)), &h)
			if ok {
				out = append(out, h)
			}
			return err
		})
	})
	return out, err
}

// WebhookDeliveries lists the delivery log of webhook hook, newest first;
// p.Last is the id of the last delivery of the previous page.
func (n *Node) WebhookDeliveries(ctx context.Context, hook string, p hubmesh.Page) ([]hubmesh.WebhookDelivery, error) {
	return n.fsm.deliveries(hook, p)
}

func (f *stateMachine) deliveries(hook string, p hubmesh.Page) ([]hubmesh.WebhookDelivery, error) {
	if err := checkHookID(hook); err != nil {
		return nil, err
	}
	var all []hubmesh.WebhookDelivery
	err := f.read(func(r reader) error {
		return scan(r, scope(prefixDelivery, hook), nil, 0, func(k, v []byte) error {
			var d hubmesh.WebhookDelivery
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("corrupt value of %q: %w", k, err)
			}
			all = append(all, d)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(all)
	if p.Last != "" {
		i := slices.IndexFunc(all, func(d hubmesh.WebhookDelivery) bool { return d.ID <= p.Last })
		if i < 0 {
			i = len(all)
		}
		if i < len(all) && all[i].ID == p.Last {
			i++
		}
		all = all[i:]
	}
	if p.N > 0 && len(all) > p.N {
		all = all[:p.N]
	}
	return append([]hubmesh.WebhookDelivery{}, all...), nil
}

// WebhookDelivery returns delivery id, or an error wrapping
// hubmesh.ErrNotFound.
func (n *Node) WebhookDelivery(ctx context.Context, id string) (hubmesh.WebhookDelivery, error) {
	return readFresh(ctx, n, func() (hubmesh.WebhookDelivery, error) { return n.fsm.delivery(id) }, notFound)
}

func (f *stateMachine) delivery(id string) (hubmesh.WebhookDelivery, error) {
	ev, hook, err := splitDeliveryID(id)
	if err != nil {
		return hubmesh.WebhookDelivery{}, err
	}
	return getOne[hubmesh.WebhookDelivery](f, deliveryKey(hook, ev), fmt.Errorf("delivery %s: %w", id, hubmesh.ErrNotFound))
}

// DueWebhookDeliveries returns up to limit pending deliveries due at or
// before now, the earliest first, and when the next one not returned is
// due (zero when none is pending). It reads the local state: the leader's
// delivery worker calls it.
func (n *Node) DueWebhookDeliveries(now time.Time, limit int) ([]hubmesh.WebhookDelivery, time.Time, error) {
	return n.fsm.due(now, limit)
}

func (f *stateMachine) due(now time.Time, limit int) ([]hubmesh.WebhookDelivery, time.Time, error) {
	var (
		out  []hubmesh.WebhookDelivery
		next time.Time
	)
	cut := errors.New("cut")
	err := f.readSnapshot(func(r reader) error {
		err := scan(r, prefixHookDue, nil, 0, func(k, _ []byte) error {
			rest := k[len(prefixHookDue):]
			ts, id, ok := bytes.Cut(rest, []byte{sep})
			if !ok || len(ts) != 16 {
				return fmt.Errorf("corrupt key %q", k)
			}
			ns, err := strconv.ParseUint(string(ts), 16, 64)
			if err != nil {
				return fmt.Errorf("corrupt key %q", k)
			}
			at := time.Unix(0, int64(ns))
			if at.After(now) || len(out) >= limit {
				next = at
				return cut
			}
			ev, hook, err := splitDeliveryID(string(id))
			if err != nil {
				return err
			}
			var d hubmesh.WebhookDelivery
			if ok, err := readJSON(r, deliveryKey(hook, ev), &d); err != nil || !ok {
				return err
			}
			out = append(out, d)
			return nil
		})
		if errors.Is(err, cut) {
			return nil
		}
		return err
	})
	return out, next, err
}

// WebhookChanges signals (coalesced) that deliveries became due: an event
// was recorded, a delivery redelivered or released by a chain. One
// consumer only.
func (n *Node) WebhookChanges() <-chan struct{} { return n.fsm.hooks.c() }
