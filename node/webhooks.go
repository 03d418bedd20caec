package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/registryapi"
)

// Webhook delivery. The FSM keeps the outbox (consensus/webhook.go); the
// leader's hookWorker POSTs each due delivery and records the outcome
// through Raft before it moves on to the next delivery of that webhook, so
// a crash after a confirmed delivery never repeats it, and an unconfirmed
// one is repeated by the next leader with the same X-Hubmesh-Delivery id.
// Only the leader delivers; a follower's worker idles, and a worker whose
// node loses the leadership stops after the attempt in flight.

// Delivery settings.
const (
	hookTimeout     = 10 * time.Second
	hookMaxResponse = 64 << 10 // bytes of a response body read
	hookBackoffMin  = 5 * time.Second
	hookBackoffMax  = time.Hour
	// hookMaxAttempts fails a delivery after this many attempts: with the
	// backoff above, about seven hours of retries.
	hookMaxAttempts = 16
	// hookRound is the most deliveries one round takes.
	hookRound = 256
	// hookParallel is how many webhooks are served at once (each one's
	// deliveries go in order, one at a time).
	hookParallel = 4
	// hookPoll bounds how long an idle worker waits before it looks
	// again (for leadership changes and missed signals).
	hookPoll = time.Second
	// hookRecordFor bounds how long a worker keeps trying to record an
	// outcome (no quorum) before it gives up the round.
	hookRecordFor = 30 * time.Second
)

// hookStore is what the worker needs from the metadata plane
// (consensus.Node).
type hookStore interface {
	IsLeader() bool
	DueWebhookDeliveries(now time.Time, limit int) ([]hubmesh.WebhookDelivery, time.Time, error)
	WebhookChanges() <-chan struct{}
	Webhook(ctx context.Context, id string) (hubmesh.Webhook, error)
	Repository(ctx context.Context, name string) (hubmesh.Repository, error)
	RecordWebhookAttempt(ctx context.Context, a hubmesh.WebhookAttempt) (consensus.WebhookAttemptResult, error)
}

// auditor takes audit events (the node's eventBuffer).
type auditor interface{ Audit(ev hubmesh.AuditEvent) }

// hookWorker delivers webhooks while its node leads.
type hookWorker struct {
	store  hookStore
	audit  auditor
	client *http.Client
	// base is the URL callbacks are sent to (this node's API).
	base string
	log  *slog.Logger
	// now and jitter are the clock and the randomness, for tests.
	now    func() time.Time
	jitter func() float64 // in [0, 1)

	maxFailures, maxAttempts int
	backoffMin, backoffMax   time.Duration
}

func newHookWorker(store hookStore, audit auditor, eg *egress, base string, maxFailures int, log *slog.Logger) *hookWorker {
	return &hookWorker{
		store: store, audit: audit, client: eg.client(hookTimeout), base: strings.TrimRight(base, "/"), log: log,
		now: time.Now, jitter: rand.Float64,
		maxFailures: maxFailures, maxAttempts: hookMaxAttempts,
		backoffMin: hookBackoffMin, backoffMax: hookBackoffMax,
	}
}

// Run delivers until ctx ends.
func (w *hookWorker) Run(ctx context.Context) error {
	changes := w.store.WebhookChanges()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := hookPoll
		if w.store.IsLeader() {
			next, err := w.round(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				w.log.Warn("webhook delivery round", "err", err)
			case !next.IsZero():
				wait = min(wait, max(next.Sub(w.now()), 0))
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-timer.C:
		}
	}
}

// round delivers what is due now and returns when the next delivery is
// due (zero: none pending; now: more are due at once).
func (w *hookWorker) round(ctx context.Context) (time.Time, error) {
	now := w.now()
	due, next, err := w.store.DueWebhookDeliveries(now, hookRound)
	if err != nil {
		return time.Time{}, err
	}
	if len(due) == hookRound {
		next = now
	}
	var order []string
	byHook := map[string][]hubmesh.WebhookDelivery{}
	for _, d := range due {
		if _, ok := byHook[d.Hook]; !ok {
			order = append(order, d.Hook)
		}
		byHook[d.Hook] = append(byHook[d.Hook], d)
	}
	sem := make(chan struct{}, hookParallel)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, hook := range order {
		sem <- struct{}{}
		wg.Add(1)
		go func(ds []hubmesh.WebhookDelivery) {
			defer func() { <-sem; wg.Done() }()
			for _, d := range ds {
				if ctx.Err() != nil || !w.store.IsLeader() {
					return
				}
				if err := w.deliver(ctx, d); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					return // the rest of this webhook waits for the next round
				}
			}
		}(byHook[hook])
	}
	wg.Wait()
	return next, first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// backoff is the delay before attempt n+1 after n failed attempts:
