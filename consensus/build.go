package consensus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
)

// Automated builds: the build settings of repositories, and the build
// records, which are also the builders' job queue. QueueBuilds appends
// records; a builder node takes one with ClaimBuild, which grants it a
// lease (its node id and an attempt number) until a time it renews with
// UpdateBuild heartbeats. A lease that runs out lets another builder claim
// the build again (the next attempt); the holder of an older attempt is
// then refused (ErrDenied) and stops. Apply has no side effects and reads
// no clock: every time comes in the command. Keys (see keys.go):
//
//	buildset/<repo>             JSON hubmesh.BuildSettings (secrets included)
//	build/<id>                  JSON hubmesh.Build
//	buildrepo/<repo>\x00<id>    empty: the builds of a repository, in log order
//	buildopen/<id>              empty: an unfinished build (the queue)
//
// Build ids are the Raft index of QueueBuilds (16 hex digits) and a
// sequence number within it (4 hex digits), like webhook event ids, so
// they sort in log order. Build events go to the webhook outbox with the
// build attached (hubmesh.WebhookEvent.Build).

// Limits of the build state.
const (
	// MaxBuildsPerRepo is the most build records a repository keeps. A new
	// build makes room by deleting the oldest finished one; when all of
	// them are unfinished, QueueBuilds fails.
	MaxBuildsPerRepo = 100
	// MaxBuildRules is the most build rules of a repository.
	MaxBuildRules = 25
	// MaxBuildArgs is the most build arguments of a repository.
	MaxBuildArgs = 64
	// MaxQueueBuilds is the most builds one QueueBuilds command queues:
	// every target of one trigger (one per rule at most), so that a
	// trigger queues all its builds or none.
	MaxQueueBuilds = MaxBuildRules
	// MaxBuildTags is the most tags one build pushes.
	MaxBuildTags = 16
	// MaxBuildMessage is the most bytes of a build's message kept; a
	// longer one is cut.
	MaxBuildMessage = 4096

	maxBuildURLLen     = 2048
	maxBuildArgLen     = 4096
	maxBuildNameLen    = 256 // user names, fingerprints, actors
	maxBuildSecretLen  = 4096
	maxBuildSSHKeyLen  = 16 << 10
	maxBuildRefLen     = 1024 // source names (or regexes) and tag templates
	maxBuildPathLen    = 4096
	maxBuildCommitLen  = 256
	maxBuildMessageIn  = 64 << 10 // longer messages are refused, shorter cut to MaxBuildMessage
	maxBuildPollPeriod = 7 * 24 * 3600
)

// Command types of automated builds.
type (
	// SetBuildSettings creates or replaces the build settings of
	// Settings.Repo (the proposer merged the stored secrets in and set the
	// tokens). The repository must exist; Created is kept from the stored
	// settings. It marks the repository automated.
	SetBuildSettings struct {
		Settings hubmesh.BuildSettings `json:"settings"`
	}
	// DeleteBuildSettings removes the build settings of Repo; its builds
	// stay.
	DeleteBuildSettings struct {
		Repo string `json:"repo"`
	}
	// QueueBuilds queues builds. The proposer sets Created, Repo, Trigger,
	// Actor, the source ref, Commit, Tags, Dockerfile, Context, BuildCache
	// and RetryOf; the FSM sets ID and State and clears the rest. Its
	// result is the []hubmesh.Build queued.
	QueueBuilds struct {
		Builds []hubmesh.Build `json:"builds"`
	}
	// ClaimBuild gives build ID to Builder until LeaseUntil: a queued
	// build, or an unfinished one whose lease ran out before At. Its
	// result is the claimed hubmesh.Build (Attempt counts the claims).
	ClaimBuild struct {
		ID         string    `json:"id"`
		Builder    string    `json:"builder"`
		LeaseUntil time.Time `json:"lease_until"`
		At         time.Time `json:"at"`
	}
	// UpdateBuild records the progress of build ID by the holder of its
	// lease (Builder and Attempt). State "" is a heartbeat that renews the
	// lease to LeaseUntil; a final state ends the build. Non-empty Commit,
	// Message, Digest, LogDigest and a positive LogSize overwrite the
	// recorded ones. Its result is the updated hubmesh.Build.
	UpdateBuild struct {
		ID         string    `json:"id"`
		Builder    string    `json:"builder"`
		Attempt    int       `json:"attempt"`
		State      string    `json:"state,omitempty"`
		Commit     string    `json:"commit,omitempty"`
		Message    string    `json:"message,omitempty"`
		Digest     string    `json:"digest,omitempty"`
		LogDigest  string    `json:"log_digest,omitempty"`
		LogSize    int64     `json:"log_size,omitempty"`
		LeaseUntil time.Time `json:"lease_until,omitzero"`
		At         time.Time `json:"at"`
	}
	// CancelBuild cancels unfinished build ID on behalf of Actor; the
	// builder running it learns so from its next update. Its result is the
	// cancelled hubmesh.Build.
	CancelBuild struct {
		ID    string    `json:"id"`
		Actor string    `json:"actor,omitempty"`
		At    time.Time `json:"at"`
	}
)

