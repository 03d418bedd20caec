package hubmesh

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Webhook event types: what happened to a repository. Docker Hub sends
// only push; the others carry the same payload with their own event field.
const (
	EventPush       = "push"
	EventTagDelete  = "tag_delete"
	EventRepoCreate = "repo_create"
	EventRepoDelete = "repo_delete"
)

// Webhook payload formats.
const (
	// FormatDocker is Docker Hub's payload (callback_url, push_data,
	// repository) plus an event field.
	FormatDocker = "docker"
	// FormatCloudEvents is a CloudEvents 1.0 structured-mode JSON event
	// whose data is the Docker payload.
	FormatCloudEvents = "cloudevents"
)

// Delivery states.
const (
	// DeliveryWaiting: a chained delivery waits for the previous webhook
	// of the chain to report success through its callback.
	DeliveryWaiting = "waiting"
	// DeliveryPending: due for its next attempt at NextAttempt.
	DeliveryPending = "pending"
	// DeliveryDelivered: the receiver answered 2xx.
	DeliveryDelivered = "delivered"
	// DeliveryFailed: attempts ran out, the webhook was disabled, or the
	// previous webhook of a chain failed. Redeliver makes it pending again.
	DeliveryFailed = "failed"
)

// Callback states a receiver may report through the callback URL.
const (
	CallbackSuccess = "success"
	CallbackFailure = "failure"
	CallbackError   = "error"
)

// Webhook is a webhook of one repository (Repo) or of every repository of
// an organization (Org); exactly one of the two is set.
type Webhook struct {
	// ID is assigned by the metadata plane when the webhook is created.
	ID   string `json:"id"`
	Repo string `json:"repo,omitempty"`
	Org  string `json:"org,omitempty"`
	// Name is unique within its repository or organization.
	Name string `json:"name"`
	URL  string `json:"url"`
	// Secret keys the X-Hub-Signature-256 HMAC; empty: deliveries are
	// not signed. It is stored, never shown by the API.
	Secret string `json:"secret,omitempty"`
	// CallbackKey keys the per-delivery callback tokens; random, set by
	// the proposer.
	CallbackKey string   `json:"callback_key"`
	Events      []string `json:"events"`
	Format      string   `json:"format"`
	// Chain (repository webhooks only): the chained webhooks of a
	// repository fire in name order, each after the previous one's
	// receiver reported success through its callback URL.
	Chain    bool `json:"chain,omitempty"`
	Disabled bool `json:"disabled,omitempty"`
	// DisabledReason says why the webhook was disabled.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// Failures counts consecutive failed attempts; a success resets it.
	Failures int `json:"failures"`
	// Deliveries is how many delivery records the webhook holds (bounded).
	Deliveries int `json:"deliveries"`
	// Dropped counts events not recorded because the webhook's backlog of
	// unfinished deliveries was full.
	Dropped int       `json:"dropped,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// WebhookUpdate changes the fields of a webhook that are not nil.
type WebhookUpdate struct {
	URL      *string   `json:"url,omitempty"`
	Secret   *string   `json:"secret,omitempty"`
	Events   *[]string `json:"events,omitempty"`
	Format   *string   `json:"format,omitempty"`
	Chain    *bool     `json:"chain,omitempty"`
	Disabled *bool     `json:"disabled,omitempty"`
	At       time.Time `json:"at"`
}

// WebhookEvent is one event of the outbox: what happened, to what, by
// whom, when (the time of the command that did it).
type WebhookEvent struct {
	// ID is derived from the Raft index of the command and a sequence
	// number within it: 20 hex digits, in log order.
	ID     string        `json:"id"`
	Type   string        `json:"type"`
	Repo   string        `json:"repo"`
	Tag    string        `json:"tag,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"`
	Actor  string        `json:"actor,omitempty"`
	At     time.Time     `json:"at"`
	// Build is the build, as it stands after the change, of a build
	// event (build_queued, build_started, build_success, ...).
	Build *Build `json:"build,omitempty"`
}

// WebhookCallback is what a receiver reported through the callback URL.
type WebhookCallback struct {
	State       string    `json:"state"`
	Description string    `json:"description,omitempty"`
	Context     string    `json:"context,omitempty"`
	TargetURL   string    `json:"target_url,omitempty"`
	At          time.Time `json:"at"`
}

// WebhookDelivery is the delivery of one event to one webhook.
type WebhookDelivery struct {
	// ID is "<event id>-<webhook id>"; receivers see it in the
	// X-Hubmesh-Delivery header, the same on every attempt.
	ID    string       `json:"id"`
	Hook  string       `json:"hook"`
	Event WebhookEvent `json:"event"`
	State string       `json:"state"`
	// Attempts counts the attempts made.
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// WaitFor is the delivery of the previous webhook of a chain; Next the
	// one of the following webhook.
	WaitFor       string           `json:"wait_for,omitempty"`
	Next          string           `json:"next,omitempty"`
	LastAttempt   time.Time        `json:"last_attempt,omitzero"`
	LastStatus    string           `json:"last_status,omitempty"`
	LastCode      int              `json:"last_code,omitempty"`
	LastLatencyMs int64            `json:"last_latency_ms,omitempty"`
	LastBody      string           `json:"last_body,omitempty"`
	Callback      *WebhookCallback `json:"callback,omitempty"`
}

// WebhookAttempt is the outcome of one delivery attempt, recorded by the
// delivering node before it moves on.
type WebhookAttempt struct {
	Delivery string `json:"delivery"`
	// Attempt numbers the attempt (1 for the first); recording an attempt
	// that is not newer than the recorded ones changes nothing, so the
	// record is safe to retry.
	Attempt   int       `json:"attempt"`
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	Code      int       `json:"code,omitempty"`
	Status    string    `json:"status,omitempty"`
	LatencyMs int64     `json:"latency_ms,omitempty"`
	Body      string    `json:"body,omitempty"`
	// NextAttempt is when a failed delivery is tried again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// MaxAttempts fails the delivery after this many attempts (0: never).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// MaxFailures disables the webhook after this many consecutive
	// failures (0: never).
	MaxFailures int `json:"max_failures,omitempty"`
}
