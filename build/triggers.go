package build

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hubmesh/hubmesh"
)

// MaxPayload bounds the body of a webhook or trigger request. GitHub caps
// its payloads at 25 MB but a push of a few commits is a few KiB; 8 MiB
// leaves room for large pushes without letting a client fill memory.
const MaxPayload = 8 << 20

// Provider names the git host that sent a webhook.
type Provider string

// Git hosts whose push webhooks ParseWebhook understands.
const (
	GitHub Provider = "github"
	Gitea  Provider = "gitea" // Gitea and Forgejo
	GitLab Provider = "gitlab"
)

// Push is a verified push of a branch or tag.
type Push struct {
	Provider   Provider
	SourceType SourceType
	SourceName string
	Commit     string // full hex object name the ref points to (a commit, or an annotated tag on GitHub/Gitea)
	CloneURL   string // as the host reported it; the build settings' source URL is what gets cloned
}

// ReadBody reads at most limit bytes of r; a longer body is an error
// wrapping hubmesh.ErrInvalid.
func ReadBody(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("body larger than %d bytes: %w", limit, hubmesh.ErrInvalid)
	}
	return b, nil
}

// ParseWebhookRequest reads the body of r (at most MaxPayload bytes) and
// calls ParseWebhook.
func ParseWebhookRequest(r *http.Request, secret []byte) (*Push, error) {
	body, err := ReadBody(r.Body, MaxPayload)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return ParseWebhook(r.Header, body, secret)
}

// ParseWebhook verifies and parses a push webhook from GitHub, Gitea,
// Forgejo or GitLab, recognised by its event header. The signature (or
// GitLab token) is checked against secret before the body is parsed; an
// empty secret, a missing or wrong signature are errors wrapping
// hubmesh.ErrDenied. A malformed body wraps hubmesh.ErrInvalid.
//
// A verified event that asks for no build — a ping, another event type, a
// deleted branch, a ref that is neither a branch nor a tag — returns
// (nil, nil): answer it with a 2xx so the host does not retry.
func ParseWebhook(h http.Header, body []byte, secret []byte) (*Push, error) {
	var p Provider
	switch {
	case h.Get("X-Gitlab-Event") != "":
		p = GitLab
	case h.Get("X-Gitea-Event") != "", h.Get("X-Forgejo-Event") != "":
		p = Gitea // checked before GitHub: Gitea also sends X-GitHub-Event
	case h.Get("X-GitHub-Event") != "":
		p = GitHub
	default:
		return nil, fmt.Errorf("webhook: no X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event or X-Gitlab-Event header: %w", hubmesh.ErrInvalid)
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("webhook: no secret configured for this repository, refusing an unverifiable %s webhook: %w", p, hubmesh.ErrDenied)
	}
	switch p {
	case GitHub:
		if err := verifyHex(h.Get("X-Hub-Signature-256"), "sha256=", secret, body); err != nil {
			return nil, fmt.Errorf("webhook: github X-Hub-Signature-256: %w", err)
		}
		return parseGitHubLike(GitHub, h.Get("X-GitHub-Event"), body)
	case Gitea:
		sig, name := h.Get("X-Forgejo-Signature"), "X-Forgejo-Signature"
		if sig == "" {
			sig, name = h.Get("X-Gitea-Signature"), "X-Gitea-Signature"
		}
		if err := verifyHex(sig, "", secret, body); err != nil {
			return nil, fmt.Errorf("webhook: gitea %s: %w", name, err)
		}
		ev := h.Get("X-Forgejo-Event")
		if ev == "" {
			ev = h.Get("X-Gitea-Event")
		}
		return parseGitHubLike(Gitea, ev, body)
	default:
		if !equalSecret(h.Get("X-Gitlab-Token"), secret) {
			return nil, fmt.Errorf("webhook: gitlab X-Gitlab-Token missing or wrong: %w", hubmesh.ErrDenied)
		}
		return parseGitLab(h.Get("X-Gitlab-Event"), body)
	}
}

// verifyHex checks prefix+hex(HMAC-SHA256(secret, body)) in constant time.
func verifyHex(sig, prefix string, secret, body []byte) error {
	if sig == "" {
		return fmt.Errorf("signature missing: %w", hubmesh.ErrDenied)
	}
	raw, ok := strings.CutPrefix(strings.TrimSpace(sig), prefix)
	if !ok {
		return fmt.Errorf("signature does not start with %q: %w", prefix, hubmesh.ErrDenied)
	}
	got, err := hex.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("signature is not hex: %w", hubmesh.ErrDenied)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return fmt.Errorf("signature does not match the body and the secret: %w", hubmesh.ErrDenied)
	}
	return nil
}