// exponential from backoffMin, capped at backoffMax, with jitter taking up
// to half of it off.
func (w *hookWorker) backoff(n int) time.Duration {
	d := w.backoffMax
	if n < 40 {
		d = min(w.backoffMin<<max(n-1, 0), w.backoffMax)
	}
	return d - time.Duration(w.jitter()*float64(d/2))
}

// deliver makes one attempt at d and records its outcome. It returns an
// error only when the outcome could not be recorded.
func (w *hookWorker) deliver(ctx context.Context, d hubmesh.WebhookDelivery) error {
	hook, err := w.store.Webhook(ctx, d.Hook)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return nil // deleted meanwhile, with its deliveries
	}
	if err != nil {
		return err
	}
	if hook.Disabled {
		return nil
	}
	body, ctype, err := w.payload(ctx, hook, d)
	if err != nil {
		return err
	}
	start := w.now()
	code, status, resp := w.post(ctx, hook, d, body, ctype, start)
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: the attempt is not an outcome
	}
	a := hubmesh.WebhookAttempt{
		Delivery: d.ID, Attempt: d.Attempts + 1, At: start.UTC(),
		OK: code >= 200 && code < 300, Code: code, Status: status,
		LatencyMs: max(w.now().Sub(start).Milliseconds(), 0), Body: resp,
		MaxAttempts: w.maxAttempts, MaxFailures: w.maxFailures,
	}
	if !a.OK {
		a.NextAttempt = start.Add(w.backoff(a.Attempt)).UTC()
	}
	res, err := w.record(ctx, a)
	if err != nil {
		return fmt.Errorf("record attempt %d of delivery %s: %w", a.Attempt, d.ID, err)
	}
	w.log.Debug("webhook delivery", "delivery", d.ID, "attempt", a.Attempt, "status", status, "state", res.State)
	if res.Disabled {
		target := hook.Repo
		if hook.Org != "" {
			target = hook.Org
		}
		w.log.Warn("webhook disabled after consecutive failures", "webhook", hook.Name, "target", target, "failures", w.maxFailures)
		w.audit.Audit(hubmesh.AuditEvent{
			Action: "webhook.disable", Target: target + ":" + hook.Name,
			Detail: fmt.Sprintf("disabled after %d consecutive failed deliveries; last: %s", w.maxFailures, status),
		})
	}
	return nil
}

// record proposes a, retrying while the cluster cannot take it (a is safe
// to repeat) for up to hookRecordFor.
func (w *hookWorker) record(ctx context.Context, a hubmesh.WebhookAttempt) (consensus.WebhookAttemptResult, error) {
	rctx, cancel := context.WithTimeout(ctx, hookRecordFor)
	defer cancel()
	pause := 50 * time.Millisecond
	for {
		res, err := w.store.RecordWebhookAttempt(rctx, a)
		if err == nil || !errors.Is(err, hubmesh.ErrUnavailable) && !errors.Is(err, hubmesh.ErrNotLeader) {
			return res, err
		}
		t := time.NewTimer(pause)
		select {
		case <-rctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
		pause = min(pause*2, 2*time.Second)
	}
}

// post sends body and returns the response code (0 when there was no
// response), a status line (or the error) and the start of the body.
func (w *hookWorker) post(ctx context.Context, hook hubmesh.Webhook, d hubmesh.WebhookDelivery, body []byte, ctype string, at time.Time) (int, string, string) {
	rctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, clip(err.Error(), 256), ""
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "hubmesh-webhook/1")
	req.Header.Set("X-Hubmesh-Delivery", d.ID)
	req.Header.Set("X-Hubmesh-Event", d.Event.Type)
	req.Header.Set("X-Hubmesh-Timestamp", strconv.FormatInt(at.Unix(), 10))
	if hook.Secret != "" {
		req.Header.Set("X-Hub-Signature-256", Signature(hook.Secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, clip(err.Error(), 256), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, hookMaxResponse))
	status := resp.Status
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		status += " (redirects are not followed)"
	}
	return resp.StatusCode, clip(status, 256), clip(string(b), consensus.MaxDeliveryBody)
}