// Type implements Command.
func (*SetBuildSettings) Type() Type { return TypeSetBuildSettings }

// Type implements Command.
func (*DeleteBuildSettings) Type() Type { return TypeDeleteBuildSettings }

// Type implements Command.
func (*QueueBuilds) Type() Type { return TypeQueueBuilds }

// Type implements Command.
func (*ClaimBuild) Type() Type { return TypeClaimBuild }

// Type implements Command.
func (*UpdateBuild) Type() Type { return TypeUpdateBuild }

// Type implements Command.
func (*CancelBuild) Type() Type { return TypeCancelBuild }

var (
	prefixBuildSet  = []byte("buildset/")
	prefixBuild     = []byte("build/")
	prefixBuildRepo = []byte("buildrepo/")
	prefixBuildOpen = []byte("buildopen/")
)

func buildSetKey(repo string) []byte { return key(prefixBuildSet, repo) }

func buildKey(id string) []byte { return key(prefixBuild, id) }

func buildRepoKey(repo, id string) []byte { return key(prefixBuildRepo, repo, id) }

func buildOpenKey(id string) []byte { return key(prefixBuildOpen, id) }

var (
	buildIDRe    = regexp.MustCompile(`^[a-f0-9]{20}$`)
	buildTrigger = []string{hubmesh.TriggerManual, hubmesh.TriggerURL, hubmesh.TriggerWebhook, hubmesh.TriggerPoll, hubmesh.TriggerRetry}
	// buildUpdateState are the states UpdateBuild may set.
	buildUpdateState = []string{hubmesh.BuildCloning, hubmesh.BuildBuilding, hubmesh.BuildPushing,
		hubmesh.BuildSuccess, hubmesh.BuildFailure, hubmesh.BuildCancelled}
)

func checkBuildID(id string) error {
	if !buildIDRe.MatchString(id) {
		return fmt.Errorf("%w: build id %q: want 20 hex digits", hubmesh.ErrInvalid, id)
	}
	return nil
}

// checkSourceType checks a rule's or a build's source type (the values of
// build.SourceType; consensus does not import package build).
func checkSourceType(st string) error {
	if st != "branch" && st != "tag" {
		return fmt.Errorf("%w: source type %q: want branch or tag", hubmesh.ErrInvalid, st)
	}
	return nil
}

// checkOptionalDigest checks a digest that may be empty.
func checkOptionalDigest(what, d string) error {
	if d == "" {
		return nil
	}
	return checkDigest(what, digest.Digest(d))
}

// textField is a free-text field to check: its name, value and bound.
type textField struct {
	what, v string
	max     int
}

// checkTexts runs checkText over fields, stopping at the first problem.
func checkTexts(fields ...textField) error {
	for _, f := range fields {
		if err := checkText(f.what, f.v, f.max); err != nil {
			return err
		}
	}
	return nil
}

