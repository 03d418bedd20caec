package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// The services of deploy/docker-compose.yml.
var composeServices = []string{"node1", "node2", "node3"}

const (
	// composeCmdTimeout bounds one docker or docker-compose command.
	composeCmdTimeout = 2 * time.Minute
	// composeFormTimeout bounds the wait for the three nodes to form one
	// cluster after `docker-compose up`.
	composeFormTimeout = 90 * time.Second
	// httpTimeout bounds one HTTP request of the tests.
	httpTimeout = 15 * time.Second
)

// composeCluster is one running copy of deploy/docker-compose.yml under a
// project name of its own, with the node ports bound to free loopback
// ports. Everything it creates is removed by `docker-compose down -v` when
// the test ends.
type composeCluster struct {
	t       *testing.T
	docker  string
	compose string
	files   []string // compose files, in order
	project string
	env     []string
	// admin is the administrator node1 creates from the password file the
	// test hands it (HUBMESH_ADMIN_PASSWORD_FILE).
	admin credentials
}

// randomHex returns 2n random hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runCmd runs name with args and env (added to the environment of the
// test) under a deadline and returns the trimmed stdout.
func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, composeCmdTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// buildHubmeshImage builds the project image the way `make image` does
// (the binary under test plus deploy/Dockerfile) under a unique tag, which
// it removes when the test ends.
func buildHubmeshImage(t *testing.T, docker string) string {
	t.Helper()
	bin := nodetest.Binary(t)
	buildDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(buildDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, bin, filepath.Join(buildDir, "bin", "hubmesh"), 0o755)
	copyFile(t, "Dockerfile", filepath.Join(buildDir, "Dockerfile"), 0o644)
	tag := "hubmesh-compose-test:" + randomHex(4)
	if _, err := runCmd(t.Context(), []string{"DOCKER_BUILDKIT=0"}, docker, "build", "--quiet", "-t", tag, buildDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = runCmd(context.Background(), nil, docker, "image", "rm", "--force", tag) })
	return tag
}

// startCompose builds the image, brings deploy/docker-compose.yml up and
// waits until the three nodes report one cluster of three live voters.
func startCompose(t *testing.T) *composeCluster {
	t.Helper()
	c := newCompose(t, "docker-compose.yml")
	if c == nil {
		return nil
	}
	start := time.Now()
	c.composeRun("up", "--detach", "--no-color")
	c.waitFormed(composeServices...)
	t.Logf("compose project %s: three voters formed one cluster in %s", c.project, time.Since(start).Round(time.Millisecond))
	return c
}

// newCompose builds the image and prepares a project of the compose files
// (relative to deploy/, later ones override earlier ones, as with
// `docker-compose -f a -f b`) with the node ports bound to free loopback
// ports; the caller adds to env and brings it up. It returns nil when the
// test is skipped for want of docker or docker-compose.
func newCompose(t *testing.T, files ...string) *composeCluster {
	t.Helper()
	docker := nodetest.RequireDocker(t)
	if docker == "" {
		return nil
	}
	compose := nodetest.Tool(t, "docker-compose")
	if compose == "" {
		return nil
	}
	var abs []string
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		abs = append(abs, a)
	}
	image := buildHubmeshImage(t, docker)
	admin := credentials{user: "admin", password: randomHex(16)}
	c := &composeCluster{
		t: t, docker: docker, compose: compose, files: abs,
		project: "hmtest" + randomHex(4),
		admin:   admin,
		env: []string{
			"HUBMESH_IMAGE=" + image,
			"HUBMESH_ADMIN_PASSWORD_FILE=" + writePasswordFile(t, admin.password),
			"HUBMESH_NODE1_PORT=127.0.0.1:0",
			"HUBMESH_NODE2_PORT=127.0.0.1:0",
			"HUBMESH_NODE3_PORT=127.0.0.1:0",
			"HUBMESH_REPLICAS=2",
			"HUBMESH_LOG_LEVEL=info",
		},
	}
	t.Cleanup(c.down)
	c.t.Logf("built image %s", image)
	return c
}

// down dumps the logs of a failed test and removes every container,
// network and volume of the project.
func (c *composeCluster) down() {
	if c.t.Failed() {
		if logs, err := runCmd(context.Background(), c.env, c.compose, c.args("logs", "--no-color", "--tail", "60")...); err == nil {
			c.t.Logf("docker-compose logs (last lines of each node):\n%s", logs)
		}
	}
	start := time.Now()
	if _, err := runCmd(context.Background(), c.env, c.compose, c.args("down", "--volumes", "--remove-orphans", "--timeout", "10")...); err != nil {
		c.t.Errorf("cleanup: %v", err)
	}
	c.t.Logf("docker-compose down: %s", time.Since(start).Round(time.Millisecond))
}

