package registryapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/build"
)

// Automated builds of a repository (Hub REST API, issue 7):
//
//	GET/PUT/DELETE /api/v1/repositories/{ns}/{name}/build-settings     admin
//	POST           /api/v1/repositories/{ns}/{name}/builds              admin: manual trigger
//	GET            /api/v1/repositories/{ns}/{name}/builds              read: history, newest first
//	GET            /api/v1/repositories/{ns}/{name}/builds/{id}         read
//	GET            /api/v1/repositories/{ns}/{name}/builds/{id}/logs    read: text, ?follow=true&offset=N
//	POST           /api/v1/repositories/{ns}/{name}/builds/{id}/cancel  admin
//	POST           /api/v1/repositories/{ns}/{name}/builds/{id}/retry   admin
//	POST           /api/v1/repositories/{ns}/{name}/trigger/{token}     no auth: the trigger URL
//	POST           /api/v1/repositories/{ns}/{name}/builds/webhook      no auth: git host push webhooks
//
// The source's password, deploy key and passphrase are stored and never
// shown. The trigger URL and the webhook secret are shown to the
// repository's administrators only (they configure the git host with
// them). The two routes without auth answer one 403 for a wrong token or
// signature and for a repository without build settings, so that they
// tell nobody which repositories exist.

// Builds is the automated build state (node's adapter over
// *consensus.Node, plus the build logs).
type Builds interface {
	BuildSettingsReader
	SetBuildSettings(ctx context.Context, s hubmesh.BuildSettings) error
	DeleteBuildSettings(ctx context.Context, repo string) error
	// QueueBuilds queues 1..16 builds and returns them with their ids.
	QueueBuilds(ctx context.Context, b []hubmesh.Build) ([]hubmesh.Build, error)
	Build(ctx context.Context, id string) (hubmesh.Build, error)
	// Builds lists the builds of repo, newest first; p.Last is the id of
	// the last build of the previous page.
	Builds(ctx context.Context, repo string, p hubmesh.Page) ([]hubmesh.Build, error)
	CancelBuild(ctx context.Context, id, actor string, at time.Time) (hubmesh.Build, error)
	// BuildLog writes build b's log from byte offset on to w; with follow
	// it keeps writing, flushing as it goes, until the build finishes or
	// ctx ends. ErrNotFound when no log exists (yet).
	BuildLog(ctx context.Context, b hubmesh.Build, offset int64, follow bool, w io.Writer) error
}

// BuildSettingsReader reads the automated build settings of a repository;
// ErrNotFound when it has none. Access control uses it to refuse manual
// pushes (AuthConfig.Builds).
type BuildSettingsReader interface {
	BuildSettings(ctx context.Context, repo string) (hubmesh.BuildSettings, error)
}

// Bounds of build settings, as the metadata plane enforces them too, and
// of the requests of these routes.
const (
	maxBuildRules        = 25
	maxBuildSourceURL    = 2048
	maxBuildArgs         = 64
	maxBuildArgLen       = 4096
	maxBuildSecretLen    = 16 << 10 // a password or an ssh key in PEM
	minWebhookSecretLen  = 16
	maxWebhookSecretLen  = 256
	minPollSeconds       = 30
	maxPollSeconds       = 7 * 24 * 3600
	maxBuildSettingsBody = 1 << 20
	maxTriggerBody       = 64 << 10
)

// commitRE is a full git object name (SHA-1 or SHA-256).
var commitRE = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)

// buildSourceView is a build source as the API shows it: no credentials.
type buildSourceView struct {
	URL                   string `json:"url"`
	Username              string `json:"username,omitempty"`
	HasPassword           bool   `json:"has_password"`
	HasSSHKey             bool   `json:"has_ssh_key"`
	HasSSHKeyPassphrase   bool   `json:"has_ssh_key_passphrase"`
	HostKeyFingerprint    string `json:"host_key_fingerprint,omitempty"`
	InsecureIgnoreHostKey bool   `json:"insecure_ignore_host_key"`
}