func (c *SetBuildSettings) validate() error {
	s := &c.Settings
	if err := checkRepo(s.Repo); err != nil {
		return err
	}
	src := &s.Source
	if err := checkID("build source url", src.URL, maxBuildURLLen); err != nil {
		return err
	}
	err := checkTexts(
		textField{"build source username", src.Username, maxBuildNameLen},
		textField{"build source password", src.Password, maxBuildSecretLen},
		textField{"build source ssh key", src.SSHKey, maxBuildSSHKeyLen},
		textField{"build source ssh key passphrase", src.SSHKeyPassphrase, maxBuildSecretLen},
		textField{"build source host key fingerprint", src.HostKeyFingerprint, maxBuildNameLen},
		textField{"build trigger token", s.TriggerToken, maxBuildNameLen},
		textField{"build webhook secret", s.WebhookSecret, maxBuildNameLen},
	)
	if err != nil {
		return err
	}
	if len(s.Rules) > MaxBuildRules {
		return fmt.Errorf("%w: %d build rules, at most %d", hubmesh.ErrInvalid, len(s.Rules), MaxBuildRules)
	}
	for i, r := range s.Rules {
		if err := checkSourceType(r.SourceType); err != nil {
			return fmt.Errorf("build rule %d: %w", i+1, err)
		}
		if err := checkID("source name", r.SourceName, maxBuildRefLen); err != nil {
			return fmt.Errorf("build rule %d: %w", i+1, err)
		}
		err := checkTexts(
			textField{"tag template", r.Tag, maxBuildRefLen},
			textField{"dockerfile", r.Dockerfile, maxBuildPathLen},
			textField{"context", r.Context, maxBuildPathLen},
		)
		if err != nil {
			return fmt.Errorf("build rule %d: %w", i+1, err)
		}
	}
	if len(s.BuildArgs) > MaxBuildArgs {
		return fmt.Errorf("%w: %d build args, at most %d", hubmesh.ErrInvalid, len(s.BuildArgs), MaxBuildArgs)
	}
	for _, k := range slices.Sorted(maps.Keys(s.BuildArgs)) {
		if err := checkID("build arg name", k, maxBuildArgLen); err != nil {
			return err
		}
		if err := checkText("build arg "+k, s.BuildArgs[k], maxBuildArgLen); err != nil {
			return err
		}
	}
	if s.PollSeconds < 0 || s.PollSeconds > maxBuildPollPeriod {
		return fmt.Errorf("%w: poll every %d seconds: want 0 (off) to %d", hubmesh.ErrInvalid, s.PollSeconds, maxBuildPollPeriod)
	}
	return nil
}

func (c *DeleteBuildSettings) validate() error { return checkRepo(c.Repo) }

func (c *QueueBuilds) validate() error {
	if n := len(c.Builds); n == 0 || n > MaxQueueBuilds {
		return fmt.Errorf("%w: queue %d builds: want 1 to %d", hubmesh.ErrInvalid, n, MaxQueueBuilds)
	}
	for i := range c.Builds {
		if err := checkNewBuild(&c.Builds[i]); err != nil {
			return fmt.Errorf("build %d: %w", i+1, err)
		}
	}
	return nil
}

// checkNewBuild checks what the proposer of QueueBuilds sets.
func checkNewBuild(b *hubmesh.Build) error {
	if err := checkRepo(b.Repo); err != nil {
		return err
	}
	if !slices.Contains(buildTrigger, b.Trigger) {
		return fmt.Errorf("%w: build trigger %q: want one of %s", hubmesh.ErrInvalid, b.Trigger, strings.Join(buildTrigger, ", "))
	}
	if err := checkSourceType(b.SourceType); err != nil {
		return err
	}
	if err := checkID("source name", b.SourceName, maxBuildRefLen); err != nil {
		return err
	}
	err := checkTexts(
		textField{"actor", b.Actor, maxBuildNameLen},
		textField{"commit", b.Commit, maxBuildCommitLen},
		textField{"dockerfile", b.Dockerfile, maxBuildPathLen},
		textField{"context", b.Context, maxBuildPathLen},
	)
	if err != nil {
		return err
	}
	if len(b.Tags) == 0 || len(b.Tags) > MaxBuildTags {
		return fmt.Errorf("%w: %d tags: want 1 to %d", hubmesh.ErrInvalid, len(b.Tags), MaxBuildTags)
	}
	for _, t := range b.Tags {
		if err := checkTag(t); err != nil {
			return err
		}
	}
	if b.RetryOf != "" {
		if err := checkBuildID(b.RetryOf); err != nil {
			return err
		}
	}
	if b.Created.IsZero() {
		return fmt.Errorf("%w: build without a creation time", hubmesh.ErrInvalid)
	}
	return nil
}