// equalSecret compares a presented token with the secret in constant time,
// hashing both first so that the comparison does not leak the length.
func equalSecret(got string, secret []byte) bool {
	if got == "" || len(secret) == 0 {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// CheckToken compares the token of a trigger URL with the repository's
// trigger secret in constant time; a mismatch wraps hubmesh.ErrDenied.
func CheckToken(got string, secret []byte) error {
	if !equalSecret(got, secret) {
		return fmt.Errorf("trigger: token missing or wrong: %w", hubmesh.ErrDenied)
	}
	return nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("body is not the expected JSON: %v: %w", err, hubmesh.ErrInvalid)
	}
	return nil
}

// parseGitHubLike parses a GitHub or Gitea push payload (Gitea copied
// GitHub's shape).
func parseGitHubLike(p Provider, event string, body []byte) (*Push, error) {
	if event != "push" {
		return nil, nil // ping, create, pull_request, ...
	}
	var v struct {
		Ref        string `json:"ref"`
		After      string `json:"after"`
		Deleted    bool   `json:"deleted"`
		Repository struct {
			CloneURL string `json:"clone_url"`
		} `json:"repository"`
	}
	if err := decode(body, &v); err != nil {
		return nil, fmt.Errorf("webhook: %s push: %w", p, err)
	}
	if v.Deleted {
		return nil, nil
	}
	return newPush(p, v.Ref, v.After, v.Repository.CloneURL)
}

func parseGitLab(event string, body []byte) (*Push, error) {
	if event != "Push Hook" && event != "Tag Push Hook" {
		return nil, nil
	}
	var v struct {
		ObjectKind  string  `json:"object_kind"`
		Ref         string  `json:"ref"`
		CheckoutSHA *string `json:"checkout_sha"`
		Project     struct {
			GitHTTPURL string `json:"git_http_url"`
		} `json:"project"`
		Repository struct {
			GitHTTPURL string `json:"git_http_url"`
		} `json:"repository"`
	}
	if err := decode(body, &v); err != nil {
		return nil, fmt.Errorf("webhook: gitlab push: %w", err)
	}
	if v.CheckoutSHA == nil || *v.CheckoutSHA == "" {
		return nil, nil // branch or tag deleted: checkout_sha is null
	}
	url := v.Project.GitHTTPURL
	if url == "" {
		url = v.Repository.GitHTTPURL
	}
	return newPush(GitLab, v.Ref, *v.CheckoutSHA, url)
}

func newPush(p Provider, ref, commit, cloneURL string) (*Push, error) {
	var st SourceType
	var name string
	if n, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		st, name = SourceBranch, n
	} else if n, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		st, name = SourceTag, n
	} else if ref == "" {
		return nil, fmt.Errorf("webhook: %s push without ref: %w", p, hubmesh.ErrInvalid)
	} else {
		return nil, nil // refs/notes/..., refs/pull/...: nothing to build
	}
	if err := checkRefName(name); err != nil {
		return nil, fmt.Errorf("webhook: %s push: %w", p, err)
	}
	if !isObjectName(commit) {
		return nil, fmt.Errorf("webhook: %s push: commit %q is not a hex object name: %w", p, commit, hubmesh.ErrInvalid)
	}
	if isZero(commit) {
		return nil, nil // deletion
	}
	return &Push{Provider: p, SourceType: st, SourceName: name, Commit: strings.ToLower(commit), CloneURL: cloneURL}, nil
}

// isObjectName reports whether s is a full SHA-1 or SHA-256 hex name.
func isObjectName(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func isZero(s string) bool { return strings.Trim(s, "0") == "" }

// TriggerRequest is a build request from a trigger URL, the API or the CLI.
// Exactly one form is set: a source (SourceType and SourceName), a
// DockerTag, or All. See Plan for what each builds.
type TriggerRequest struct {
	SourceType SourceType
	SourceName string
	DockerTag  string
	All        bool
}

// String describes the request for messages.
func (q TriggerRequest) String() string {
	switch {
	case q.SourceName != "":
		return fmt.Sprintf("%s %q", q.SourceType, q.SourceName)
	case q.DockerTag != "":
		return fmt.Sprintf("docker tag %q", q.DockerTag)
	default:
		return "all rules"
	}
}

// ParseTrigger parses the body of a Docker Hub trigger URL request:
// {"build": true}, {"source_type": "Branch"|"Tag", "source_name": "..."} or
// {"docker_tag": "..."}. An empty body means {"build": true}, as Docker Hub
// accepted a bare POST. Errors wrap hubmesh.ErrInvalid.
func ParseTrigger(body []byte) (TriggerRequest, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return TriggerRequest{All: true}, nil
	}
	var v struct {
		Build      *bool   `json:"build"`
		SourceType *string `json:"source_type"`
		SourceName *string `json:"source_name"`
		DockerTag  *string `json:"docker_tag"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(&v); err != nil {
		return TriggerRequest{}, fmt.Errorf("trigger: body: want {\"build\": true}, {\"source_type\", \"source_name\"} or {\"docker_tag\"}: %v: %w", err, hubmesh.ErrInvalid)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return TriggerRequest{}, fmt.Errorf("trigger: body: trailing data after the JSON object: %w", hubmesh.ErrInvalid)
	}
	switch {
	case v.SourceType != nil || v.SourceName != nil:
		if v.SourceType == nil || v.SourceName == nil || v.DockerTag != nil {
			return TriggerRequest{}, fmt.Errorf("trigger: source_type and source_name go together, without docker_tag: %w", hubmesh.ErrInvalid)
		}
		st, err := ParseSourceType(*v.SourceType)
		if err != nil {
			return TriggerRequest{}, fmt.Errorf("trigger: %w", err)
		}
		if err := checkRefName(*v.SourceName); err != nil {
			return TriggerRequest{}, fmt.Errorf("trigger: source_name: %w", err)
		}
		return TriggerRequest{SourceType: st, SourceName: *v.SourceName}, nil
	case v.DockerTag != nil:
		if !ValidTag(*v.DockerTag) {
			return TriggerRequest{}, fmt.Errorf("trigger: docker_tag %q is not a valid tag: %w", *v.DockerTag, hubmesh.ErrInvalid)
		}
		return TriggerRequest{DockerTag: *v.DockerTag}, nil
	case v.Build != nil && *v.Build:
		return TriggerRequest{All: true}, nil
	}
	return TriggerRequest{}, fmt.Errorf("trigger: body asks for nothing: want {\"build\": true}, {\"source_type\", \"source_name\"} or {\"docker_tag\"}: %w", hubmesh.ErrInvalid)
}
