package registryapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hubmesh/hubmesh"
)

// Webhooks of repositories and organizations (Hub REST API):
//
//	GET/POST          /api/v1/repositories/{ns}/{name}/webhooks
//	GET/PATCH/DELETE  /api/v1/repositories/{ns}/{name}/webhooks/{hook}
//	GET               /api/v1/repositories/{ns}/{name}/webhooks/{hook}/deliveries
//	POST              /api/v1/repositories/{ns}/{name}/webhooks/{hook}/deliveries/{id}/redeliver
//	... the same under /api/v1/orgs/{org}/webhooks for organization-wide webhooks
//	POST              /api/v1/callbacks/{id}?token=...   a receiver's callback
//
// Repository webhooks need admin permission on the repository,
// organization webhooks an owner of the organization. A webhook's secret
// is stored and never shown.

// Webhooks is the webhook state (*consensus.Node).
type Webhooks interface {
	CreateWebhook(ctx context.Context, h hubmesh.Webhook) error
	UpdateWebhook(ctx context.Context, id string, u hubmesh.WebhookUpdate) (hubmesh.Webhook, error)
	DeleteWebhook(ctx context.Context, id string) error
	Webhook(ctx context.Context, id string) (hubmesh.Webhook, error)
	// Webhooks lists those of repo, or of org when repo is empty.
	Webhooks(ctx context.Context, repo, org string) ([]hubmesh.Webhook, error)
	// WebhookDeliveries lists a webhook's delivery log, newest first.
	WebhookDeliveries(ctx context.Context, hook string, p hubmesh.Page) ([]hubmesh.WebhookDelivery, error)
	WebhookDelivery(ctx context.Context, id string) (hubmesh.WebhookDelivery, error)
	RedeliverWebhook(ctx context.Context, id string, at time.Time) error
	SetWebhookCallback(ctx context.Context, id string, cb hubmesh.WebhookCallback) error
}

