package main_test

// Automated builds end to end (issue 7): a three-node cluster whose nodes
// 2 and 3 are builders on the machine's Docker daemon, a git repository
// made with go-git in a temp dir, settings made with the real CLI, and
// images checked through node 1, which never builds.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/hubmesh/hubmesh"
	"github.com/hubmesh/hubmesh/node/nodetest"
)

// Deadlines of the build tests.
const (
	// buildDeadline bounds one build from trigger to its final state.
	buildDeadline = 2 * time.Minute
	// buildLease is the builders' lease: short, so that a killed builder's
	// build moves to the other one within seconds.
	buildLease = "6s"
	// buildPoll is how often a waiting test looks at a build.
	buildPoll = 250 * time.Millisecond
)

// busyboxBinary is the static busybox that the base image is made of:
// /bin/busybox (Debian's busybox-static, which scripts/install-tools.sh
// installs), else busybox on PATH.
func busyboxBinary(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/bin/busybox"); err == nil && st.Mode().IsRegular() {
		return "/bin/busybox"
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		return p
	}
	nodetest.Missing(t, "busybox: no /bin/busybox and none on PATH (make tools installs busybox-static)")
	return ""
}

// buildCluster starts node 1 (no builder) and nodes 2 and 3 (builders),
// and waits until they are three alive voters agreeing on a leader.
func buildCluster(t *testing.T) (n1 *nodetest.Process, builders []*nodetest.Process) {
	t.Helper()
	n1 = nodetest.Start(t, nodetest.Options{})
	tok := nodetest.JoinToken(t, n1)
	builderArgs := []string{"--builder", "--build-lease", buildLease, "--builder-concurrency", "1"}
	for range 2 {
		builders = append(builders, nodetest.Join(t, n1, tok, nodetest.Options{Args: builderArgs}))
	}
	all := append([]*nodetest.Process{n1}, builders...)
	for _, p := range all {
		nodetest.WaitStatus(t, p, nodetest.DefaultClusterTimeout, "3 alive voters", func(s nodetest.Status) bool {
			return s.Count("voter", "alive") == 3 && len(s.Members) == 3
		})
	}
	nodetest.Leader(t, all, nodetest.DefaultClusterTimeout)
	return n1, builders
}

// removeLabelled removes the containers and images (intermediate ones too)
// that carry label, in a few passes since a parent goes only after its
// children.
func removeLabelled(docker, label string) {
	ctx := context.Background()
	run := func(args ...string) []string {
		out, _, _ := runCommandCtx(ctx, dockerTimeout, "", os.Environ(), docker, args...)
		return strings.Fields(string(out))
	}
	if ids := run("ps", "-aq", "--filter", "label="+label); len(ids) > 0 {
		run(append([]string{"rm", "--force"}, ids...)...)
	}
	for range 4 {
		ids := run("images", "-aq", "--filter", "label="+label)
		if len(ids) == 0 {
			return
		}
		run(append([]string{"rmi", "--force"}, ids...)...)
	}
}

// gitRepo is the build source: a repository on disk made with go-git.
type gitRepo struct {
	t    *testing.T
	dir  string
	repo *git.Repository
	wt   *git.Worktree
}

func newGitRepo(t *testing.T) *gitRepo {
	dir := t.TempDir()
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")},
	})
	if err != nil {
		t.Fatal(err)
	}
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	return &gitRepo{t: t, dir: dir, repo: r, wt: wt}
}