func (c *ClaimBuild) validate() error {
	if err := checkBuildID(c.ID); err != nil {
		return err
	}
	if err := checkNode(c.Builder, true); err != nil {
		return err
	}
	if c.At.IsZero() || !c.LeaseUntil.After(c.At) {
		return fmt.Errorf("%w: claim build %s at %v until %v: want a lease ending after the claim", hubmesh.ErrInvalid, c.ID, c.At, c.LeaseUntil)
	}
	return nil
}

func (c *UpdateBuild) validate() error {
	if err := checkBuildID(c.ID); err != nil {
		return err
	}
	if err := checkNode(c.Builder, true); err != nil {
		return err
	}
	if c.Attempt < 1 {
		return fmt.Errorf("%w: update build %s: attempt %d", hubmesh.ErrInvalid, c.ID, c.Attempt)
	}
	if c.State != "" && !slices.Contains(buildUpdateState, c.State) {
		return fmt.Errorf("%w: build state %q: want one of %s", hubmesh.ErrInvalid, c.State, strings.Join(buildUpdateState, ", "))
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: update build %s without a time", hubmesh.ErrInvalid, c.ID)
	}
	if !hubmesh.BuildFinished(c.State) {
		if (c.State == "" || !c.LeaseUntil.IsZero()) && !c.LeaseUntil.After(c.At) {
			return fmt.Errorf("%w: update build %s at %v: lease until %v: want a lease ending after the update", hubmesh.ErrInvalid, c.ID, c.At, c.LeaseUntil)
		}
	}
	if err := checkText("commit", c.Commit, maxBuildCommitLen); err != nil {
		return err
	}
	if len(c.Message) > maxBuildMessageIn {
		return fmt.Errorf("%w: build message of %d bytes, at most %d", hubmesh.ErrInvalid, len(c.Message), maxBuildMessageIn)
	}
	if err := checkOptionalDigest("image digest", c.Digest); err != nil {
		return err
	}
	if err := checkOptionalDigest("log digest", c.LogDigest); err != nil {
		return err
	}
	if c.LogSize < 0 {
		return fmt.Errorf("%w: build log size %d", hubmesh.ErrInvalid, c.LogSize)
	}
	return nil
}

func (c *CancelBuild) validate() error {
	if err := checkBuildID(c.ID); err != nil {
		return err
	}
	if err := checkText("actor", c.Actor, maxBuildNameLen); err != nil {
		return err
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: cancel build %s without a time", hubmesh.ErrInvalid, c.ID)
	}
	return nil
}

// ---- apply ----

func (c *SetBuildSettings) apply(tx *txn) (any, error) {
	s := c.Settings
	var rec repoRecord
	if !tx.getJSON(repoKey(s.Repo), &rec) {
		return nil, fmt.Errorf("build settings: repository %s: %w", s.Repo, hubmesh.ErrNotFound)
	}
	var old hubmesh.BuildSettings
	if tx.getJSON(buildSetKey(s.Repo), &old) {
		s.Created = old.Created
	}
	if s.Created.IsZero() {
		s.Created = s.Updated
	}
	if s.Updated.IsZero() {
		s.Updated = s.Created
	}
	tx.setJSON(buildSetKey(s.Repo), s)
	if !rec.IsAutomated {
		rec.IsAutomated = true
		tx.setJSON(repoKey(s.Repo), rec)
	}
	return nil, nil
}

func (c *DeleteBuildSettings) apply(tx *txn) (any, error) {
	if !tx.has(buildSetKey(c.Repo)) {
		return nil, fmt.Errorf("build settings of %s: %w", c.Repo, hubmesh.ErrNotFound)
	}
	tx.del(buildSetKey(c.Repo))
	var rec repoRecord
	if tx.getJSON(repoKey(c.Repo), &rec) && rec.IsAutomated {
		rec.IsAutomated = false
		tx.setJSON(repoKey(c.Repo), rec)
	}
	return nil, nil
}

// build reads build id.
func (tx *txn) build(id string) (hubmesh.Build, bool) {
	var b hubmesh.Build
	ok := tx.getJSON(buildKey(id), &b)
	return b, ok
}

