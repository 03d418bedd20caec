package main_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh/node/nodetest"
)

// cliTimeout bounds one CLI invocation that is expected to end by itself.
const cliTimeout = time.Minute

// cliRun runs the hubmesh binary and returns stdout, stderr and the exit
// code (-1 when it did not exit normally).
func cliRun(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	bin := nodetest.Binary(t)
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	o, e, err := runCommandIn(t, cliTimeout, t.TempDir(), append(environ, env...), bin, args...)
	code = 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("hubmesh %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return string(o), string(e), code
}

// requireOneErrorLine asserts a failed run: non-zero exit, and stderr a
// single line that mentions each of want, with no panic or usage dump.
func requireOneErrorLine(t *testing.T, stderr string, code int, want ...string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit code 0, want non-zero; stderr %q", stderr)
	}
	ls := lines([]byte(stderr))
	if len(ls) != 1 {
		t.Fatalf("stderr has %d lines, want one clear line:\n%s", len(ls), stderr)
	}
	for _, w := range want {
		if !strings.Contains(ls[0], w) {
			t.Errorf("stderr %q does not mention %q", ls[0], w)
		}
	}
}

// requireClearFailure asserts a run that failed at start-up: non-zero exit
// and a last stderr line that mentions each of want. Log lines written
// before the failure may precede it.
func requireClearFailure(t *testing.T, stderr string, code int, want ...string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit code 0, want non-zero; stderr %q", stderr)
	}
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("stderr shows a panic:\n%s", stderr)
	}
	ls := lines([]byte(stderr))
	if len(ls) == 0 {
		t.Fatalf("exit code %d with nothing on stderr", code)
	}
	last := ls[len(ls)-1]
	for _, w := range want {
		if !strings.Contains(last, w) {
			t.Errorf("last stderr line %q does not mention %q; stderr:\n%s", last, w, stderr)
		}
	}
}

// serveArgs are the flags of a serve that would otherwise start fine.
func serveArgs(t *testing.T, dataDir, httpAddr string) []string {
	return []string{"serve",
		"--data-dir", dataDir,
		"--http-addr", httpAddr,
		"--p2p-addr", "/ip4/127.0.0.1/tcp/0",
		"--addr-file", filepath.Join(t.TempDir(), "addr.json"),
	}
}

func TestCLIVersion(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := cliRun(t, nil, "version")
	if code != 0 || strings.TrimSpace(stdout) == "" {
		t.Fatalf("hubmesh version: exit %d, stdout %q, stderr %q; want exit 0 and a version", code, stdout, stderr)
	}
	t.Logf("hubmesh version: %s", strings.TrimSpace(stdout))
}

func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"healthcheck", "--help"},
		{"user", "--help"}, {"team", "grant", "--help"}, {"token", "create", "--help"}, {"repo", "set", "--help"}} {
		stdout, stderr, code := cliRun(t, nil, args...)
		if code != 0 || !strings.Contains(stdout, "Usage:") {
			t.Errorf("hubmesh %s: exit %d, stdout %q, stderr %q; want exit 0 and usage", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, []string{"--no-such-flag"}},
		{"unknown command", []string{"no-such-command"}, []string{"no-such-command"}},
		{"bad http addr", []string{"serve", "--data-dir", "unused", "--http-addr", "not-an-address"}, []string{"not-an-address"}},
		{"bad log level", []string{"serve", "--data-dir", "unused", "--log-level", "loud"}, []string{"loud"}},
		{"bad p2p addr", []string{"serve", "--data-dir", "unused", "--p2p-addr", "/ip4/999.1.1.1/tcp/0"}, []string{"999.1.1.1"}},
		{"healthcheck bad addr", []string{"healthcheck", "--addr", "nonsense"}, []string{"nonsense"}},
		{"unknown subcommand", []string{"user", "frobnicate"}, []string{"frobnicate"}},
		{"user create without password", []string{"user", "create", "alice"}, []string{"--password-stdin"}},
		{"bad team", []string{"team", "create", "acme"}, []string{"ORG/TEAM"}},
		{"bad permission", []string{"team", "grant", "acme/dev", "acme/api", "owner"}, []string{"owner", "read, write or admin"}},
		{"bad scope", []string{"token", "create", "--scope", "root"}, []string{"root"}},
		{"bad expiry", []string{"token", "create", "--expires", "soon"}, []string{"soon"}},
		{"repo set nothing", []string{"repo", "set", "alice/app"}, []string{"--private"}},
		{"repo set both", []string{"repo", "set", "alice/app", "--private", "--public"}, []string{"--private", "--public"}},
		{"bad format", []string{"user", "ls", "--format", "yaml"}, []string{"yaml"}},
		{"missing argument", []string{"repo", "rm"}, []string{"repo rm", "one repository name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := cliRun(t, nil, tc.args...)
			requireOneErrorLine(t, stderr, code, tc.want...)
		})
	}
}

func TestCLIUnwritableDataDir(t *testing.T) {
	t.Parallel()
	// A data dir below a regular file cannot be created, even by root
	// (permission bits would not stop root).
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(file, "data")
	_, stderr, code := cliRun(t, nil, serveArgs(t, dataDir, "127.0.0.1:0")...)
	requireClearFailure(t, stderr, code, dataDir)
}

func TestCLIHTTPPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	_, stderr, code := cliRun(t, nil, serveArgs(t, t.TempDir(), addr)...)
	requireClearFailure(t, stderr, code, addr)
	if !strings.Contains(stderr, "address already in use") {
		t.Errorf("stderr does not say the address is in use:\n%s", stderr)
	}
}

func TestCLIHealthcheck(t *testing.T) {
	t.Parallel()
	p := nodetest.Start(t, nodetest.Options{})
	if _, stderr, code := cliRun(t, nil, "healthcheck", "--addr", p.Addr()); code != 0 {
		t.Fatalf("healthcheck of a running node: exit %d, stderr %q", code, stderr)
	}
	// The environment twin of --http-addr works too.
	if _, stderr, code := cliRun(t, []string{"HUBMESH_HTTP_ADDR=" + p.Addr()}, "healthcheck"); code != 0 {
		t.Fatalf("healthcheck with HUBMESH_HTTP_ADDR: exit %d, stderr %q", code, stderr)
	}

	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()
	addr := strings.TrimPrefix(unhealthy.URL, "http://")
	_, stderr, code := cliRun(t, nil, "healthcheck", "--addr", addr)
	requireOneErrorLine(t, stderr, code, "503")

	stopped := p.Addr()
	p.Stop()
	_, stderr, code = cliRun(t, nil, "healthcheck", "--addr", stopped)
	requireOneErrorLine(t, stderr, code, stopped)
}