// CallbackToken is the token of the callback URL of delivery id of a
// webhook whose callback key is key: unguessable without the key, and
// derived, so that nothing per delivery is stored.
func CallbackToken(key, id string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// ActorFrom is the user name of the identity that authenticated the
// request ctx belongs to, or "" (anonymous, or not a request context).
func ActorFrom(ctx context.Context) string {
	id, _ := identityOf(ctx)
	return id.user
}

// webhookView is a webhook as the API shows it: no secret, no callback key.
type webhookView struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Repository     string    `json:"repository,omitempty"`
	Org            string    `json:"org,omitempty"`
	URL            string    `json:"url"`
	Events         []string  `json:"events"`
	Format         string    `json:"format"`
	Chain          bool      `json:"chain"`
	HasSecret      bool      `json:"has_secret"`
	Disabled       bool      `json:"disabled"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Failures       int       `json:"failures"`
	Deliveries     int       `json:"deliveries"`
	Dropped        int       `json:"dropped"`
	Created        time.Time `json:"created"`
	Updated        time.Time `json:"updated"`
}

func viewWebhook(h hubmesh.Webhook) webhookView {
	return webhookView{
		ID: h.ID, Name: h.Name, Repository: h.Repo, Org: h.Org, URL: h.URL, Events: nonNil(h.Events),
		Format: h.Format, Chain: h.Chain, HasSecret: h.Secret != "", Disabled: h.Disabled,
		DisabledReason: h.DisabledReason, Failures: h.Failures, Deliveries: h.Deliveries, Dropped: h.Dropped,
		Created: h.Created, Updated: h.Updated,
	}
}

// webhookRequest is the body of POST and PATCH on a webhook.
type webhookRequest struct {
	Name     *string   `json:"name"`
	URL      *string   `json:"url"`
	Secret   *string   `json:"secret"`
	Events   *[]string `json:"events"`
	Format   *string   `json:"format"`
	Chain    *bool     `json:"chain"`
	Disabled *bool     `json:"disabled"`
}

// callbackRequest is what a receiver POSTs to a callback URL (Docker Hub's
// fields).
type callbackRequest struct {
	State       string `json:"state"`
	Description string `json:"description"`
	Context     string `json:"context"`
	TargetURL   string `json:"target_url"`
}

func (h *Hub) webhookRoutes(p string) {
	for _, base := range []string{p + "/repositories/{ns}/{name}/webhooks", p + "/orgs/{org}/webhooks"} {
		h.handle("GET", base, levelUser, h.listHooks)
		h.handle("POST", base, levelUser, h.createHook)
		h.handle("GET", base+"/{hook}", levelUser, h.getHook)
		h.handle("PATCH", base+"/{hook}", levelUser, h.patchHook)
		h.handle("DELETE", base+"/{hook}", levelUser, h.deleteHook)
		h.handle("GET", base+"/{hook}/deliveries", levelUser, h.listDeliveries)
		h.handle("POST", base+"/{hook}/deliveries/{id}/redeliver", levelUser, h.redeliver)
	}
	h.handle("POST", p+"/callbacks/{id}", levelAnyone, h.callback)
}

// hookScope checks that id may manage the webhooks of the URL's repository
// or organization and returns it (one of repo, org is set).
func (h *Hub) hookScope(r *http.Request, id identity) (repo, org string, err error) {
	if h.webhooks == nil {
		return "", "", newError(codeUnavailable, "webhooks are not available on this node")
	}
	if org = r.PathValue("org"); org != "" {
		if err := h.needOrgOwner(r.Context(), id, org); err != nil {
			return "", "", err
		}
		return "", org, nil
	}
	rp, err := h.repoAdmin(r, id)
	if err != nil {
		return "", "", err
	}
	return rp.Name, "", nil
}

// namedHook loads the webhook {hook} of the URL's scope.
func (h *Hub) namedHook(r *http.Request, id identity) (hubmesh.Webhook, error) {
	repo, org, err := h.hookScope(r, id)
	if err != nil {
		return hubmesh.Webhook{}, err
	}
	name := r.PathValue("hook")
	hooks, err := h.webhooks.Webhooks(r.Context(), repo, org)
	if err != nil {
		return hubmesh.Webhook{}, err
	}
	for _, hk := range hooks {
		if hk.Name == name {
			return hk, nil
		}
	}
	return hubmesh.Webhook{}, notFound("webhook %q not found", truncate(name, 80))
}

func hookTarget(hk hubmesh.Webhook) string {
	if hk.Org != "" {
		return hk.Org + "/*:" + hk.Name
	}
	return hk.Repo + ":" + hk.Name
}

// listHooks serves GET .../webhooks.
func (h *Hub) listHooks(w http.ResponseWriter, r *http.Request, id identity) error {
	repo, org, err := h.hookScope(r, id)
	if err != nil {
		return err
	}
	hooks, err := h.webhooks.Webhooks(r.Context(), repo, org)
	if err != nil {
		return err
	}
	out := make([]webhookView, len(hooks))
	for i, hk := range hooks {
		out[i] = viewWebhook(hk)
	}
	return writeJSON(w, http.StatusOK, "application/json", listPage[webhookView]{Count: len(out), Results: out})
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// checkHookURL applies the node's egress policy to a webhook URL, when it
// has one, so that a target the policy refuses is a 400 at once rather
// than a failed delivery later.
func (h *Hub) checkHookURL(ctx context.Context, raw string) error {
	if h.hookURLCheck == nil {
		return nil
	}
	if err := h.hookURLCheck(ctx, raw); err != nil {
		if errors.Is(err, hubmesh.ErrDenied) || errors.Is(err, hubmesh.ErrInvalid) {
			return newError(codeBadRequest, "webhook url: %v", err)
		}
		return err
	}
	return nil
}

// createHook serves POST .../webhooks {name, url, secret, events, format,
// chain}: events default to push, format to docker.
func (h *Hub) createHook(w http.ResponseWriter, r *http.Request, id identity) error {
	var req webhookRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	repo, org, err := h.hookScope(r, id)
	if err != nil {
		return err
	}
	if req.Name == nil || req.URL == nil {
		return newError(codeBadRequest, "a webhook needs a name and a url")
	}
	if req.Disabled != nil {
		return newError(codeBadRequest, "a new webhook is enabled; PATCH disabled later")
	}
	if err := h.checkHookURL(r.Context(), *req.URL); err != nil {
		return err
	}
	hid, err := randomHex(8)
	if err != nil {
		return err
	}
	key, err := randomHex(16)
	if err != nil {
		return err
	}
	now := h.auth.now().UTC()
	hk := hubmesh.Webhook{
		ID: hid, Repo: repo, Org: org, Name: *req.Name, URL: *req.URL, CallbackKey: key,
		Events: []string{hubmesh.EventPush}, Format: hubmesh.FormatDocker, Created: now, Updated: now,
	}
	if req.Secret != nil {
		hk.Secret = *req.Secret
	}
	if req.Events != nil {
		hk.Events = *req.Events
	}
	if req.Format != nil {
		hk.Format = *req.Format
	}
	if req.Chain != nil {
		hk.Chain = *req.Chain
	}
	if err := h.webhooks.CreateWebhook(r.Context(), hk); err != nil {
		if errors.Is(err, hubmesh.ErrExists) {
			return &apiError{code: codeConflict, message: fmt.Sprintf("webhook %q exists", truncate(hk.Name, 80)), cause: err}
		}
		return err
	}
	h.audit(r, id, "webhook.create", hookTarget(hk), hk.URL)
	return writeJSON(w, http.StatusCreated, "application/json", viewWebhook(hk))
}

// getHook serves GET .../webhooks/{hook}.
func (h *Hub) getHook(w http.ResponseWriter, r *http.Request, id identity) error {
	hk, err := h.namedHook(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", viewWebhook(hk))
}

// patchHook serves PATCH .../webhooks/{hook} {url, secret, events, format,
// chain, disabled}.
func (h *Hub) patchHook(w http.ResponseWriter, r *http.Request, id identity) error {
	var req webhookRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	hk, err := h.namedHook(r, id)
	if err != nil {
		return err
	}
	if req.Name != nil && *req.Name != hk.Name {
		return newError(codeBadRequest, "a webhook cannot be renamed")
	}
	if req.URL != nil {
		if err := h.checkHookURL(r.Context(), *req.URL); err != nil {
			return err
		}
	}
	upd := hubmesh.WebhookUpdate{URL: req.URL, Secret: req.Secret, Events: req.Events, Format: req.Format,
		Chain: req.Chain, Disabled: req.Disabled, At: h.auth.now().UTC()}
	nh, err := h.webhooks.UpdateWebhook(r.Context(), hk.ID, upd)
	if err != nil {
		return err
	}
	h.audit(r, id, "webhook.update", hookTarget(hk), "")
	return writeJSON(w, http.StatusOK, "application/json", viewWebhook(nh))
}

// deleteHook serves DELETE .../webhooks/{hook}.
func (h *Hub) deleteHook(w http.ResponseWriter, r *http.Request, id identity) error {
	hk, err := h.namedHook(r, id)
	if err != nil {
		return err
	}
	if err := h.webhooks.DeleteWebhook(r.Context(), hk.ID); err != nil {
		return err
	}
	h.audit(r, id, "webhook.delete", hookTarget(hk), "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDeliveries serves GET .../webhooks/{hook}/deliveries: the delivery
// log, newest first.
func (h *Hub) listDeliveries(w http.ResponseWriter, r *http.Request, id identity) error {
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	hk, err := h.namedHook(r, id)
	if err != nil {
		return err
	}
	ds, more, err := fetchPage(p, func(p hubmesh.Page) ([]hubmesh.WebhookDelivery, error) {
		return h.webhooks.WebhookDeliveries(r.Context(), hk.ID, p)
	})
	if err != nil {
		return err
	}
	last := ""
	if len(ds) > 0 {
		last = ds[len(ds)-1].ID
	}
	return writePage(w, r, p, ds, more, last)
}

// redeliver serves POST .../webhooks/{hook}/deliveries/{id}/redeliver.
func (h *Hub) redeliver(w http.ResponseWriter, r *http.Request, id identity) error {
	hk, err := h.namedHook(r, id)
	if err != nil {
		return err
	}
	did := r.PathValue("id")
	d, err := h.webhooks.WebhookDelivery(r.Context(), did)
	if err != nil || d.Hook != hk.ID {
		if err == nil || errors.Is(err, hubmesh.ErrNotFound) || errors.Is(err, hubmesh.ErrInvalid) {
			return notFound("delivery %q of webhook %q not found", truncate(did, 80), hk.Name)
		}
		return err
	}
	if err := h.webhooks.RedeliverWebhook(r.Context(), did, h.auth.now().UTC()); err != nil {
		return err
	}
	h.audit(r, id, "webhook.redeliver", hookTarget(hk), did)
	if d, err = h.webhooks.WebhookDelivery(r.Context(), did); err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, "application/json", d)
}

// callback serves POST /api/v1/callbacks/{id}?token=: a receiver reports
// {state, description, context, target_url} on a delivery. The token of
// the callback_url it was sent is the only credential.
func (h *Hub) callback(w http.ResponseWriter, r *http.Request, _ identity) error {
	if h.webhooks == nil {
		return newError(codeUnavailable, "webhooks are not available on this node")
	}
	var req callbackRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	did := r.PathValue("id")
	deny := newError(codeDenied, "unknown delivery or wrong callback token")
	d, err := h.webhooks.WebhookDelivery(r.Context(), did)
	if errors.Is(err, hubmesh.ErrNotFound) || errors.Is(err, hubmesh.ErrInvalid) {
		return deny
	}
	if err != nil {
		return err
	}
	hk, err := h.webhooks.Webhook(r.Context(), d.Hook)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return deny
	}
	if err != nil {
		return err
	}
	tok := r.URL.Query().Get("token")
	if !hmac.Equal([]byte(tok), []byte(CallbackToken(hk.CallbackKey, did))) {
		return deny
	}
	cb := hubmesh.WebhookCallback{State: req.State, Description: req.Description, Context: req.Context,
		TargetURL: req.TargetURL, At: h.auth.now().UTC()}
	if err := h.webhooks.SetWebhookCallback(r.Context(), did, cb); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", cb)
}