// putBuild writes b, and keeps it in the queue of unfinished builds as
// long as it is unfinished.
func (tx *txn) putBuild(b *hubmesh.Build) {
	tx.setJSON(buildKey(b.ID), b)
	if hubmesh.BuildFinished(b.State) {
		if tx.has(buildOpenKey(b.ID)) {
			tx.del(buildOpenKey(b.ID))
		}
	}
}

// buildsOf lists the builds of repo, oldest first.
func (tx *txn) buildsOf(repo string) []hubmesh.Build {
	var out []hubmesh.Build
	pre := scope(prefixBuildRepo, repo)
	for _, k := range tx.keys(pre) {
		if b, ok := tx.build(string(k[len(pre):])); ok {
			out = append(out, b)
		}
	}
	return out
}

// deleteBuild removes the record of b.
func (tx *txn) deleteBuild(b *hubmesh.Build) {
	if tx.has(buildOpenKey(b.ID)) {
		tx.del(buildOpenKey(b.ID))
	}
	tx.del(buildRepoKey(b.Repo, b.ID))
	tx.del(buildKey(b.ID))
}

// emitBuild appends build event typ of b to the webhook outbox, with a
// copy of b attached.
func (tx *txn) emitBuild(typ string, b *hubmesh.Build, actor string, at time.Time) {
	cp := *b
	cp.Tags = slices.Clone(b.Tags)
	tx.emitEvent(hubmesh.WebhookEvent{Type: typ, Repo: b.Repo, Digest: digest.Digest(b.Digest), Actor: actor, At: at, Build: &cp})
}

func (c *QueueBuilds) apply(tx *txn) (any, error) {
	// Check every repository and plan the room first: a failing command
	// writes nothing.
	var repos []string
	adding := map[string]int{}
	for i := range c.Builds {
		repo := c.Builds[i].Repo
		if adding[repo] == 0 {
			repos = append(repos, repo)
		}
		adding[repo]++
	}
	var drop []hubmesh.Build
	for _, repo := range repos {
		if !tx.has(repoKey(repo)) {
			return nil, fmt.Errorf("queue builds: repository %s: %w", repo, hubmesh.ErrNotFound)
		}
		have := tx.buildsOf(repo)
		excess := len(have) + adding[repo] - MaxBuildsPerRepo
		for i := 0; i < len(have) && excess > 0; i++ {
			if hubmesh.BuildFinished(have[i].State) {
				drop = append(drop, have[i])
				excess--
			}
		}
		if excess > 0 {
			return nil, fmt.Errorf("queue builds of %s: %w: too many unfinished builds (a repository keeps at most %d builds)", repo, hubmesh.ErrInvalid, MaxBuildsPerRepo)
		}
	}
	for i := range drop {
		tx.deleteBuild(&drop[i])
	}
	out := make([]hubmesh.Build, 0, len(c.Builds))
	for _, in := range c.Builds {
		b := hubmesh.Build{
			ID: tx.nextID(), Repo: in.Repo, State: hubmesh.BuildQueued, Trigger: in.Trigger, Actor: in.Actor,
			SourceType: in.SourceType, SourceName: in.SourceName, Commit: in.Commit, Tags: slices.Clone(in.Tags),
			Dockerfile: in.Dockerfile, Context: in.Context, BuildCache: in.BuildCache, RetryOf: in.RetryOf,
			Created: in.Created, Updated: in.Created,
		}
		tx.putBuild(&b)
		tx.set(buildRepoKey(b.Repo, b.ID), nil)
		tx.set(buildOpenKey(b.ID), nil)
		tx.emitBuild(hubmesh.EventBuildQueued, &b, b.Actor, b.Created)
		out = append(out, b)
	}
	tx.buildsChanged = true
	return out, nil
}