// commit writes files (nil content removes a file) on branch, which is
// made from the current commit when it does not exist, and returns the
// commit's hash.
func (g *gitRepo) commit(branch string, files map[string][]byte) string {
	g.t.Helper()
	ref := plumbing.NewBranchReferenceName(branch)
	if head, err := g.repo.Head(); err == nil && head.Name() != ref {
		_, err := g.repo.Reference(ref, false)
		if err := g.wt.Checkout(&git.CheckoutOptions{Branch: ref, Create: err != nil}); err != nil {
			g.t.Fatalf("checkout %s: %v", branch, err)
		}
	}
	for name, content := range files {
		if content == nil {
			if _, err := g.wt.Remove(name); err != nil {
				g.t.Fatalf("git rm %s: %v", name, err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(g.dir, name), content, 0o644); err != nil {
			g.t.Fatal(err)
		}
		if _, err := g.wt.Add(name); err != nil {
			g.t.Fatalf("git add %s: %v", name, err)
		}
	}
	h, err := g.wt.Commit("commit on "+branch, &git.CommitOptions{
		Author: &object.Signature{Name: "hubmesh test", Email: "test@hubmesh.invalid", When: time.Now()},
	})
	if err != nil {
		g.t.Fatalf("commit on %s: %v", branch, err)
	}
	return h.String()
}

// tag makes a lightweight tag of commit.
func (g *gitRepo) tag(name, commit string) {
	g.t.Helper()
	if _, err := g.repo.CreateTag(name, plumbing.NewHash(commit), nil); err != nil {
		g.t.Fatalf("git tag %s: %v", name, err)
	}
}

// buildAPI reads builds through node 1 as the administrator.
type buildAPI struct {
	t    *testing.T
	reg  *registry
	repo string
}

func (a buildAPI) get(id string) hubmesh.Build {
	a.t.Helper()
	r, err := a.reg.do(a.t.Context(), http.MethodGet, "/api/v1/repositories/"+a.repo+"/builds/"+id, nil, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	var b hubmesh.Build
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &b) != nil {
		a.t.Fatalf("GET build %s: %s", id, r)
	}
	return b
}

// waitFor polls build id until cond holds, for at most timeout, and
// returns the build that satisfied it.
func (a buildAPI) waitFor(id string, timeout time.Duration, what string, cond func(hubmesh.Build) bool) hubmesh.Build {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(a.t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(buildPoll)
	defer tick.Stop()
	for {
		b := a.get(id)
		if cond(b) {
			return b
		}
		select {
		case <-ctx.Done():
			a.t.Fatalf("build %s: not %s within %s; last: state %s, attempt %d, builder %s, message %q",
				id, what, timeout, b.State, b.Attempt, b.Builder, b.Message)
		case <-tick.C:
		}
	}
}

func (a buildAPI) finished(id string) hubmesh.Build {
	a.t.Helper()
	return a.waitFor(id, buildDeadline, "finished", func(b hubmesh.Build) bool { return hubmesh.BuildFinished(b.State) })
}

// checkImage fetches repo:tag's manifest and every blob it names through
// reg and checks each against its digest; the manifest's must be want.
func checkImage(t *testing.T, reg *registry, repo, tag, want string) {
	t.Helper()
	accept := http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"}}
	r, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+tag, accept, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s:%s through %s: %s", repo, tag, reg.base, r)
	}
	if got := fmt.Sprintf("sha256:%x", sha256.Sum256(r.Body)); got != want {
		t.Fatalf("%s:%s manifest digest %s, want the build's %s", repo, tag, got, want)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(r.Body, &m); err != nil || m.Config.Digest == "" || len(m.Layers) == 0 {
		t.Fatalf("%s:%s manifest %s: %v", repo, tag, r.Body, err)
	}
	for _, d := range append([]string{m.Config.Digest}, func() []string {
		var ds []string
		for _, l := range m.Layers {
			ds = append(ds, l.Digest)
		}
		return ds
	}()...) {
		b, err := reg.do(t.Context(), http.MethodGet, "/v2/"+repo+"/blobs/"+d, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(b.Body)); b.Status != http.StatusOK || got != d {
			t.Fatalf("blob %s of %s:%s through %s: status %d, digest %s", d, repo, tag, reg.base, b.Status, got)
		}
	}
}

// decodeBuilds decodes the JSON list a build command printed.
func decodeBuilds(t *testing.T, res nodetest.CLIResult) []hubmesh.Build {
	t.Helper()
	var bs []hubmesh.Build
	if err := json.Unmarshal([]byte(res.Stdout), &bs); err != nil || len(bs) == 0 {
		t.Fatalf("builds printed: %s (%v)", res, err)
	}
	return bs
}

// decodeList decodes the JSON list `build ls --json` printed.
func decodeList(t *testing.T, out string) []hubmesh.Build {
	t.Helper()
	var bs []hubmesh.Build
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		t.Fatalf("build ls --json printed %q: %v", out, err)
	}
	return bs
}

// TestBuildsEndToEnd builds images from a git repository on builder nodes
// and checks them through a node that does not build: a branch rule, a tag
// rule with a regex capture, the trigger URL, failures, cancel and retry,
// the refusal of manual pushes, and a builder killed in the middle of a
// build.
func TestBuildsEndToEnd(t *testing.T) {
	docker := nodetest.RequireDocker(t)
	busybox := busyboxBinary(t)
	start := time.Now()
	marker := sha256Hex(randomBytes(t, 16))
	label := "hubmesh.test=" + marker[:16]
	// Every image and container of this test carries label; remove them
	// all at the end, whatever happened.
	t.Cleanup(func() { removeLabelled(docker, label) })

	n1, builders := buildCluster(t)
	user, password := n1.Admin()
	dockerEnv := []string{"DOCKER_BUILDKIT=0", "DOCKER_CONFIG=" + nodetest.DockerConfig(t, []string{n1.Addr()}, user, password)}
	dockerRun := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(string(command(t, dockerTimeout, dockerEnv, docker, args...)))
	}
	cli := func(args ...string) nodetest.CLIResult {
		t.Helper()
		return nodetest.CLI(t, 3*time.Minute, n1.Env(), args...)
	}
	ok := func(args ...string) nodetest.CLIResult {
		t.Helper()
		res := cli(args...)
		if res.Code != 0 {
			t.Fatalf("hubmesh %s: %s", strings.Join(args, " "), res)
		}
		return res
	}
	t.Logf("cluster up after %s", time.Since(start).Round(time.Millisecond))

	// The base image: FROM scratch with a static busybox, made with the
	// local daemon and pushed into the mesh as public library/busybox.
	// Its local copy goes, so that builds pull it from the mesh.
	base := n1.Addr() + "/library/busybox:latest"
	baseDir := t.TempDir()
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(baseDir, "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	baseDockerfile := "FROM scratch\nLABEL " + label + "\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
	if err := os.WriteFile(filepath.Join(baseDir, "Dockerfile"), []byte(baseDockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	dockerRun("build", "--quiet", "-t", base, baseDir)
	dockerRun("push", base)
	dockerRun("image", "rm", base)
	ok("repo", "set", "library/busybox", "--public")

	// The source: a Dockerfile with a COPY and a RUN on main; a branch
	// whose RUN fails; one without a Dockerfile; one with a long RUN.
	g := newGitRepo(t)
	dockerfile := func(runs ...string) []byte {
		s := "FROM " + n1.Addr() + "/library/busybox\nLABEL " + label + "\nCOPY greeting.txt /greeting.txt\n"
		for _, r := range runs {
			s += "RUN " + r + "\n"
		}
		return []byte(s)
	}
	mainCommit := g.commit("main", map[string][]byte{
		"Dockerfile":   dockerfile(`echo "built from $(cat /greeting.txt)" > /hello`),
		"greeting.txt": []byte(marker),
	})
	g.tag("release-1.4", mainCommit)
	g.commit("broken", map[string][]byte{"Dockerfile": dockerfile("echo about to fail && exit 7")})
	g.commit("nodockerfile", map[string][]byte{"Dockerfile": nil})
	g.commit("slow", map[string][]byte{"Dockerfile": dockerfile("sleep 30", "echo done > /done")})

	const repo = "admin/app"
	api := buildAPI{t: t, reg: adminRegistry(n1), repo: repo}
	ok("repo", "create", repo)
	res := ok("build", "configure", repo, "--source", g.dir,
		"--rule", "branch:main=>latest",
		"--rule", `tag:/^release-([0-9]+)\.([0-9]+)$/=>{\1}.{\2}`,
		"--rule", "branch:broken=>broken",
		"--rule", "branch:nodockerfile=>nodockerfile",
		"--rule", "branch:slow=>slow",
		"--json")
	var settings struct {
		Source struct {
			URL string `json:"url"`
		} `json:"source"`
		Rules         []hubmesh.BuildRule `json:"rules"`
		TriggerURL    string              `json:"trigger_url"`
		WebhookURL    string              `json:"webhook_url"`
		WebhookSecret string              `json:"webhook_secret"`
		AllowPushes   bool                `json:"allow_pushes"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &settings); err != nil {
		t.Fatalf("build configure --json: %s (%v)", res, err)
	}
	if settings.Source.URL != g.dir || len(settings.Rules) != 5 || settings.TriggerURL == "" || settings.WebhookURL == "" || settings.WebhookSecret == "" || settings.AllowPushes {
		t.Fatalf("settings after configure: %s", res.Stdout)
	}
	if r := settings.Rules[1]; r.SourceType != "tag" || r.SourceName != `/^release-([0-9]+)\.([0-9]+)$/` || r.Tag != `{\1}.{\2}` || !r.Autobuild || r.Dockerfile != "Dockerfile" {
		t.Fatalf("tag rule stored as %+v", r)
	}
	if out := ok("build", "settings", repo).Stdout; !strings.Contains(out, settings.TriggerURL) || !strings.Contains(out, `tag:/^release-([0-9]+)\.([0-9]+)$/=>{\1}.{\2}`) {
		t.Fatalf("build settings table lacks the trigger URL or the tag rule:\n%s", out)
	}
	t.Logf("base image and settings after %s", time.Since(start).Round(time.Millisecond))

	t.Run("BranchBuild", func(t *testing.T) {
		res := ok("build", "trigger", repo, "--source-type", "branch", "--source-name", "main", "--wait", "--timeout", buildDeadline.String(), "--json")
		b := decodeBuilds(t, res)[0]
		if b.State != hubmesh.BuildSuccess || b.Commit != mainCommit || g.head("main") != mainCommit || len(b.Tags) != 1 || b.Tags[0] != "latest" ||
			b.Trigger != hubmesh.TriggerManual || b.Attempt != 1 || !strings.HasPrefix(b.Digest, "sha256:") {
			t.Fatalf("main build: %+v", b)
		}
		if b.Builder != builders[0].PeerID() && b.Builder != builders[1].PeerID() {
			t.Fatalf("main build ran on %q, not on a builder node", b.Builder)
		}
		// Through node 1, which never builds: the bytes, then the docker CLI.
		checkImage(t, api.reg, repo, "latest", b.Digest)
		ref := n1.Addr() + "/" + repo + ":latest"
		dockerRun("pull", ref)
		if got := dockerRun("run", "--rm", ref, "cat", "/hello"); got != "built from "+marker {
			t.Fatalf("/hello in %s: %q, want %q", ref, got, "built from "+marker)
		}
		if got := dockerRun("image", "inspect", "--format", "{{json .RepoDigests}}", ref); !strings.Contains(got, b.Digest) {
			t.Fatalf("pulled %s has RepoDigests %s, want %s", ref, got, b.Digest)
		}
		// The full log, kept after the build, names the commit and steps.
		log := ok("build", "logs", repo, b.ID).Stdout
		for _, want := range []string{mainCommit, "COPY greeting.txt /greeting.txt", "cat /greeting.txt", "==>"} {
			if !strings.Contains(log, want) {
				t.Errorf("log of %s lacks %q:\n%s", b.ID, want, log)
			}
		}
		if ls := ok("build", "ls", repo).Stdout; !strings.Contains(ls, b.ID) || !strings.Contains(ls, "success") {
			t.Errorf("build ls lacks %s:\n%s", b.ID, ls)
		}
	})

	// A git host reports a push to main (GitHub's payload and signature):
	// the new commit is built and the image changes.
	t.Run("PushWebhook", func(t *testing.T) {
		greeting := "pushed " + marker[:12]
		commit := g.commit("main", map[string][]byte{"greeting.txt": []byte(greeting)})
		body, err := json.Marshal(map[string]any{
			"ref": "refs/heads/main", "before": mainCommit, "after": commit,
			"repository": map[string]any{"full_name": "acme/app", "clone_url": g.dir},
		})
		if err != nil {
			t.Fatal(err)
		}
		post := func(sig string) (int, []byte) {
			t.Helper()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, settings.WebhookURL, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-GitHub-Delivery", marker[:8])
			req.Header.Set("X-Hub-Signature-256", sig)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, buf.Bytes()
		}
		if code, out := post("sha256=" + strings.Repeat("0", 64)); code != http.StatusForbidden {
			t.Fatalf("webhook with a wrong signature: %d %s; want 403", code, out)
		}
		mac := hmac.New(sha256.New, []byte(settings.WebhookSecret))
		mac.Write(body)
		code, out := post("sha256=" + hex.EncodeToString(mac.Sum(nil)))
		var queued struct {
			Builds []hubmesh.Build `json:"builds"`
		}
		if err := json.Unmarshal(out, &queued); err != nil || code != http.StatusAccepted || len(queued.Builds) != 1 {
			t.Fatalf("webhook: %d %s (%v); want one build queued", code, out, err)
		}
		b := api.finished(queued.Builds[0].ID)
		if b.State != hubmesh.BuildSuccess || b.Commit != commit || b.Trigger != hubmesh.TriggerWebhook || len(b.Tags) != 1 || b.Tags[0] != "latest" {
			t.Fatalf("webhook build: %+v", b)
		}
		checkImage(t, api.reg, repo, "latest", b.Digest)
		ref := n1.Addr() + "/" + repo + ":latest"
		dockerRun("pull", ref)
		if got := dockerRun("run", "--rm", ref, "cat", "/hello"); got != "built from "+greeting {
			t.Fatalf("/hello in %s after the pushed commit: %q, want %q", ref, got, "built from "+greeting)
		}
	})

	t.Run("TriggerURLAndTagRule", func(t *testing.T) {
		u := settings.TriggerURL
		i := strings.Index(u, "/api/v1/")
		if i < 0 {
			t.Fatalf("trigger URL %q", u)
		}
		anon := newRegistry(n1.URL())
		path := u[i:]
		wrong := path[:strings.LastIndex(path, "/")+1] + strings.Repeat("0", 32)
		body := `{"source_type":"Tag","source_name":"release-1.4"}`
		for _, p := range []string{wrong, "/api/v1/repositories/admin/nothing/trigger/" + path[strings.LastIndex(path, "/")+1:]} {
			r, err := anon.do(t.Context(), http.MethodPost, p, http.Header{"Content-Type": {"application/json"}}, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != http.StatusForbidden {
				t.Fatalf("POST %s: %s, want 403", p, r)
			}
		}
		r, err := anon.do(t.Context(), http.MethodPost, path, http.Header{"Content-Type": {"application/json"}}, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var q struct {
			Builds []hubmesh.Build `json:"builds"`
		}
		if r.Status != http.StatusAccepted || json.Unmarshal(r.Body, &q) != nil || len(q.Builds) != 1 {
			t.Fatalf("POST trigger URL: %s, want 202 with one build", r)
		}
		id := q.Builds[0].ID
		// Follow the log through node 1 while the build runs on a builder:
		// the command ends when the build does.
		log := nodetest.CLI(t, buildDeadline, n1.Env(), "build", "logs", repo, id, "--follow")
		if log.Code != 0 {
			t.Fatalf("build logs --follow: %s", log)
		}
		b := api.finished(id)
		if b.State != hubmesh.BuildSuccess || b.Trigger != hubmesh.TriggerURL || len(b.Tags) != 1 || b.Tags[0] != "1.4" ||
			b.SourceType != "tag" || b.SourceName != "release-1.4" || b.Commit != mainCommit {
			t.Fatalf("tag build: %+v", b)
		}
		if !strings.Contains(log.Stdout, mainCommit) || !strings.Contains(log.Stdout, "cat /greeting.txt") {
			t.Errorf("followed log lacks the commit or the RUN step:\n%s", log.Stdout)
		}
		checkImage(t, api.reg, repo, "1.4", b.Digest)
	})

	t.Run("Failures", func(t *testing.T) {
		for _, tc := range []struct {
			branch string
			want   []string // in the message
		}{
			{"broken", []string{"code: 7"}},
			{"nodockerfile", []string{"Dockerfile"}},
		} {
			res := cli("build", "trigger", repo, "--source-type", "branch", "--source-name", tc.branch, "--wait", "--timeout", buildDeadline.String(), "--json")
			if res.Code != 1 || len(lines([]byte(res.Stderr))) != 1 || !strings.Contains(res.Stderr, "failure") {
				t.Fatalf("trigger --wait of %s: %s; want exit 1 and one line naming the failure", tc.branch, res)
			}
			b := decodeBuilds(t, res)[0]
			if b.State != hubmesh.BuildFailure || b.Digest != "" || b.Finished.IsZero() || b.Message == "" {
				t.Fatalf("%s build: %+v", tc.branch, b)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.Message, w) || !strings.Contains(res.Stderr, w) {
					t.Errorf("%s build: message %q (stderr %q) lacks %q", tc.branch, b.Message, res.Stderr, w)
				}
			}
			if r := pullStatus(t, api.reg, repo, tc.branch); r != http.StatusNotFound {
				t.Fatalf("tag %s of a failed build: GET manifest %d, want 404", tc.branch, r)
			}
		}
	})

	t.Run("ManualPushRefused", func(t *testing.T) {
		// docker push with the administrator's credentials is refused...
		ref := n1.Addr() + "/" + repo + ":manual"
		dockerRun("pull", n1.Addr()+"/library/busybox:latest")
		dockerRun("tag", n1.Addr()+"/library/busybox:latest", ref)
		if out, errOut, err := runCommand(t, dockerTimeout, dockerEnv, docker, "push", ref); err == nil {
			t.Fatalf("docker push %s to an automated repository succeeded: %s", ref, out)
		} else {
			t.Logf("docker push refused: %s", bytes.TrimSpace(errOut))
		}
		// ...and a registry client is told why.
		r, err := api.reg.do(t.Context(), http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), "manual pushes are disabled") {
			t.Fatalf("upload to %s as admin: %s, want 403 saying manual pushes are disabled", repo, r)
		}
		if s := pullStatus(t, api.reg, repo, "manual"); s != http.StatusNotFound {
			t.Fatalf("GET %s:manual: %d, want 404", repo, s)
		}
	})

	var cancelled string
	t.Run("CancelAndRetry", func(t *testing.T) {
		// A running build is cancelled: the builder stops it and records
		// nothing more.
		cancelled = decodeBuilds(t, ok("build", "trigger", repo, "--source-type", "branch", "--source-name", "slow", "--json"))[0].ID
		api.waitFor(cancelled, buildDeadline, "claimed", func(b hubmesh.Build) bool { return b.Builder != "" })
		var b hubmesh.Build
		if err := json.Unmarshal([]byte(ok("build", "cancel", repo, cancelled, "--json").Stdout), &b); err != nil {
			t.Fatal(err)
		}
		if b.State != hubmesh.BuildCancelled || b.Finished.IsZero() || !strings.Contains(b.Message, nodetest.AdminUser) {
			t.Fatalf("cancelled build: %+v", b)
		}
		if res := cli("build", "cancel", repo, cancelled); res.Code != 1 || !strings.Contains(res.Stderr, "already") {
			t.Fatalf("second cancel: %s; want a failure saying the build is already cancelled", res)
		}
		// A retry of a failed build builds the same ref again, as a new build.
		var failed hubmesh.Build
		for _, x := range decodeList(t, ok("build", "ls", repo, "--json", "--limit", "0").Stdout) {
			if x.SourceName == "broken" {
				failed = x
			}
		}
		if failed.ID == "" {
			t.Fatal("build ls lists no build of branch broken")
		}
		res := cli("build", "retry", repo, failed.ID, "--wait", "--json", "--timeout", buildDeadline.String())
		r := decodeBuilds(t, res)[0]
		if res.Code != 1 || r.ID == failed.ID || r.RetryOf != failed.ID || r.Trigger != hubmesh.TriggerRetry ||
			r.State != hubmesh.BuildFailure || r.Commit != failed.Commit || !strings.Contains(r.Message, "code: 7") {
			t.Fatalf("retry of %s: %+v (%s)", failed.ID, r, res)
		}
	})

	t.Run("BuilderKilled", func(t *testing.T) {
		res := ok("build", "trigger", repo, "--source-type", "branch", "--source-name", "slow", "--json")
		id := decodeBuilds(t, res)[0].ID
		b := api.waitFor(id, buildDeadline, "building", func(b hubmesh.Build) bool {
			if hubmesh.BuildFinished(b.State) {
				t.Fatalf("slow build finished before it was seen building: %+v", b)
			}
			return b.State == hubmesh.BuildBuilding
		})
		var victim, other *nodetest.Process
		switch b.Builder {
		case builders[0].PeerID():
			victim, other = builders[0], builders[1]
		case builders[1].PeerID():
			victim, other = builders[1], builders[0]
		default:
			t.Fatalf("build %s runs on %q, not on a builder node", id, b.Builder)
		}
		victim.Kill()
		t.Logf("killed builder %s during %s (attempt %d)", b.Builder, id, b.Attempt)
		b = api.finished(id)
		if b.State != hubmesh.BuildSuccess || b.Attempt != 2 || b.Builder != other.PeerID() {
			t.Fatalf("slow build after its builder died: state %s, attempt %d, builder %s (want success, 2, %s); message %q",
				b.State, b.Attempt, b.Builder, other.PeerID(), b.Message)
		}
		checkImage(t, api.reg, repo, "slow", b.Digest)
		// The build cancelled before stays cancelled: its builder stopped
		// without recording more.
		if c := api.get(cancelled); c.State != hubmesh.BuildCancelled || c.Digest != "" {
			t.Errorf("cancelled build %s ended as %s (digest %q)", cancelled, c.State, c.Digest)
		}
	})
	t.Logf("builds end to end: %s", time.Since(start).Round(time.Millisecond))
}

// head is the commit branch points to.
func (g *gitRepo) head(branch string) string {
	g.t.Helper()
	r, err := g.repo.Reference(plumbing.NewBranchReferenceName(branch), true)
	if err != nil {
		g.t.Fatalf("branch %s: %v", branch, err)
	}
	return r.Hash().String()
}