// clip makes s valid text of at most n bytes (the replicated state keeps
// no NUL and no invalid UTF-8).
func clip(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Signature is the X-Hub-Signature-256 of body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Signature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// dockerPayload is Docker Hub's webhook body, plus the event.
type dockerPayload struct {
	CallbackURL string      `json:"callback_url"`
	Event       string      `json:"event"`
	PushData    pushData    `json:"push_data"`
	Repository  repoPayload `json:"repository"`
	// Build is the build of a build event (not in Docker Hub's payload).
	Build *hubmesh.Build `json:"build,omitempty"`
}

type pushData struct {
	PushedAt int64    `json:"pushed_at"`
	Pusher   string   `json:"pusher"`
	Tag      string   `json:"tag"`
	Images   []string `json:"images"`
	// Digest is the manifest digest (not in Docker Hub's payload).
	Digest digest.Digest `json:"digest,omitempty"`
}

type repoPayload struct {
	CommentCount    int    `json:"comment_count"`
	DateCreated     int64  `json:"date_created"`
	Description     string `json:"description"`
	Dockerfile      string `json:"dockerfile"`
	FullDescription string `json:"full_description"`
	IsOfficial      bool   `json:"is_official"`
	IsPrivate       bool   `json:"is_private"`
	IsTrusted       bool   `json:"is_trusted"`
	Name            string `json:"name"`
	Namespace       string `json:"namespace"`
	Owner           string `json:"owner"`
	RepoName        string `json:"repo_name"`
	RepoURL         string `json:"repo_url"`
	StarCount       int64  `json:"star_count"`
	Status          string `json:"status"`
}

// cloudEvent is a CloudEvents 1.0 event in structured JSON mode.
type cloudEvent struct {
	SpecVersion     string        `json:"specversion"`
	ID              string        `json:"id"`
	Source          string        `json:"source"`
	Type            string        `json:"type"`
	Subject         string        `json:"subject"`
	Time            time.Time     `json:"time"`
	DataContentType string        `json:"datacontenttype"`
	Data            dockerPayload `json:"data"`
}

// payload renders the body of d for hook and its content type.
func (w *hookWorker) payload(ctx context.Context, hook hubmesh.Webhook, d hubmesh.WebhookDelivery) ([]byte, string, error) {
	ev := d.Event
	ns := hubmesh.RepoOf(ev.Repo)
	name := strings.TrimPrefix(ev.Repo, ns+"/")
	repo := repoPayload{
		Name: name, Namespace: ns, Owner: ns, RepoName: ev.Repo,
		RepoURL: w.base + "/api/v1/repositories/" + ev.Repo, Status: "Active",
	}
	if r, err := w.store.Repository(ctx, ev.Repo); err == nil {
		repo.DateCreated, repo.Description, repo.FullDescription = r.Created.Unix(), r.Description, r.FullDescription
		repo.IsOfficial, repo.IsPrivate, repo.IsTrusted, repo.StarCount = r.IsOfficial, r.IsPrivate, r.IsAutomated, r.StarCount
	} else if !errors.Is(err, hubmesh.ErrNotFound) {
		return nil, "", err
	} else {
		repo.Status = "Deleted"
	}
	p := dockerPayload{
		CallbackURL: w.base + "/api/v1/callbacks/" + d.ID + "?token=" + registryapi.CallbackToken(hook.CallbackKey, d.ID),
		Event:       ev.Type,
		PushData:    pushData{PushedAt: ev.At.Unix(), Pusher: ev.Actor, Tag: ev.Tag, Images: []string{}, Digest: ev.Digest},
		Repository:  repo,
		Build:       ev.Build,
	}
	if ev.Digest != "" {
		p.PushData.Images = []string{ev.Digest.String()}
	}
	if hook.Format == hubmesh.FormatCloudEvents {
		subject := ev.Repo
		if ev.Tag != "" {
			subject += ":" + ev.Tag
		}
		b, err := json.Marshal(cloudEvent{
			SpecVersion: "1.0", ID: ev.ID, Source: w.base + "/" + ev.Repo, Type: "io.hubmesh." + ev.Type,
			Subject: subject, Time: ev.At.UTC(), DataContentType: "application/json", Data: p,
		})
		return b, "application/cloudevents+json; charset=utf-8", err
	}
	b, err := json.Marshal(p)
	return b, "application/json", err
}

// ---- egress policy ----

// blockedRanges are refused besides what netip classifies as loopback,
// private, link-local, multicast or unspecified.
var blockedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 may reach anything
}