func (c *ClaimBuild) apply(tx *txn) (any, error) {
	b, ok := tx.build(c.ID)
	if !ok {
		return nil, fmt.Errorf("build %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	switch {
	case hubmesh.BuildFinished(b.State):
		return nil, fmt.Errorf("claim build %s: %w: build already %s", c.ID, hubmesh.ErrInvalid, b.State)
	case b.State == hubmesh.BuildClaimed && b.Builder == c.Builder && b.Claimed.Equal(c.At) && b.LeaseUntil.Equal(c.LeaseUntil):
		return b, nil // this very claim, proposed again after an unknown outcome
	case b.State != hubmesh.BuildQueued && !b.LeaseUntil.Before(c.At):
		return nil, fmt.Errorf("claim build %s: %w: claimed by %s until %s", c.ID, hubmesh.ErrExists, b.Builder, b.LeaseUntil.UTC().Format(time.RFC3339))
	}
	b.State, b.Builder, b.LeaseUntil = hubmesh.BuildClaimed, c.Builder, c.LeaseUntil
	b.Attempt++
	b.Claimed, b.Updated, b.Message = c.At, c.At, ""
	tx.putBuild(&b)
	tx.emitBuild(hubmesh.EventBuildStarted, &b, b.Actor, c.At)
	return b, nil
}

// buildEvent is the webhook event of a build that ended in state.
var buildEvent = map[string]string{
	hubmesh.BuildSuccess:   hubmesh.EventBuildSuccess,
	hubmesh.BuildFailure:   hubmesh.EventBuildFailure,
	hubmesh.BuildCancelled: hubmesh.EventBuildCancelled,
}

// cleanMessage makes s fit a build message: valid UTF-8 without NUL, at
// most MaxBuildMessage bytes.
func cleanMessage(s string) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	return truncateText(s, MaxBuildMessage)
}