func (c *composeCluster) args(args ...string) []string {
	out := []string{"--project-name", c.project}
	for _, f := range c.files {
		out = append(out, "--file", f)
	}
	return append(append(out, "--ansi", "never"), args...)
}

// composeRun runs a docker-compose command on the project.
func (c *composeCluster) composeRun(args ...string) string {
	c.t.Helper()
	out, err := runCmd(c.t.Context(), c.env, c.compose, c.args(args...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// dockerRun runs a docker CLI command.
func (c *composeCluster) dockerRun(args ...string) string {
	c.t.Helper()
	return c.dockerRunEnv(nil, args...)
}

// dockerRunEnv runs a docker CLI command with env added.
func (c *composeCluster) dockerRunEnv(env []string, args ...string) string {
	c.t.Helper()
	out, err := runCmd(c.t.Context(), append([]string{"DOCKER_BUILDKIT=0"}, env...), c.docker, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// dockerAuth is the environment of a docker CLI command that logs in to
// the registry at addr as the administrator: DOCKER_CONFIG naming a
// config of the test's own. A restarted node has a new port, so each push
// and pull writes one.
func (c *composeCluster) dockerAuth(addr string) []string {
	c.t.Helper()
	return []string{"DOCKER_CONFIG=" + nodetest.DockerConfig(c.t, []string{addr}, c.admin.user, c.admin.password)}
}

// container returns the ID of the container of service.
func (c *composeCluster) container(service string) string {
	c.t.Helper()
	id := c.dockerRun("ps", "--all", "--quiet",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.service="+service)
	if id == "" || strings.Contains(id, "\n") {
		c.t.Fatalf("container of %s: %q", service, id)
	}
	return id
}

// addr returns the host address (127.0.0.1:port) that service's registry
// port is published on now; a restarted container gets a new port.
func (c *composeCluster) addr(service string) string {
	c.t.Helper()
	addr, err := c.addrTry(c.t.Context(), service)
	if err != nil {
		c.t.Fatal(err)
	}
	return addr
}

// addrTry is addr for polling loops: a container that is (re)starting has
// no published port yet.
func (c *composeCluster) addrTry(ctx context.Context, service string) (string, error) {
	out, err := runCmd(ctx, nil, c.docker, "ps", "--all", "--quiet",
		"--filter", "label=com.docker.compose.project="+c.project,
		"--filter", "label=com.docker.compose.service="+service)
	if err != nil {
		return "", err
	}
	if out == "" || strings.Contains(out, "\n") {
		return "", fmt.Errorf("container of %s: %q", service, out)
	}
	if out, err = runCmd(ctx, nil, c.docker, "port", out, "5000/tcp"); err != nil {
		return "", err
	}
	addr := strings.Split(out, "\n")[0]
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("published port of %s: %q", service, out)
	}
	return addr, nil
}

var httpClient = &http.Client{Timeout: httpTimeout}

// status asks the node whose registry is published at addr for its view
// of the cluster.
func status(ctx context.Context, addr string) (nodetest.Status, error) {
	return nodetest.GetStatus(ctx, "http://"+addr)
}

// serviceOf maps a member's advertised HTTP address (nodeN:5000, from the
// compose hostname) to its compose service.
func serviceOf(st nodetest.Status, id string) string {
	for _, m := range st.Members {
		if m.ID == id {
			host, _, _ := net.SplitHostPort(m.HTTP)
			return host
		}
	}
	return ""
}

// eventually calls f every 250 ms until it returns nil, and fails the test
// with f's last error when timeout passes first.
func eventually(t *testing.T, timeout time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// waitFormed waits until every listed node reports the same healthy
// cluster with the same leader and three voters, all reachable from it.
func (c *composeCluster) waitFormed(services ...string) nodetest.Status {
	c.t.Helper()
	var last nodetest.Status
	eventually(c.t, composeFormTimeout, "one cluster of three live voters", func(ctx context.Context) error {
		leader := ""
		for _, s := range services {
			addr, err := c.addrTry(ctx, s)
			if err != nil {
				return err
			}
			st, err := status(ctx, addr)
			if err != nil {
				return err
			}
			if err := threeLiveVoters(st); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s sees leader %s, others %s", s, st.Leader, leader)
			}
			leader, last = st.Leader, st
		}
		return nil
	})
	return last
}

func threeLiveVoters(st nodetest.Status) error {
	if !st.Healthy || st.Leader == "" {
		return fmt.Errorf("no leader (raft %s)", st.Raft.State)
	}
	if len(st.Members) != 3 {
		return fmt.Errorf("%d members, want 3", len(st.Members))
	}
	for _, m := range st.Members {
		if m.Role != "voter" || m.State != "alive" {
			return fmt.Errorf("member %s (%s) is %s %s", m.ID, m.HTTP, m.Role, m.State)
		}
	}
	return nil
}

// waitCaughtUp waits until service has a leader and has applied at least
// index.
func (c *composeCluster) waitCaughtUp(service string, index uint64, timeout time.Duration) nodetest.Status {
	c.t.Helper()
	var st nodetest.Status
	eventually(c.t, timeout, service+" catches up to index "+fmt.Sprint(index), func(ctx context.Context) error {
		addr, err := c.addrTry(ctx, service)
		if err != nil {
			return err
		}
		if st, err = status(ctx, addr); err != nil {
			return err
		}
		if st.Leader == "" || st.Raft.AppliedIndex < index {
			return fmt.Errorf("leader %q, applied %d", st.Leader, st.Raft.AppliedIndex)
		}
		return nil
	})
	return st
}

// testImage is a one-file FROM scratch image pushed to the cluster.
type testImage struct {
	repoTag string // alice/app:tag, without a registry
	id      string // local image ID
	digest  string // registry manifest digest
}

// push builds a new image with unique content and pushes it with the
// docker CLI to service as repoTag; the local copy is removed afterwards,
// so a later pull has to fetch every layer.
func (c *composeCluster) push(service, repoTag string) testImage {
	c.t.Helper()
	dir := c.t.TempDir()
	files := map[string]string{
		"hello.txt":  "hubmesh compose " + repoTag + " " + randomHex(16) + "\n",
		"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	addr := c.addr(service)
	ref := addr + "/" + repoTag
	c.dockerRun("build", "--quiet", "-t", ref, dir)
	c.t.Cleanup(func() { _, _ = runCmd(context.Background(), nil, c.docker, "image", "rm", "--force", ref) })
	img := testImage{repoTag: repoTag, id: c.dockerRun("image", "inspect", "--format", "{{.Id}}", ref)}
	start := time.Now()
	c.dockerRunEnv(c.dockerAuth(addr), "push", ref)
	c.t.Logf("docker push %s to %s: %s", repoTag, service, time.Since(start).Round(time.Millisecond))
	img.digest = repoDigest(c.t, c.dockerRun("image", "inspect", "--format", "{{json .RepoDigests}}", ref))
	c.dockerRun("image", "rm", ref)
	return img
}

// pull pulls img with the docker CLI from service and checks that it is
// the image pushed: same image ID, same registry digest. The local copy is
// removed again.
func (c *composeCluster) pull(service string, img testImage) {
	c.t.Helper()
	addr := c.addr(service)
	ref := addr + "/" + img.repoTag
	c.t.Cleanup(func() { _, _ = runCmd(context.Background(), nil, c.docker, "image", "rm", "--force", ref) })
	start := time.Now()
	c.dockerRunEnv(c.dockerAuth(addr), "pull", ref)
	c.t.Logf("docker pull %s from %s: %s", img.repoTag, service, time.Since(start).Round(time.Millisecond))
	if id := c.dockerRun("image", "inspect", "--format", "{{.Id}}", ref); id != img.id {
		c.t.Fatalf("%s pulled from %s: image %s, want the pushed %s", img.repoTag, service, id, img.id)
	}
	if d := repoDigest(c.t, c.dockerRun("image", "inspect", "--format", "{{json .RepoDigests}}", ref)); d != img.digest {
		c.t.Fatalf("%s pulled from %s: digest %s, want the pushed %s", img.repoTag, service, d, img.digest)
	}
	c.dockerRun("image", "rm", ref)
}

// repoDigest returns the one manifest digest in a RepoDigests list.
func repoDigest(t *testing.T, js string) string {
	t.Helper()
	var rds []string
	if err := json.Unmarshal([]byte(js), &rds); err != nil {
		t.Fatalf("RepoDigests %s: %v", js, err)
	}
	var ds []string
	for _, rd := range rds {
		if _, d, ok := strings.Cut(rd, "@"); ok && !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	if len(ds) != 1 {
		t.Fatalf("RepoDigests %s: want one digest", js)
	}
	return ds[0]
}

// others returns the services other than except.
func others(except ...string) []string {
	var out []string
	for _, s := range composeServices {
		if !slices.Contains(except, s) {
			out = append(out, s)
		}
	}
	return out
}
