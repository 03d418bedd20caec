package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/build"
	"github.com/hubmesh/hubmesh/consensus"
)

// The builder: on a node started with --builder, it claims queued builds
// from the metadata plane (a lease renewed by heartbeats; a builder that
// dies loses it and another builder takes the build over), runs each one
// (clone, docker build, push into the mesh) and records every step, the
// outcome and the log. A builder never records anything once the metadata
// plane refuses its lease: the build was cancelled, or taken over.
const (
	// buildRecordFor bounds how long a builder keeps trying to record the
	// outcome of a build while the cluster cannot take it.
	buildRecordFor = 2 * time.Minute
	// buildTokenTTL is the life of the push token of one build.
	buildTokenTTL = 15 * time.Minute
	// buildCleanupTimeout bounds the removal of a build's images.
	buildCleanupTimeout = time.Minute
	// maxBuildMessage bounds the message recorded for a failed build.
	maxBuildMessage = 1024
)

// errBuildTimeout is the cause of a build's context that ran too long.
var errBuildTimeout = errors.New("build timed out")

// buildQueue is what a builder needs from the metadata plane
// (consensus.Node).
type buildQueue interface {
	Build(ctx context.Context, id string) (hubmesh.Build, error)
	ClaimableBuilds(now time.Time, limit int) ([]hubmesh.Build, error)
	ClaimBuild(ctx context.Context, id, builder string, leaseUntil, at time.Time) (hubmesh.Build, error)
	UpdateBuild(ctx context.Context, u consensus.UpdateBuild) (hubmesh.Build, error)
	BuildChanges() <-chan struct{}
}

// builder claims and runs builds on this node.
type builder struct {
	id      string // this node's peer ID, the lease holder's name
	queue   buildQueue
	logs    *buildLogs
	lease   time.Duration
	timeout time.Duration
	slots   int
	// steps runs a claimed build (clone, build, push) and returns the
	// digest pushed; it is a field so that tests can replace it.
	steps func(ctx context.Context, j *buildJob) (string, error)
	// keep stores a finished log as a blob of repo.
	keep func(ctx context.Context, repo string, d digest.Digest, size int64, path string) error
	now  func() time.Time
	log  *slog.Logger

	mu      sync.Mutex
	running map[string]*buildJob
	wg      sync.WaitGroup
	freed   chan struct{}
}

func newBuilder(id string, queue buildQueue, logs *buildLogs, cfg Config, log *slog.Logger) *builder {
	return &builder{
		id: id, queue: queue, logs: logs,
		lease: cfg.BuildLease, timeout: cfg.BuildTimeout, slots: cfg.BuilderConcurrency,
		now: time.Now, log: log,
		running: map[string]*buildJob{}, freed: make(chan struct{}, 1),
	}
}

// buildJob is one attempt at a build on this builder.
type buildJob struct {
	Build hubmesh.Build // as claimed
	Log   *liveLog

	b       *builder
	cancel  context.CancelCauseFunc
	mu      sync.Mutex
	stopped error    // why this attempt may record nothing more
	secrets []string // redacted from the recorded message
}

// Step records that the build entered state (with the commit, once it is
// known). An error wrapping hubmesh.ErrDenied means the build was
// cancelled or taken over: the job's context is cancelled too.
func (j *buildJob) Step(ctx context.Context, state, commit string) error {
	_, err := j.b.update(ctx, j, consensus.UpdateBuild{State: state, Commit: commit})
	return err
}

// Redact keeps s out of the message recorded for the build.
func (j *buildJob) Redact(s string) {
	if len(s) >= 4 {
		j.mu.Lock()
		j.secrets = append(j.secrets, s)
		j.mu.Unlock()
	}
}

// stop ends the attempt for good: the lease is lost or the build
// cancelled.
func (j *buildJob) stop(reason error) {
	j.mu.Lock()
	if j.stopped == nil {
		j.stopped = reason
	}
	j.mu.Unlock()
	j.cancel(reason)
}

