package nodetest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dockerProbeTimeout bounds the `docker version` call that decides whether
// a daemon is reachable.
const dockerProbeTimeout = 20 * time.Second

// CI reports whether the tests run under CI (CI set to anything but "",
// "0" or "false"). Under CI a missing tool or daemon fails a test instead
// of skipping it, so a broken CI machine cannot pass by skipping.
func CI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v != "" && v != "0" && v != "false"
}

// Missing skips the test with a loud message, or fails it under CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf("CI is set, so this cannot be skipped: "+format, args...)
	}
	t.Skipf("SKIPPED, NOT TESTED: "+format, args...)
}

// Tool returns the path of the client tool name: $REPO/.tools/bin/name as
// installed by scripts/install-tools.sh, else name on PATH. A missing tool
// skips the test loudly, or fails it under CI.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if root, err := ModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Missing(t, "%s not found in .tools/bin or on PATH; run scripts/install-tools.sh", name)
	return ""
}

// RequireDocker returns the docker CLI path when a Docker daemon answers.
// Otherwise it skips the test with a loud message, or fails it under CI.
func RequireDocker(t testing.TB) string {
	t.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		Missing(t, "docker CLI not on PATH: the Docker tests did not run")
		return ""
	}
	ctx, cancel := context.WithTimeout(t.Context(), dockerProbeTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}")
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		Missing(t, "Docker daemon not reachable (%v: %s): the Docker tests did not run", err, strings.TrimSpace(out.String()))
		return ""
	}
	return docker
}