// buildSettingsView is what GET and PUT on build-settings answer (to the
// repository's administrators only).
type buildSettingsView struct {
	Repository  string              `json:"repository"`
	Source      buildSourceView     `json:"source"`
	Rules       []hubmesh.BuildRule `json:"rules"`
	BuildArgs   map[string]string   `json:"build_args"`
	AllowPushes bool                `json:"allow_pushes"`
	PollSeconds int                 `json:"poll_seconds"`
	// TriggerURL builds on a POST (Docker Hub bodies); its last segment
	// is the secret.
	TriggerURL string `json:"trigger_url"`
	// WebhookURL receives the push webhooks of GitHub, Gitea, Forgejo and
	// GitLab, signed with WebhookSecret.
	WebhookURL    string    `json:"webhook_url"`
	WebhookSecret string    `json:"webhook_secret"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
}

func viewBuildSettings(r *http.Request, s hubmesh.BuildSettings) buildSettingsView {
	base := baseURL(r) + "/api/v1/repositories/" + s.Repo
	args := s.BuildArgs
	if args == nil {
		args = map[string]string{}
	}
	rules := s.Rules
	if rules == nil {
		rules = []hubmesh.BuildRule{}
	}
	return buildSettingsView{
		Repository: s.Repo,
		Source: buildSourceView{
			URL: s.Source.URL, Username: s.Source.Username, HasPassword: s.Source.Password != "",
			HasSSHKey: s.Source.SSHKey != "", HasSSHKeyPassphrase: s.Source.SSHKeyPassphrase != "",
			HostKeyFingerprint: s.Source.HostKeyFingerprint, InsecureIgnoreHostKey: s.Source.InsecureIgnoreHostKey,
		},
		Rules: rules, BuildArgs: args, AllowPushes: s.AllowPushes, PollSeconds: s.PollSeconds,
		TriggerURL: base + "/trigger/" + s.TriggerToken, WebhookURL: base + "/builds/webhook",
		WebhookSecret: s.WebhookSecret, Created: s.Created, Updated: s.Updated,
	}
}

// buildSourceRequest is the source of PUT build-settings. A credential
// left out (null) keeps the stored one as long as the URL is unchanged;
// "" removes it.
type buildSourceRequest struct {
	URL                   string  `json:"url"`
	Username              string  `json:"username"`
	Password              *string `json:"password"`
	SSHKey                *string `json:"ssh_key"`
	SSHKeyPassphrase      *string `json:"ssh_key_passphrase"`
	HostKeyFingerprint    string  `json:"host_key_fingerprint"`
	InsecureIgnoreHostKey bool    `json:"insecure_ignore_host_key"`
}

// buildRuleRequest is a rule of PUT build-settings: autobuild and
// build_cache default to true, as on Docker Hub.
type buildRuleRequest struct {
	SourceType string `json:"source_type"`
	SourceName string `json:"source_name"`
	Tag        string `json:"tag"`
	Dockerfile string `json:"dockerfile"`
	Context    string `json:"context"`
	Autobuild  *bool  `json:"autobuild"`
	BuildCache *bool  `json:"build_cache"`
}

// buildSettingsRequest is the body of PUT build-settings: the whole
// settings, but for the secrets kept when left out.
type buildSettingsRequest struct {
	Source      *buildSourceRequest `json:"source"`
	Rules       []buildRuleRequest  `json:"rules"`
	BuildArgs   map[string]string   `json:"build_args"`
	AllowPushes bool                `json:"allow_pushes"`
	PollSeconds int                 `json:"poll_seconds"`
	// WebhookSecret sets the webhook secret (at least 16 characters);
	// left out, the stored one is kept, or a random one made.
	WebhookSecret           *string `json:"webhook_secret"`
	RegenerateTriggerToken  bool    `json:"regenerate_trigger_token"`
	RegenerateWebhookSecret bool    `json:"regenerate_webhook_secret"`
}

// buildTriggerRequest is the body of a manual trigger: Docker Hub's
// trigger bodies, and optionally the commit to build.
type buildTriggerRequest struct {
	Build      *bool   `json:"build"`
	SourceType *string `json:"source_type"`
	SourceName *string `json:"source_name"`
	DockerTag  *string `json:"docker_tag"`
	Commit     string  `json:"commit"`
}

// buildsQueued answers a trigger: the builds queued (none for a push no
// rule builds).
type buildsQueued struct {
	Builds []hubmesh.Build `json:"builds"`
}

// buildPage is one page of a repository's build history; Next is the
// last= of the next page, "" on the last page.
type buildPage struct {
	Count   int             `json:"count"`
	Results []hubmesh.Build `json:"results"`
	Next    string          `json:"next"`
}

func (h *Hub) buildRoutes(p string) {
	base := p + "/repositories/{ns}/{name}"
	h.handle("GET", base+"/build-settings", levelUser, h.getBuildSettings)
	h.handle("PUT", base+"/build-settings", levelUser, h.putBuildSettings)
	h.handle("DELETE", base+"/build-settings", levelUser, h.deleteBuildSettings)
	h.handle("GET", base+"/builds", levelAnyone, h.listBuilds)
	h.handle("POST", base+"/builds", levelUser, h.triggerBuild)
	h.handle("GET", base+"/builds/{id}", levelAnyone, h.getBuild)
	h.handle("GET", base+"/builds/{id}/logs", levelAnyone, h.buildLogs)
	h.handle("POST", base+"/builds/{id}/cancel", levelUser, h.cancelBuild)
	h.handle("POST", base+"/builds/{id}/retry", levelUser, h.retryBuild)
	h.handle("POST", base+"/builds/webhook", levelAnyone, h.buildWebhook)
	h.handle("POST", base+"/trigger/{token}", levelAnyone, h.buildTrigger)
}

var errNoBuilds = newError(codeUnavailable, "automated builds are not available on this node")

// buildsAdmin checks that id administers the URL's repository.
func (h *Hub) buildsAdmin(r *http.Request, id identity) (string, error) {
	if h.builds == nil {
		return "", errNoBuilds
	}
	repo, err := h.repoAdmin(r, id)
	if err != nil {
		return "", err
	}
	return repo.Name, nil
}

// buildsReader checks that id may read the URL's repository; one it may
// not see is a 404, as if it did not exist.
func (h *Hub) buildsReader(r *http.Request, id identity) (string, error) {
	if h.builds == nil {
		return "", errNoBuilds
	}
	name, err := repoName(r)
	if err != nil {
		return "", err
	}
	repo, _, err := h.repository(r.Context(), id, name)
	if err != nil {
		return "", err
	}
	return repo.Name, nil
}

// settingsOf loads the build settings of repo; none is a 400 that says
// what to do.
func (h *Hub) settingsOf(ctx context.Context, repo string) (hubmesh.BuildSettings, error) {
	s, err := h.builds.BuildSettings(ctx, repo)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return s, newError(codeBadRequest, "repository %s has no build settings: PUT them first", repo)
	}
	return s, err
}

// namedBuild loads the build {id} of repo.
func (h *Hub) namedBuild(r *http.Request, repo string) (hubmesh.Build, error) {
	bid := r.PathValue("id")
	b, err := h.builds.Build(r.Context(), bid)
	if err == nil && b.Repo != repo || errors.Is(err, hubmesh.ErrNotFound) || errors.Is(err, hubmesh.ErrInvalid) {
		return hubmesh.Build{}, notFound("build %q of %s not found", truncate(bid, 80), repo)
	}
	return b, err
}

// badRequest is a 400 with the message of a domain error wrapping
// ErrInvalid, without the sentinel's own word at the end.
func badRequest(err error) error {
	msg := strings.TrimSuffix(err.Error(), ": "+hubmesh.ErrInvalid.Error())
	return &apiError{code: codeBadRequest, message: msg, cause: err}
}

// readBuildJSON decodes a bounded JSON body strictly; an empty body is {}.
func readBuildJSON(r *http.Request, limit int64, v any) ([]byte, error) {
	body, err := build.ReadBody(r.Body, limit)
	if err != nil {
		if errors.Is(err, hubmesh.ErrInvalid) {
			return nil, badRequest(fmt.Errorf("request %w", err))
		}
		return nil, newError(codeBadRequest, "reading request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return body, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, newError(codeBadRequest, "request body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, newError(codeBadRequest, "request body: trailing data after the JSON object")
	}
	return body, nil
}

// getBuildSettings serves GET .../build-settings.
func (h *Hub) getBuildSettings(w http.ResponseWriter, r *http.Request, id identity) error {
	repo, err := h.buildsAdmin(r, id)
	if err != nil {
		return err
	}
	s, err := h.builds.BuildSettings(r.Context(), repo)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return notFound("repository %s has no build settings", repo)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", viewBuildSettings(r, s))
}

// checkBuildSettings validates the parts of a request that need no stored
// state and returns the rules, normalized.
func checkBuildSettings(req buildSettingsRequest) ([]hubmesh.BuildRule, error) {
	if req.Source == nil || strings.TrimSpace(req.Source.URL) == "" {
		return nil, newError(codeBadRequest, "build settings need a source with a url")
	}
	if len(req.Source.URL) > maxBuildSourceURL {
		return nil, newError(codeBadRequest, "source url is longer than %d bytes", maxBuildSourceURL)
	}
	for _, s := range []*string{req.Source.Password, req.Source.SSHKey, req.Source.SSHKeyPassphrase} {
		if s != nil && len(*s) > maxBuildSecretLen {
			return nil, newError(codeBadRequest, "source credentials are longer than %d bytes", maxBuildSecretLen)
		}
	}
	if len(req.Rules) == 0 {
		return nil, newError(codeBadRequest, "build settings need at least one rule, e.g. {\"source_type\":\"branch\",\"source_name\":\"main\",\"tag\":\"latest\"}")
	}
	if len(req.Rules) > maxBuildRules {
		return nil, newError(codeBadRequest, "%d build rules, at most %d are allowed", len(req.Rules), maxBuildRules)
	}
	in := make([]hubmesh.BuildRule, len(req.Rules))
	for i, rr := range req.Rules {
		in[i] = hubmesh.BuildRule{
			SourceType: rr.SourceType, SourceName: rr.SourceName, Tag: rr.Tag, Dockerfile: rr.Dockerfile,
			Context: rr.Context, Autobuild: rr.Autobuild == nil || *rr.Autobuild, BuildCache: rr.BuildCache == nil || *rr.BuildCache,
		}
	}
	rules, err := build.RulesOf(in)
	if err != nil {
		return nil, badRequest(err)
	}
	out := make([]hubmesh.BuildRule, len(rules))
	for i, r := range rules {
		out[i] = build.RecordOf(r)
	}
	if len(req.BuildArgs) > maxBuildArgs {
		return nil, newError(codeBadRequest, "%d build args, at most %d are allowed", len(req.BuildArgs), maxBuildArgs)
	}
	for k, v := range req.BuildArgs {
		if k == "" || strings.ContainsAny(k, "= \t\r\n\x00") {
			return nil, newError(codeBadRequest, "build arg name %q: want a non-empty name without '=', spaces or control characters", truncate(k, 80))
		}
		if len(k) > maxBuildArgLen || len(v) > maxBuildArgLen {
			return nil, newError(codeBadRequest, "build arg %q: name and value are at most %d bytes each", truncate(k, 80), maxBuildArgLen)
		}
	}
	if req.PollSeconds != 0 && (req.PollSeconds < minPollSeconds || req.PollSeconds > maxPollSeconds) {
		return nil, newError(codeBadRequest, "poll_seconds must be 0 (no polling) or between %d and %d", minPollSeconds, maxPollSeconds)
	}
	if s := req.WebhookSecret; s != nil && (len(*s) < minWebhookSecretLen || len(*s) > maxWebhookSecretLen) {
		return nil, newError(codeBadRequest, "webhook_secret must be %d to %d characters long", minWebhookSecretLen, maxWebhookSecretLen)
	}
	return out, nil
}

// putBuildSettings serves PUT .../build-settings: create or replace the
// settings. Omitted credentials keep the stored ones while the source URL
// stays the same; new settings get a random trigger token and webhook
// secret.
func (h *Hub) putBuildSettings(w http.ResponseWriter, r *http.Request, id identity) error {
	var req buildSettingsRequest
	if _, err := readBuildJSON(r, maxBuildSettingsBody, &req); err != nil {
		return err
	}
	rules, err := checkBuildSettings(req)
	if err != nil {
		return err
	}
	repo, err := h.buildsAdmin(r, id)
	if err != nil {
		return err
	}
	ctx := r.Context()
	old, err := h.builds.BuildSettings(ctx, repo)
	exists := err == nil
	if err != nil && !errors.Is(err, hubmesh.ErrNotFound) {
		return err
	}
	src := hubmesh.BuildSource{
		URL: strings.TrimSpace(req.Source.URL), Username: req.Source.Username,
		HostKeyFingerprint: req.Source.HostKeyFingerprint, InsecureIgnoreHostKey: req.Source.InsecureIgnoreHostKey,
	}
	sameURL := exists && old.Source.URL == src.URL
	keep := func(given *string, stored string) string {
		switch {
		case given != nil:
			return *given
		case sameURL:
			return stored
		}
		return ""
	}
	src.Password = keep(req.Source.Password, old.Source.Password)
	src.SSHKey = keep(req.Source.SSHKey, old.Source.SSHKey)
	src.SSHKeyPassphrase = keep(req.Source.SSHKeyPassphrase, old.Source.SSHKeyPassphrase)
	bs := build.SourceOf(src)
	if err := bs.Validate(); err != nil {
		return badRequest(err)
	}
	if bs.IsLocal() && !id.admin {
		return newError(codeDenied, "only site administrators may build from a path on the builder's disk (%s)", truncate(src.URL, 200))
	}
	// The builder fetches the source from inside the node: a source on a
	// loopback, private or link-local address would let a repository admin
	// probe the node's network, so the webhook egress policy applies (site
	// administrators are trusted with it, as with local paths).
	if host := bs.Host(); host != "" && !id.admin && h.hookURLCheck != nil {
		if err := h.hookURLCheck(r.Context(), "https://"+net.JoinHostPort(host, "443")+"/"); err != nil {
			return newError(codeDenied, "build source %s: %v", truncate(host, 200), err)
		}
	}
	now := h.auth.now().UTC()
	s := hubmesh.BuildSettings{
		Repo: repo, Source: src, Rules: rules, BuildArgs: req.BuildArgs, AllowPushes: req.AllowPushes,
		PollSeconds: req.PollSeconds, TriggerToken: old.TriggerToken, WebhookSecret: old.WebhookSecret,
		Created: now, Updated: now,
	}
	if exists {
		s.Created = old.Created
	}
	if len(s.BuildArgs) == 0 {
		s.BuildArgs = nil
	}
	if s.TriggerToken == "" || req.RegenerateTriggerToken {
		if s.TriggerToken, err = randomHex(16); err != nil {
			return err
		}
	}
	switch {
	case req.WebhookSecret != nil:
		s.WebhookSecret = *req.WebhookSecret
	case s.WebhookSecret == "" || req.RegenerateWebhookSecret:
		if s.WebhookSecret, err = randomHex(16); err != nil {
			return err
		}
	}
	if err := h.builds.SetBuildSettings(ctx, s); err != nil {
		if errors.Is(err, hubmesh.ErrInvalid) {
			return badRequest(err)
		}
		if errors.Is(err, hubmesh.ErrNotFound) {
			return repoUnknown(repo)
		}
		return err
	}
	h.audit(r, id, "build.configure", repo, fmt.Sprintf("source=%s rules=%d allow_pushes=%t", truncate(src.URL, 200), len(rules), s.AllowPushes))
	return writeJSON(w, http.StatusOK, "application/json", viewBuildSettings(r, s))
}

// deleteBuildSettings serves DELETE .../build-settings; the build history
// stays.
func (h *Hub) deleteBuildSettings(w http.ResponseWriter, r *http.Request, id identity) error {
	repo, err := h.buildsAdmin(r, id)
	if err != nil {
		return err
	}
	if err := h.builds.DeleteBuildSettings(r.Context(), repo); err != nil {
		if errors.Is(err, hubmesh.ErrNotFound) {
			return notFound("repository %s has no build settings", repo)
		}
		return err
	}
	h.audit(r, id, "build.unconfigure", repo, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// planBuilds turns the targets of a trigger into queued builds (in
// batches of what one command takes). tmpl carries the trigger, the actor
// and the commit.
func (h *Hub) planBuilds(ctx context.Context, repo string, targets []build.Target, tmpl hubmesh.Build) ([]hubmesh.Build, error) {
	now := h.auth.now().UTC()
	all := make([]hubmesh.Build, 0, len(targets))
	for _, t := range targets {
		b := tmpl
		b.Repo, b.Created = repo, now
		b.SourceType, b.SourceName, b.Tags = string(t.SourceType), t.SourceName, t.Tags
		b.Dockerfile, b.Context, b.BuildCache = t.Dockerfile, t.Context, t.BuildCache
		all = append(all, b)
	}
	// One command for all: a trigger queues every build or none.
	out, err := h.builds.QueueBuilds(ctx, all)
	if errors.Is(err, hubmesh.ErrInvalid) {
		return nil, badRequest(err)
	}
	return out, err
}

// plan applies a trigger request to the rules of s; no matching rule is a
// 400 that says so.
func plan(s hubmesh.BuildSettings, req build.TriggerRequest) ([]build.Target, error) {
	rules, err := build.RulesOf(s.Rules)
	if err != nil {
		return nil, fmt.Errorf("stored build rules of %s: %w", s.Repo, err)
	}
	targets, err := build.Plan(rules, req)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return nil, &apiError{code: codeBadRequest, message: strings.TrimSuffix(err.Error(), ": "+hubmesh.ErrNotFound.Error()), cause: err}
	}
	return targets, err
}

// triggerBuild serves POST .../builds: a manual build. The body is one of
// Docker Hub's trigger bodies ({"build": true} or {} for every rule with a
// literal source name, {"source_type","source_name"}, {"docker_tag"}),
// with an optional "commit" beside a source. Autobuild is not required.
func (h *Hub) triggerBuild(w http.ResponseWriter, r *http.Request, id identity) error {
	var tr buildTriggerRequest
	body, err := readBuildJSON(r, maxTriggerBody, &tr)
	if err != nil {
		return err
	}
	if tr.Commit != "" {
		if !commitRE.MatchString(tr.Commit) {
			return newError(codeBadRequest, "commit %q: want a full hex object name (40 or 64 lower-case hex digits)", truncate(tr.Commit, 80))
		}
		if tr.SourceName == nil {
			return newError(codeBadRequest, "commit needs source_type and source_name: the branch or tag it is on")
		}
	}
	req := build.TriggerRequest{All: true} // {} as {"build": true}
	if tr.Build != nil || tr.SourceType != nil || tr.SourceName != nil || tr.DockerTag != nil {
		if req, err = build.ParseTrigger(body); err != nil {
			return badRequest(err)
		}
	}
	repo, err := h.buildsAdmin(r, id)
	if err != nil {
		return err
	}
	ctx := r.Context()
	s, err := h.settingsOf(ctx, repo)
	if err != nil {
		return err
	}
	targets, err := plan(s, req)
	if err != nil {
		return err
	}
	queued, err := h.planBuilds(ctx, repo, targets, hubmesh.Build{Trigger: hubmesh.TriggerManual, Actor: id.user, Commit: tr.Commit})
	if err != nil {
		return err
	}
	h.audit(r, id, "build.trigger", repo, fmt.Sprintf("%s: %d builds", req, len(queued)))
	return writeJSON(w, http.StatusAccepted, "application/json", buildsQueued{Builds: queued})
}

// listBuilds serves GET .../builds?page_size=&last=: newest first.
func (h *Hub) listBuilds(w http.ResponseWriter, r *http.Request, id identity) error {
	p, err := pageRequest(r)
	if err != nil {
		return err
	}
	repo, err := h.buildsReader(r, id)
	if err != nil {
		return err
	}
	bs, more, err := fetchPage(p, func(p hubmesh.Page) ([]hubmesh.Build, error) {
		return h.builds.Builds(r.Context(), repo, p)
	})
	if err != nil {
		return err
	}
	out := buildPage{Count: len(bs), Results: bs}
	if out.Results == nil {
		out.Results = []hubmesh.Build{}
	}
	if more {
		out.Next = bs[len(bs)-1].ID
	}
	return writeJSON(w, http.StatusOK, "application/json", out)
}

// getBuild serves GET .../builds/{id}.
func (h *Hub) getBuild(w http.ResponseWriter, r *http.Request, id identity) error {
	repo, err := h.buildsReader(r, id)
	if err != nil {
		return err
	}
	b, err := h.namedBuild(r, repo)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, "application/json", b)
}

// logWriter sends a build log as it comes: the headers with the first
// write (or at once when following), a flush after every write.
type logWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *logWriter) start() {
	if l.started {
		return
	}
	l.started = true
	h := l.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	l.w.WriteHeader(http.StatusOK)
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.start()
	n, err := l.w.Write(p)
	if err == nil {
		err = http.NewResponseController(l.w).Flush()
	}
	return n, err
}

// buildLogs serves GET .../builds/{id}/logs[?follow=true&offset=N]: the
// log as text. Following, the response starts at once and ends when the
// build finishes; otherwise a build without a log yet is a 404.
func (h *Hub) buildLogs(w http.ResponseWriter, r *http.Request, id identity) error {
	q := r.URL.Query()
	follow := false
	switch v := q.Get("follow"); v {
	case "", "false", "0":
	case "true", "1":
		follow = r.Method != http.MethodHead
	default:
		return newError(codeBadRequest, "follow must be true or false, got %q", truncate(v, 20))
	}
	var offset int64
	if v := q.Get("offset"); v != "" {
		n, ok := parseDecimal(v)
		if !ok || n < 0 {
			return newError(codeBadRequest, "offset must be a byte offset (a non-negative integer), got %q", truncate(v, 40))
		}
		offset = n
	}
	repo, err := h.buildsReader(r, id)
	if err != nil {
		return err
	}
	b, err := h.namedBuild(r, repo)
	if err != nil {
		return err
	}
	lw := &logWriter{w: w}
	if follow {
		lw.start()
		_ = http.NewResponseController(w).Flush()
	}
	err = h.builds.BuildLog(r.Context(), b, offset, follow, lw)
	switch {
	case err == nil:
		lw.start() // an empty log is an empty 200
		return nil
	case !lw.started && errors.Is(err, hubmesh.ErrNotFound):
		return notFound("build %s has no log yet (%s)", b.ID, b.State)
	}
	return err
}

// adminBuild loads the build {id} of a repository id administers, for
// cancel and retry.
func (h *Hub) adminBuild(r *http.Request, id identity) (hubmesh.Build, error) {
	repo, err := h.buildsAdmin(r, id)
	if err != nil {
		return hubmesh.Build{}, err
	}
	return h.namedBuild(r, repo)
}

// cancelBuild serves POST .../builds/{id}/cancel: a finished build is a
// 409.
func (h *Hub) cancelBuild(w http.ResponseWriter, r *http.Request, id identity) error {
	b, err := h.adminBuild(r, id)
	if err != nil {
		return err
	}
	if hubmesh.BuildFinished(b.State) {
		return newError(codeConflict, "build %s already %s", b.ID, b.State)
	}
	nb, err := h.builds.CancelBuild(r.Context(), b.ID, id.user, h.auth.now().UTC())
	if err != nil {
		if errors.Is(err, hubmesh.ErrInvalid) { // finished meanwhile
			return &apiError{code: codeConflict, message: strings.TrimSuffix(err.Error(), ": "+hubmesh.ErrInvalid.Error()), cause: err}
		}
		return err
	}
	h.audit(r, id, "build.cancel", b.Repo, b.ID)
	return writeJSON(w, http.StatusOK, "application/json", nb)
}

// retryBuild serves POST .../builds/{id}/retry: a new build of the same
// source ref, commit (when the first one got that far), tags, Dockerfile
// and context. The build must have finished.
func (h *Hub) retryBuild(w http.ResponseWriter, r *http.Request, id identity) error {
	b, err := h.adminBuild(r, id)
	if err != nil {
		return err
	}
	if !hubmesh.BuildFinished(b.State) {
		return newError(codeConflict, "build %s is %s: cancel it or wait for it to finish before a retry", b.ID, b.State)
	}
	ctx := r.Context()
	if _, err := h.settingsOf(ctx, b.Repo); err != nil {
		return err
	}
	nb := hubmesh.Build{
		Repo: b.Repo, Trigger: hubmesh.TriggerRetry, Actor: id.user, SourceType: b.SourceType,
		SourceName: b.SourceName, Commit: b.Commit, Tags: b.Tags, Dockerfile: b.Dockerfile, Context: b.Context,
		BuildCache: b.BuildCache, RetryOf: b.ID, Created: h.auth.now().UTC(),
	}
	queued, err := h.builds.QueueBuilds(ctx, []hubmesh.Build{nb})
	if err != nil {
		if errors.Is(err, hubmesh.ErrInvalid) {
			return badRequest(err)
		}
		return err
	}
	h.audit(r, id, "build.retry", b.Repo, b.ID)
	return writeJSON(w, http.StatusAccepted, "application/json", buildsQueued{Builds: queued})
}

// errTriggerDenied is the one answer of the trigger URL to a wrong token
// and to a repository without build settings (or without existence).
var errTriggerDenied = newError(codeDenied, "wrong trigger token, or the repository is not built automatically")

// errWebhookDenied is the same for git host webhooks.
var errWebhookDenied = newError(codeDenied, "webhook signature missing or wrong, or the repository is not built automatically")

// publicSettings loads the settings behind a route without auth: missing
// settings are not told apart from a wrong secret.
func (h *Hub) publicSettings(r *http.Request) (hubmesh.BuildSettings, bool, error) {
	if h.builds == nil {
		return hubmesh.BuildSettings{}, false, errNoBuilds
	}
	repo, err := repoName(r)
	if err != nil {
		return hubmesh.BuildSettings{}, false, err
	}
	s, err := h.builds.BuildSettings(r.Context(), repo)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return s, false, nil
	}
	return s, err == nil, err
}

// buildTrigger serves POST .../trigger/{token}: the trigger URL, no
// credentials but the token. Bodies as Docker Hub took them: none or
// {"build": true}, {"source_type","source_name"}, {"docker_tag"}.
func (h *Hub) buildTrigger(w http.ResponseWriter, r *http.Request, id identity) error {
	s, ok, err := h.publicSettings(r)
	if err != nil {
		return err
	}
	if !ok || build.CheckToken(r.PathValue("token"), []byte(s.TriggerToken)) != nil {
		return errTriggerDenied
	}
	body, err := build.ReadBody(r.Body, maxTriggerBody)
	if err != nil {
		return badRequest(err)
	}
	req, err := build.ParseTrigger(body)
	if err != nil {
		return badRequest(err)
	}
	targets, err := plan(s, req)
	if err != nil {
		return err
	}
	queued, err := h.planBuilds(r.Context(), s.Repo, targets, hubmesh.Build{Trigger: hubmesh.TriggerURL})
	if err != nil {
		return err
	}
	h.audit(r, id, "build.trigger", s.Repo, fmt.Sprintf("trigger url, %s: %d builds", req, len(queued)))
	return writeJSON(w, http.StatusAccepted, "application/json", buildsQueued{Builds: queued})
}

// buildWebhook serves POST .../builds/webhook: a push webhook of GitHub,
// Gitea, Forgejo or GitLab, verified with the settings' webhook secret.
// Only rules with autobuild build; a verified event that builds nothing is
// a 200 with no builds, so that the host does not retry it.
func (h *Hub) buildWebhook(w http.ResponseWriter, r *http.Request, _ identity) error {
	s, ok, err := h.publicSettings(r)
	if err != nil {
		return err
	}
	var secret []byte
	if ok {
		secret = []byte(s.WebhookSecret)
	}
	// Without settings the empty secret fails the same checks, in the
	// same order, as a wrong one.
	push, err := build.ParseWebhookRequest(r, secret)
	switch {
	case errors.Is(err, hubmesh.ErrDenied):
		return errWebhookDenied
	case err != nil && errors.Is(err, hubmesh.ErrInvalid):
		return badRequest(err)
	case err != nil:
		return err
	case !ok: // unreachable: an empty secret never verifies
		return errWebhookDenied
	case push == nil:
		return writeJSON(w, http.StatusOK, "application/json", buildsQueued{Builds: []hubmesh.Build{}})
	}
	rules, err := build.RulesOf(s.Rules)
	if err != nil {
		return fmt.Errorf("stored build rules of %s: %w", s.Repo, err)
	}
	var targets []build.Target
	for _, t := range build.Match(rules, push.SourceType, push.SourceName) {
		if t.Autobuild {
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		return writeJSON(w, http.StatusOK, "application/json", buildsQueued{Builds: []hubmesh.Build{}})
	}
	queued, err := h.planBuilds(r.Context(), s.Repo, targets, hubmesh.Build{Trigger: hubmesh.TriggerWebhook, Commit: push.Commit})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, "application/json", buildsQueued{Builds: queued})
}