func (j *buildJob) stopReason() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stopped
}

// Run claims and runs builds until ctx ends; running builds are stopped
// then (their leases expire and another builder takes them over).
func (b *builder) Run(ctx context.Context) error {
	if err := b.logs.reset(); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	b.log.Info("builder on", "concurrency", b.slots, "lease", b.lease)
	changes := b.queue.BuildChanges()
	timer := time.NewTimer(0)
	defer timer.Stop()
	defer b.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
			b.checkRunning(ctx)
		case <-timer.C:
		case <-b.freed:
		}
		b.claim(ctx)
		b.logs.sweep(b.now().Add(-buildLogKeep))
		timer.Reset(b.lease / 2)
	}
}

// claim claims queued (or abandoned) builds while slots are free.
func (b *builder) claim(ctx context.Context) {
	b.mu.Lock()
	free := b.slots - len(b.running)
	b.mu.Unlock()
	if free <= 0 || ctx.Err() != nil {
		return
	}
	now := b.now()
	cands, err := b.queue.ClaimableBuilds(now, free+8)
	if err != nil {
		b.log.Warn("claimable builds", "err", err)
		return
	}
	for _, c := range cands {
		if free == 0 {
			return
		}
		b.mu.Lock()
		_, mine := b.running[c.ID]
		busy := b.sameTagsRunning(c)
		b.mu.Unlock()
		if mine || busy {
			// A build of the same image tags runs here: the daemon holds
			// one image per tag, so the two would push each other's image
			// (and remove it under the other); it waits its turn.
			continue
		}
		now := b.now()
		got, err := b.queue.ClaimBuild(ctx, c.ID, b.id, now.Add(b.lease), now)
		switch {
		case errors.Is(err, hubmesh.ErrExists), errors.Is(err, hubmesh.ErrInvalid), errors.Is(err, hubmesh.ErrNotFound):
			b.log.Debug("build taken or gone", "build", c.ID, "err", err)
			continue
		case err != nil:
			if ctx.Err() == nil {
				b.log.Warn("claim build", "build", c.ID, "err", err)
			}
			return
		}
		b.start(ctx, got)
		free--
	}
}

// sameTagsRunning reports whether a build of c's repository with one of
// its tags runs on this builder. b.mu is held.
func (b *builder) sameTagsRunning(c hubmesh.Build) bool {
	for _, j := range b.running {
		if j.Build.Repo != c.Repo {
			continue
		}
		for _, t := range c.Tags {
			if slices.Contains(j.Build.Tags, t) {
				return true
			}
		}
	}
	return false
}

// start runs the claimed build bd in its own goroutine.
func (b *builder) start(ctx context.Context, bd hubmesh.Build) {
	jctx, cancel := context.WithCancelCause(ctx)
	j := &buildJob{Build: bd, b: b, cancel: cancel}
	b.mu.Lock()
	b.running[bd.ID] = j
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer func() {
			cancel(nil)
			b.mu.Lock()
			delete(b.running, bd.ID)
			b.mu.Unlock()
			select {
			case b.freed <- struct{}{}:
			default:
			}
		}()
		b.execute(ctx, jctx, j)
	}()
}