func (c *UpdateBuild) apply(tx *txn) (any, error) {
	b, ok := tx.build(c.ID)
	if !ok {
		return nil, fmt.Errorf("build %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	holder := b.Builder == c.Builder && b.Attempt == c.Attempt
	switch {
	case hubmesh.BuildFinished(b.State) && holder && b.State == c.State:
		return b, nil // this very update, proposed again after an unknown outcome
	case b.State == hubmesh.BuildCancelled && holder && c.State == "" && c.LogDigest != "" &&
		(b.LogDigest == "" || b.LogDigest == c.LogDigest):
		// The log of a build cancelled while it ran, stored by the
		// builder that was running it: nothing else changes.
		b.LogDigest, b.Updated = c.LogDigest, c.At
		if c.LogSize > 0 {
			b.LogSize = c.LogSize
		}
		tx.putBuild(&b)
		return b, nil
	case b.State == hubmesh.BuildCancelled:
		return nil, fmt.Errorf("update build %s: %w: build is cancelled", c.ID, hubmesh.ErrDenied)
	case hubmesh.BuildFinished(b.State):
		return nil, fmt.Errorf("update build %s: %w: build already %s", c.ID, hubmesh.ErrDenied, b.State)
	case !holder:
		return nil, fmt.Errorf("update build %s: %w: lease lost (attempt %d is held by %s)", c.ID, hubmesh.ErrDenied, b.Attempt, b.Builder)
	}
	if c.State != "" {
		b.State = c.State
	}
	if c.State == hubmesh.BuildCloning {
		b.Started = c.At
	}
	if c.Commit != "" {
		b.Commit = c.Commit
	}
	if c.Message != "" {
		b.Message = cleanMessage(c.Message)
	}
	if c.Digest != "" {
		b.Digest = c.Digest
	}
	if c.LogDigest != "" {
		b.LogDigest = c.LogDigest
	}
	if c.LogSize > 0 {
		b.LogSize = c.LogSize
	}
	if !c.LeaseUntil.IsZero() {
		b.LeaseUntil = c.LeaseUntil
	}
	b.Updated = c.At
	final := hubmesh.BuildFinished(b.State)
	if final {
		b.Finished, b.LeaseUntil = c.At, time.Time{}
	}
	tx.putBuild(&b)
	if final {
		tx.emitBuild(buildEvent[b.State], &b, b.Actor, c.At)
		tx.buildsChanged = true
	}
	return b, nil
}

func (c *CancelBuild) apply(tx *txn) (any, error) {
	b, ok := tx.build(c.ID)
	if !ok {
		return nil, fmt.Errorf("build %s: %w", c.ID, hubmesh.ErrNotFound)
	}
	if hubmesh.BuildFinished(b.State) {
		return nil, fmt.Errorf("cancel build %s: %w: build already %s", c.ID, hubmesh.ErrInvalid, b.State)
	}
	b.State, b.Finished, b.Updated, b.LeaseUntil = hubmesh.BuildCancelled, c.At, c.At, time.Time{}
	b.Message = "cancelled"
	if c.Actor != "" {
		b.Message = "cancelled by " + c.Actor
	}
	tx.putBuild(&b)
	tx.emitBuild(hubmesh.EventBuildCancelled, &b, c.Actor, c.At)
	tx.buildsChanged = true
	return b, nil
}

// deleteBuildsOf removes the build settings and the build records of the
// repositories of s (DeleteRepository, and the deletion of a namespace).
func (tx *txn) deleteBuildsOf(s repoSet) {
	if s.repo != "" {
		if tx.has(buildSetKey(s.repo)) {
			tx.del(buildSetKey(s.repo))
		}
	} else {
		for _, k := range tx.keys(append(bytes.Clone(prefixBuildSet), s.ns+"/"...)) {
			tx.del(k)
		}
	}
	for _, k := range tx.keys(s.under(prefixBuildRepo)) {
		// buildrepo/<repo>\x00<id>
		if i := bytes.LastIndexByte(k, sep); i > 0 {
			id := string(k[i+1:])
			if tx.has(buildOpenKey(id)) {
				tx.del(buildOpenKey(id))
			}
			if tx.has(buildKey(id)) {
				tx.del(buildKey(id))
			}
		}
		tx.del(k)
	}
}

// ---- reads ----

// SetBuildSettings creates or replaces the build settings of s.Repo. The
// repository must exist (else an error wrapping hubmesh.ErrNotFound).
func (n *Node) SetBuildSettings(ctx context.Context, s hubmesh.BuildSettings) error {
	return n.propose(ctx, &SetBuildSettings{Settings: s})
}

// DeleteBuildSettings removes the build settings of repo; none is an error
// wrapping hubmesh.ErrNotFound. Its builds stay.
func (n *Node) DeleteBuildSettings(ctx context.Context, repo string) error {
	return n.propose(ctx, &DeleteBuildSettings{Repo: repo})
}

// BuildSettings returns the build settings of repo (secrets included), or
// an error wrapping hubmesh.ErrNotFound.
func (n *Node) BuildSettings(ctx context.Context, repo string) (hubmesh.BuildSettings, error) {
	return readFresh(ctx, n, func() (hubmesh.BuildSettings, error) { return n.fsm.buildSettings(repo) }, notFound)
}

// LocalBuildSettings is BuildSettings read from this node's state only,
// without asking the leader: the check of every push reads it, and a
// miss (a repository without automated builds, nearly all of them) must
// not cost a round trip to the leader.
func (n *Node) LocalBuildSettings(repo string) (hubmesh.BuildSettings, error) {
	return n.fsm.buildSettings(repo)
}

func (f *stateMachine) buildSettings(repo string) (hubmesh.BuildSettings, error) {
	if err := checkRepo(repo); err != nil {
		return hubmesh.BuildSettings{}, err
	}
	return getOne[hubmesh.BuildSettings](f, buildSetKey(repo), fmt.Errorf("build settings of %s: %w", repo, hubmesh.ErrNotFound))
}

// AllBuildSettings lists the build settings of every repository, in
// repository order, from the local state (the builders' poller).
func (n *Node) AllBuildSettings() ([]hubmesh.BuildSettings, error) {
	return n.fsm.allBuildSettings()
}

func (f *stateMachine) allBuildSettings() ([]hubmesh.BuildSettings, error) {
	out := []hubmesh.BuildSettings{}
	err := f.read(func(r reader) error {
		return scan(r, prefixBuildSet, nil, 0, func(k, v []byte) error {
			var s hubmesh.BuildSettings
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("corrupt value of %q: %w", k, err)
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueBuilds queues builds (see the QueueBuilds command) and returns them
// with their ids.
func (n *Node) QueueBuilds(ctx context.Context, b []hubmesh.Build) ([]hubmesh.Build, error) {
	return applyAs[[]hubmesh.Build](ctx, n, &QueueBuilds{Builds: b})
}

// ClaimBuild gives build id to builder until leaseUntil. A build someone
// else holds a live lease on is an error wrapping hubmesh.ErrExists; a
// finished one, hubmesh.ErrInvalid.
func (n *Node) ClaimBuild(ctx context.Context, id, builder string, leaseUntil, at time.Time) (hubmesh.Build, error) {
	return applyAs[hubmesh.Build](ctx, n, &ClaimBuild{ID: id, Builder: builder, LeaseUntil: leaseUntil, At: at})
}

// UpdateBuild records progress of a build by the holder of its lease and
// returns the build as updated. An error wrapping hubmesh.ErrDenied means
// the caller must stop working on it: cancelled, or the lease lost to
// another builder; hubmesh.ErrNotFound, that its repository was deleted.
func (n *Node) UpdateBuild(ctx context.Context, u UpdateBuild) (hubmesh.Build, error) {
	return applyAs[hubmesh.Build](ctx, n, &u)
}

// CancelBuild cancels unfinished build id on behalf of actor; a finished
// one is an error wrapping hubmesh.ErrInvalid.
func (n *Node) CancelBuild(ctx context.Context, id, actor string, at time.Time) (hubmesh.Build, error) {
	return applyAs[hubmesh.Build](ctx, n, &CancelBuild{ID: id, Actor: actor, At: at})
}

// Build returns build id, or an error wrapping hubmesh.ErrNotFound.
func (n *Node) Build(ctx context.Context, id string) (hubmesh.Build, error) {
	return readFresh(ctx, n, func() (hubmesh.Build, error) { return n.fsm.build(id) }, notFound)
}

func (f *stateMachine) build(id string) (hubmesh.Build, error) {
	if err := checkBuildID(id); err != nil {
		return hubmesh.Build{}, err
	}
	return getOne[hubmesh.Build](f, buildKey(id), fmt.Errorf("build %s: %w", id, hubmesh.ErrNotFound))
}

// Builds lists the builds of repo, newest first; p.Last is the id of the
// last build of the previous page.
func (n *Node) Builds(ctx context.Context, repo string, p hubmesh.Page) ([]hubmesh.Build, error) {
	return readFresh(ctx, n, func() ([]hubmesh.Build, error) { return n.fsm.builds(repo, p) }, emptyList)
}

func (f *stateMachine) builds(repo string, p hubmesh.Page) ([]hubmesh.Build, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if p.Last != "" {
		if err := checkBuildID(p.Last); err != nil {
			return nil, err
		}
	}
	out := []hubmesh.Build{}
	err := f.readSnapshot(func(r reader) error {
		pre := scope(prefixBuildRepo, repo)
		ids, err := suffixes(r, pre, hubmesh.Page{})
		if err != nil {
			return err
		}
		slices.Reverse(ids)
		if p.Last != "" {
			i, _ := slices.BinarySearchFunc(ids, p.Last, func(id, last string) int { return strings.Compare(last, id) })
			if i < len(ids) && ids[i] == p.Last {
				i++
			}
			ids = ids[i:]
		}
		if p.N > 0 && len(ids) > p.N {
			ids = ids[:p.N]
		}
		for _, id := range ids {
			var b hubmesh.Build
			ok, err := readJSON(r, buildKey(id), &b)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, b)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClaimableBuilds returns up to limit (all when limit <= 0) builds a
// builder may claim at now, oldest first: queued ones, and unfinished ones
// whose lease ran out. It reads the local state: the builders call it.
func (n *Node) ClaimableBuilds(now time.Time, limit int) ([]hubmesh.Build, error) {
	return n.fsm.claimableBuilds(now, limit)
}

func (f *stateMachine) claimableBuilds(now time.Time, limit int) ([]hubmesh.Build, error) {
	var out []hubmesh.Build
	full := errors.New("full")
	err := f.readSnapshot(func(r reader) error {
		err := scan(r, prefixBuildOpen, nil, 0, func(k, _ []byte) error {
			var b hubmesh.Build
			ok, err := readJSON(r, buildKey(string(k[len(prefixBuildOpen):])), &b)
			if err != nil || !ok {
				return err
			}
			if b.State == hubmesh.BuildQueued || (!hubmesh.BuildFinished(b.State) && b.LeaseUntil.Before(now)) {
				out = append(out, b)
				if limit > 0 && len(out) >= limit {
					return full
				}
			}
			return nil
		})
		if errors.Is(err, full) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// BuildChanges signals (coalesced) that a build was queued, cancelled or
// finished, so that a builder looks for work or stops one. One consumer
// only.
func (n *Node) BuildChanges() <-chan struct{} { return n.fsm.buildWake.c() }