// egress is where webhooks may go: public addresses, and the ranges of
// --webhook-allow-cidrs. Its dialer resolves the host once, checks every
// address, and connects to a checked address (so a DNS answer that changes
// between check and connect cannot point it elsewhere); redirects are not
// followed.
type egress struct {
	allow   []netip.Prefix
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// newEgress parses the allowed CIDRs.
func newEgress(cidrs []string) (*egress, error) {
	e := &egress{resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("webhook-allow-cidrs %q: %w", c, err)
		}
		e.allow = append(e.allow, p.Masked())
	}
	return e, nil
}

// permitted reports whether a webhook may connect to ip.
func (e *egress) permitted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range e.allow {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || !ip.IsValid() {
		return false
	}
	for _, p := range blockedRanges {
		if p.Contains(ip) {
			return false
		}
	}
	return ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// addrs resolves host (or parses it) and splits the result by policy.
func (e *egress) addrs(ctx context.Context, host string) (ok, refused []netip.Addr, err error) {
	var all []netip.Addr
	if ip, perr := netip.ParseAddr(strings.Trim(host, "[]")); perr == nil {
		all = []netip.Addr{ip}
	} else if all, err = e.resolve(ctx, host); err != nil {
		return nil, nil, err
	}
	for _, ip := range all {
		if e.permitted(ip) {
			ok = append(ok, ip.Unmap())
		} else {
			refused = append(refused, ip)
		}
	}
	return ok, refused, nil
}

func refusedError(host string, refused []netip.Addr) error {
	return fmt.Errorf("%w: %s is %v, an address the webhook egress policy refuses (loopback, private, link-local; --webhook-allow-cidrs opens ranges)",
		hubmesh.ErrDenied, host, refused)
}

// dial connects to a permitted address of addr's host.
func (e *egress) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ok, refused, err := e.addrs(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(ok) == 0 {
		return nil, refusedError(host, refused)
	}
	d := &net.Dialer{Timeout: hookTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		// the address actually connected to, checked once more
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !e.permitted(ap.Addr()) {
			return refusedError(address, nil)
		}
		return nil
	}}
	var last error
	for _, ip := range ok {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// checkURL refuses a webhook URL whose host is, or resolves only to,
// addresses the policy refuses. A host that does not resolve (yet) passes:
// the dialer checks again at every delivery.
func (e *egress) checkURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: webhook url %q", hubmesh.ErrInvalid, raw)
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ok, refused, err := e.addrs(rctx, u.Hostname())
	if err != nil || len(ok) > 0 || len(refused) == 0 {
		return nil
	}
	return refusedError(u.Hostname(), refused)
}

// client is an HTTP client that dials through the policy, follows no
// redirects, uses no proxy and gives up after timeout.
func (e *egress) client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            e.dial,
			TLSHandshakeTimeout:    timeout,
			ResponseHeaderTimeout:  timeout,
			MaxResponseHeaderBytes: 64 << 10,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        time.Minute,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ---- who did it ----

// withActor carries the authenticated user of an API request into the
// commands it proposes, so that webhook events name the pusher.
func withActor(ctx context.Context) context.Context {
	if a := registryapi.ActorFrom(ctx); a != "" {
		return consensus.WithActor(ctx, a)
	}
	return ctx
}

// actorManifests passes the pusher of /v2 writes on to the metadata plane.
type actorManifests struct{ registryapi.Manifests }

// PutManifest implements registryapi.Manifests.
func (m actorManifests) PutManifest(ctx context.Context, man *hubmesh.Manifest, tags []string) error {
	return m.Manifests.PutManifest(withActor(ctx), man, tags)
}

// DeleteManifest implements registryapi.Manifests.
func (m actorManifests) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	return m.Manifests.DeleteManifest(withActor(ctx), repo, d)
}

// DeleteTag implements registryapi.Manifests.
func (m actorManifests) DeleteTag(ctx context.Context, repo, tag string) error {
	return m.Manifests.DeleteTag(withActor(ctx), repo, tag)
}

// actorAccounts passes the user who creates or deletes a repository
// through the REST API on to the metadata plane.
type actorAccounts struct{ *consensus.Node }

// CreateRepository implements registryapi.Accounts.
func (a actorAccounts) CreateRepository(ctx context.Context, r hubmesh.Repository) error {
	return a.Node.CreateRepository(withActor(ctx), r)
}

// DeleteRepository implements registryapi.Accounts.
func (a actorAccounts) DeleteRepository(ctx context.Context, name string) error {
	return a.Node.DeleteRepository(withActor(ctx), name)
}