// checkRunning stops the running builds that were cancelled or taken
// over, without waiting for their next heartbeat.
func (b *builder) checkRunning(ctx context.Context) {
	b.mu.Lock()
	jobs := make([]*buildJob, 0, len(b.running))
	for _, j := range b.running {
		jobs = append(jobs, j)
	}
	b.mu.Unlock()
	for _, j := range jobs {
		cur, err := b.queue.Build(ctx, j.Build.ID)
		switch {
		case errors.Is(err, hubmesh.ErrNotFound):
			j.stop(fmt.Errorf("build %s was deleted: %w", j.Build.ID, hubmesh.ErrDenied))
		case err != nil:
			// The heartbeat will tell.
		case cur.State == hubmesh.BuildCancelled:
			j.stop(fmt.Errorf("%s: %w", orDefault(cur.Message, "cancelled"), hubmesh.ErrDenied))
		case hubmesh.BuildFinished(cur.State) || cur.Builder != b.id || cur.Attempt != j.Build.Attempt:
			j.stop(fmt.Errorf("lease lost: build %s is %s, attempt %d on %s: %w", cur.ID, cur.State, cur.Attempt, cur.Builder, hubmesh.ErrDenied))
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// execute runs one claimed build to its end and records the outcome,
// unless the attempt was stopped (cancelled, lease lost) or the node is
// shutting down. ctx is the builder's life, jctx the attempt's.
func (b *builder) execute(ctx, jctx context.Context, j *buildJob) {
	bd := j.Build
	log := b.log.With("build", bd.ID, "repo", bd.Repo, "attempt", bd.Attempt)
	lg, err := b.logs.create(bd.ID, bd.Attempt)
	if err != nil {
		log.Error("build log", "err", err)
		b.record(ctx, j, consensus.UpdateBuild{State: hubmesh.BuildFailure, Message: "builder could not write the log: " + err.Error()})
		return
	}
	j.Log = lg
	log.Info("build started", "source", bd.SourceType+":"+bd.SourceName, "tags", strings.Join(bd.Tags, ","))
	lg.Printf("==> build %s of %s, attempt %d on builder %s", bd.ID, bd.Repo, bd.Attempt, b.id)

	hbStop := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		b.heartbeat(jctx, j, hbStop)
	}()
	tctx, tcancel := context.WithTimeoutCause(jctx, b.timeout, errBuildTimeout)
	pushed, err := b.steps(tctx, j)
	timedOut := context.Cause(tctx) == errBuildTimeout
	tcancel()
	close(hbStop)
	<-hbDone

	if reason := j.stopReason(); reason != nil {
		lg.Printf("==> stopped: %s", strings.TrimSuffix(reason.Error(), ": "+hubmesh.ErrDenied.Error()))
		d, size, err := lg.finish() // kept for a while for readers (buildLogKeep)
		log.Info("build stopped", "reason", reason)
		if err == nil {
			b.keepCancelledLog(ctx, j, lg, d.String(), size)
		}
		return
	}
	if ctx.Err() != nil {
		lg.Printf("==> stopped: the builder is shutting down; another builder takes the build over when its lease expires")
		_, _, _ = lg.finish()
		return
	}
	u := consensus.UpdateBuild{State: hubmesh.BuildSuccess, Digest: pushed}
	switch {
	case timedOut:
		u.State, u.Digest = hubmesh.BuildFailure, ""
		u.Message = fmt.Sprintf("build timed out after %s", b.timeout)
	case err != nil:
		u.State, u.Digest = hubmesh.BuildFailure, ""
		u.Message = j.message(err)
	}
	if u.State == hubmesh.BuildSuccess {
		lg.Printf("==> done %s", pushed)
	} else {
		lg.Printf("==> failed: %s", u.Message)
	}
	d, size, err := lg.finish()
	if err == nil {
		err = b.keep(ctx, bd.Repo, d, size, lg.path)
	}
	if err != nil {
		log.Warn("build log not stored", "err", err)
	} else {
		u.LogDigest, u.LogSize = d.String(), size
	}
	if b.record(ctx, j, u) && u.LogDigest != "" {
		b.logs.remove(lg)
	}
	log.Info("build finished", "state", u.State, "message", u.Message, "digest", u.Digest)
}

// keepCancelledLog stores the log of j as a blob and records it when j
// was stopped because it was cancelled while this builder ran it (not when
// its lease went to another builder, whose attempt has its own log).
func (b *builder) keepCancelledLog(ctx context.Context, j *buildJob, lg *liveLog, d string, size int64) {
	cur, err := b.queue.Build(ctx, j.Build.ID)
	if err != nil || cur.State != hubmesh.BuildCancelled || cur.Builder != b.id || cur.Attempt != j.Build.Attempt || cur.LogDigest != "" {
		return
	}
	if err := b.keep(ctx, j.Build.Repo, digest.Digest(d), size, lg.path); err != nil {
		b.log.Warn("build log not stored", "build", j.Build.ID, "err", err)
		return
	}
	if b.record(ctx, j, consensus.UpdateBuild{LogDigest: d, LogSize: size}) {
		b.logs.remove(lg)
	}
}

// message is the one-line message recorded for a failed build, without
// credentials.
func (j *buildJob) message(err error) string {
	m := strings.Join(strings.Fields(err.Error()), " ")
	j.mu.Lock()
	for _, s := range j.secrets {
		m = strings.ReplaceAll(m, s, "***")
	}
	j.mu.Unlock()
	return clip(m, maxBuildMessage)
}

// heartbeat renews the lease of j every lease/3 until stop is closed.
func (b *builder) heartbeat(ctx context.Context, j *buildJob, stop <-chan struct{}) {
	t := time.NewTicker(max(b.lease/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := b.update(ctx, j, consensus.UpdateBuild{}); err != nil && !errors.Is(err, hubmesh.ErrDenied) && ctx.Err() == nil {
			b.log.Warn("build heartbeat", "build", j.Build.ID, "err", err)
		}
	}
}

// update proposes u for j's attempt with a renewed lease, retrying while
// the cluster cannot take it, for at most a lease. A refusal (ErrDenied:
// cancelled or taken over) stops the job.
func (b *builder) update(ctx context.Context, j *buildJob, u consensus.UpdateBuild) (hubmesh.Build, error) {
	rctx, cancel := context.WithTimeout(ctx, b.lease)
	defer cancel()
	return b.propose(rctx, j, u)
}

// record proposes the final update of j, retrying for buildRecordFor. It
// reports whether the update was recorded.
func (b *builder) record(ctx context.Context, j *buildJob, u consensus.UpdateBuild) bool {
	rctx, cancel := context.WithTimeout(ctx, buildRecordFor)
	defer cancel()
	_, err := b.propose(rctx, j, u)
	switch {
	case err == nil:
		return true
	case errors.Is(err, hubmesh.ErrDenied):
		b.log.Info("build outcome not recorded", "build", j.Build.ID, "err", err)
	default:
		b.log.Warn("build outcome not recorded", "build", j.Build.ID, "err", err)
	}
	return false
}

func (b *builder) propose(ctx context.Context, j *buildJob, u consensus.UpdateBuild) (hubmesh.Build, error) {
	pause := 50 * time.Millisecond
	for {
		now := b.now()
		u.ID, u.Builder, u.Attempt, u.At = j.Build.ID, b.id, j.Build.Attempt, now
		if !hubmesh.BuildFinished(u.State) {
			u.LeaseUntil = now.Add(b.lease)
		}
		res, err := b.queue.UpdateBuild(ctx, u)
		if errors.Is(err, hubmesh.ErrDenied) || errors.Is(err, hubmesh.ErrNotFound) {
			j.stop(fmt.Errorf("%w", err))
			return res, err
		}
		if err == nil || !errors.Is(err, hubmesh.ErrUnavailable) && !errors.Is(err, hubmesh.ErrNotLeader) {
			return res, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
		pause = min(pause*2, 2*time.Second)
	}
}

// ---- the steps of a build with a Docker Engine ----

// buildSettingsSource is where the steps read a repository's settings.
type buildSettingsSource interface {
	BuildSettings(ctx context.Context, repo string) (hubmesh.BuildSettings, error)
}

// dockerSteps clones, builds and pushes with a Docker Engine.
type dockerSteps struct {
	settings buildSettingsSource
	engine   *build.Engine
	// registry is host:port of this mesh as the Docker daemon reaches it.
	registry string
	// token issues the push token of a build.
	token   func(repo, buildID string, ttl time.Duration) (string, error)
	workDir string
	log     *slog.Logger
}

// run implements builder.steps.
func (s *dockerSteps) run(ctx context.Context, j *buildJob) (string, error) {
	bd, lg := j.Build, j.Log
	settings, err := s.settings.BuildSettings(ctx, bd.Repo)
	if errors.Is(err, hubmesh.ErrNotFound) {
		return "", fmt.Errorf("repository %s has no build settings (any more)", bd.Repo)
	}
	if err != nil {
		return "", err
	}
	src := build.SourceOf(settings.Source)
	j.Redact(src.Password)
	j.Redact(src.SSHKeyPassphrase)

	if err := j.Step(ctx, hubmesh.BuildCloning, ""); err != nil {
		return "", err
	}
	lg.Printf("==> cloning %s %s %s", redactURL(src.URL), bd.SourceType, bd.SourceName)
	dir := filepath.Join(s.workDir, bd.ID)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("work dir: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("build work dir not removed", "dir", dir, "err", err)
		}
	}()
	commit, err := build.Checkout(ctx, src, build.Ref{Type: build.SourceType(bd.SourceType), Name: bd.SourceName, Commit: bd.Commit}, dir)
	if err != nil {
		return "", err
	}
	lg.Printf("==> commit %s", commit)
	if err := j.Step(ctx, hubmesh.BuildBuilding, commit); err != nil {
		return "", err
	}

	lg.Printf("==> building %s in %s", bd.Dockerfile, bd.Context)
	ctxDir, err := contextDir(dir, bd.Context)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(filepath.Join(ctxDir, filepath.FromSlash(bd.Dockerfile))); err != nil || fi.IsDir() {
		return "", fmt.Errorf("no Dockerfile %q in the build context %q at commit %s", bd.Dockerfile, bd.Context, commit)
	}
	tar, err := build.TarContext(ctxDir, bd.Dockerfile)
	if err != nil {
		return "", err
	}
	refs := make([]string, len(bd.Tags))
	for i, t := range bd.Tags {
		refs[i] = s.registry + "/" + bd.Repo + ":" + t
	}
	defer s.removeImages(refs)
	labels := map[string]string{"org.opencontainers.image.revision": commit}
	if u := redactURL(src.URL); strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		labels["org.opencontainers.image.source"] = u
	}
	_, err = s.engine.Build(ctx, tar, build.BuildOptions{
		Tags: refs, Dockerfile: bd.Dockerfile, BuildArgs: settings.BuildArgs, Labels: labels, NoCache: !bd.BuildCache,
	}, lg)
	tar.Close()
	if err != nil {
		return "", err
	}

	if err := j.Step(ctx, hubmesh.BuildPushing, ""); err != nil {
		return "", err
	}
	var pushed string
	for _, ref := range refs {
		tok, err := s.token(bd.Repo, bd.ID, buildTokenTTL)
		if err != nil {
			return "", fmt.Errorf("push token: %w", err)
		}
		j.Redact(tok)
		lg.Printf("==> pushing %s", ref)
		d, err := s.engine.Push(ctx, ref, build.RegistryAuth{RegistryToken: tok}, lg)
		if err != nil {
			return "", err
		}
		pushed = d
	}
	return pushed, nil
}

// contextDir resolves the build context rel inside the checkout dir,
// refusing one that leaves it through a symlink.
func contextDir(dir, rel string) (string, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("no build context %q in the repository", rel)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if r, err := filepath.Rel(root, real); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("build context %q leaves the repository", rel)
	}
	return real, nil
}

// removeImages removes a build's tags from the daemon.
func (s *dockerSteps) removeImages(refs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), buildCleanupTimeout)
	defer cancel()
	for _, ref := range refs {
		if err := s.engine.RemoveImage(ctx, ref); err != nil && !errors.Is(err, hubmesh.ErrNotFound) {
			s.log.Warn("build image not removed", "ref", ref, "err", err)
		}
	}
}

// redactURL drops user information from a URL.
func redactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if at := strings.LastIndex(u[i+3:], "@"); at >= 0 && !strings.Contains(u[i+3:i+3+at], "/") {
			return u[:i+3] + u[i+3+at+1:]
		}
	}
	return u
}
