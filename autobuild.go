package hubmesh

import "time"

// Automated builds: the settings of a repository built from a git source,
// and the record of each build. The rules themselves are interpreted by
// package build; the records live in the metadata plane (Raft).

// Build states, in the order a build passes through them. Queued, claimed,
// cloning, building and pushing are unfinished; the other three final.
const (
	BuildQueued    = "queued"
	BuildClaimed   = "claimed"
	BuildCloning   = "cloning"
	BuildBuilding  = "building"
	BuildPushing   = "pushing"
	BuildSuccess   = "success"
	BuildFailure   = "failure"
	BuildCancelled = "cancelled"
)

// BuildFinished reports whether state is final.
func BuildFinished(state string) bool {
	return state == BuildSuccess || state == BuildFailure || state == BuildCancelled
}

// What started a build (Build.Trigger).
const (
	TriggerManual  = "manual"      // API or CLI, by a user with admin permission
	TriggerURL     = "trigger_url" // the repository's trigger URL with its token
	TriggerWebhook = "webhook"     // a git host's push webhook
	TriggerPoll    = "poll"        // a builder polling the remote found a new commit
	TriggerRetry   = "retry"       // a retry of an earlier build
)

// Webhook events of builds; the payload carries the build.
const (
	EventBuildQueued    = "build_queued"
	EventBuildStarted   = "build_started"
	EventBuildSuccess   = "build_success"
	EventBuildFailure   = "build_failure"
	EventBuildCancelled = "build_cancelled"
)

// BuildRule is one build rule of a repository. It has the fields, and the
// JSON, of build.Rule, which validates and applies it.
type BuildRule struct {
	SourceType string `json:"source_type"` // "branch" or "tag"
	SourceName string `json:"source_name"` // a name, or a regex between slashes
	Tag        string `json:"tag"`         // Docker tag template
	Dockerfile string `json:"dockerfile,omitempty"`
	Context    string `json:"context,omitempty"`
	Autobuild  bool   `json:"autobuild"`
	BuildCache bool   `json:"build_cache"`
}

// BuildSource is the git repository a repository is built from, with its
// credentials. Password, SSHKey and SSHKeyPassphrase are stored but never
// shown by the API.
type BuildSource struct {
	URL                   string `json:"url"`
	Username              string `json:"username,omitempty"`
	Password              string `json:"password,omitempty"`
	SSHKey                string `json:"ssh_key,omitempty"`
	SSHKeyPassphrase      string `json:"ssh_key_passphrase,omitempty"`
	HostKeyFingerprint    string `json:"host_key_fingerprint,omitempty"`
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key,omitempty"`
}

// BuildSettings are the automated build settings of one repository.
type BuildSettings struct {
	Repo   string      `json:"repo"`
	Source BuildSource `json:"source"`
	Rules  []BuildRule `json:"rules"`
	// BuildArgs are passed to every build as --build-arg.
	BuildArgs map[string]string `json:"build_args,omitempty"`
	// AllowPushes lets users push to the repository by hand as well; off,
	// only its builds push to it (as on Docker Hub).
	AllowPushes bool `json:"allow_pushes"`
	// TriggerToken is the secret part of the repository's trigger URL;
	// WebhookSecret verifies the signatures of git hosts' push webhooks.
	// Both are set by the proposer when the settings are created.
	TriggerToken  string `json:"trigger_token,omitempty"`
	WebhookSecret string `json:"webhook_secret,omitempty"`
	// PollSeconds: builder nodes look for new commits of the autobuild
	// rules' branches and tags this often (0: no polling).
	PollSeconds int       `json:"poll_seconds,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
}

// Build is the record of one build: what to build, where it stands, and
// its outcome.
type Build struct {
	// ID is assigned by the metadata plane: 20 hex digits in log order.
	ID      string `json:"id"`
	Repo    string `json:"repo"`
	State   string `json:"state"`
	Trigger string `json:"trigger"`
	Actor   string `json:"actor,omitempty"`
	// What to build: the source ref, the commit (the one pushed when a
	// webhook said so, else the one checked out), tags, Dockerfile and
	// context, from the rule that matched.
	SourceType string   `json:"source_type"`
	SourceName string   `json:"source_name"`
	Commit     string   `json:"commit,omitempty"`
	Tags       []string `json:"tags"`
	Dockerfile string   `json:"dockerfile"`
	Context    string   `json:"context"`
	BuildCache bool     `json:"build_cache"`
	RetryOf    string   `json:"retry_of,omitempty"`
	// The lease: the builder node running it, the attempt number (claims
	// so far) and until when the lease holds unless renewed.
	Builder    string    `json:"builder,omitempty"`
	Attempt    int       `json:"attempt,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Message says why a build failed or was cancelled.
	Message string `json:"message,omitempty"`
	// Digest is the manifest digest pushed; LogDigest and LogSize name the
	// full log, kept as a blob when the build finished.
	Digest    string `json:"digest,omitempty"`
	LogDigest string `json:"log_digest,omitempty"`
	LogSize   int64  `json:"log_size,omitempty"`
	// Timings.
	Created  time.Time `json:"created"`
	Claimed  time.Time `json:"claimed,omitzero"`
	Started  time.Time `json:"started,omitzero"` // cloning began (last attempt)
	Finished time.Time `json:"finished,omitzero"`
	Updated  time.Time `json:"updated"`
}
