package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hubmesh/hubmesh/bench/internal/proc"
	"github.com/hubmesh/hubmesh/bench/internal/regclient"
)

// server is one registry process under test, started by the harness.
type server struct {
	*proc.Process              // Name is the column label, e.g. "hubmesh"
	version       string       // first line of the binary's version output
	base          string       // http://127.0.0.1:PORT
	hc            *http.Client // for readiness probes only
	// user and password authenticate the benchmark's client; empty for a
	// registry without authentication.
	user, password string
}

// transport is the client transport of the server: rt, with the server's
// credentials on every request when it has any.
func (s *server) transport(rt http.RoundTripper) http.RoundTripper {
	if s.user == "" {
		return rt
	}
	return regclient.BasicAuth(rt, s.user, s.password)
}

// hubmeshAdmin is the administrator hubmesh creates when it bootstraps.
const hubmeshAdmin = "admin"

// startHubmesh runs `hubmesh serve` with its data in dir and waits until it
// answers /readyz and /v2/. The HTTP address comes from the addr file. The
// node's administrator gets a random password (--admin-password-file),
// which the benchmark's client pushes and pulls with: authentication is on
// in every hubmesh node, so the figures include it.
func startHubmesh(ctx context.Context, ready time.Duration, name, bin, dir string) (*server, error) {
	data := filepath.Join(dir, "data")
	addrFile := filepath.Join(dir, "addr.json")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	password, pwFile, err := writeAdminPassword(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s, err := spawn(ctx, name, bin, dir,
		"serve", "--data-dir", data,
		"--http-addr", "127.0.0.1:0",
		"--p2p-addr", "/ip4/127.0.0.1/tcp/0",
		"--addr-file", addrFile,
		"--admin-password-file", pwFile,
		"--log-level", "error")
	if err != nil {
		return nil, err
	}
	s.user, s.password = hubmeshAdmin, password
	s.hc.Transport = s.transport(s.hc.Transport)
	s.version = proc.VersionOf(ctx, bin, "version")
	ctx, cancel := context.WithTimeout(ctx, ready)
	defer cancel()
	err = s.Poll(ctx, func() (bool, error) {
		a, ok, err := proc.ReadAddrFile(addrFile)
		if !ok || err != nil {
			return false, err
		}
		if a.HTTP == "" {
			return false, fmt.Errorf("addr file %s: no http address", addrFile)
		}
		s.base = "http://" + a.HTTP
		return true, nil
	})
	if err == nil {
		err = s.Poll(ctx, proc.HTTPReady(s.hc, s.base+"/readyz"))
	}
	if err == nil {
		err = s.Poll(ctx, proc.HTTPReady(s.hc, s.base+"/v2/"))
	}
	if err != nil {
		return nil, s.Fail(fmt.Errorf("not ready: %w", err))
	}
	return s, nil
}

// writeAdminPassword writes a random password to dir/admin-password (mode
// 0600) and returns it and the file's path.
func writeAdminPassword(dir string) (password, path string, err error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	password = hex.EncodeToString(b)
	path = filepath.Join(dir, "admin-password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("write admin password: %w", err)
	}
	return password, path, nil
}

// startDistribution runs CNCF distribution with filesystem storage in dir,
// listening on 127.0.0.1:0, and waits until it answers /v2/. Distribution
// does not report the port it bound (it logs it only at info level, and the
// benchmark runs it at error level like a production deployment would), so
// the harness reads the listening socket of the process from /proc: no port
// is guessed and nothing else can take it in between.
func startDistribution(ctx context.Context, ready time.Duration, name, bin, dir string) (*server, error) {
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := os.WriteFile(cfgPath, []byte(distributionConfig(filepath.Join(dir, "data"))), 0o644); err != nil {
		return nil, fmt.Errorf("write distribution config: %w", err)
	}
	s, err := spawn(ctx, name, bin, dir, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	s.version = proc.VersionOf(ctx, bin, "--version")
	ctx, cancel := context.WithTimeout(ctx, ready)
	defer cancel()
	err = s.Poll(ctx, func() (bool, error) {
		ports, err := proc.ListeningPorts(s.Cmd.Process.Pid)
		if err != nil || len(ports) == 0 {
			return false, err
		}
		if len(ports) > 1 {
			return false, fmt.Errorf("distribution listens on %d ports %v, want one", len(ports), ports)
		}
		s.base = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		return true, nil
	})
	if err == nil {
		err = s.Poll(ctx, proc.HTTPReady(s.hc, s.base+"/v2/"))
	}
	if err != nil {
		return nil, s.Fail(fmt.Errorf("not ready: %w", err))
	}
	return s, nil
}

// distributionConfig is the stock example configuration of distribution
// (filesystem driver, in-memory blob descriptor cache) on loopback, with
// delete enabled, no auth, and only errors logged.
func distributionConfig(root string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  tag:
    concurrencylimit: 8
http:
  addr: 127.0.0.1:0
`, root)
}

// spawn starts bin with args, logging to dir/server.log. The process gets
// SIGTERM when ctx (the whole run's context) ends.
func spawn(ctx context.Context, name, bin, dir string, args ...string) (*server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p, err := proc.Start(name, exec.CommandContext(ctx, bin, args...), filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	return &server{
		Process: p,
		hc:      &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}, nil
}
