package nodetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// AdminUser is the site administrator a node creates when it bootstraps a
// cluster; the harness gives it a password of its own per test.
const AdminUser = "admin"

// Credential variables of the hubmesh CLI. CLI adds the first two for the
// node named by --server unless env sets any of the three.
const (
	EnvUsername = "HUBMESH_USERNAME"
	EnvPassword = "HUBMESH_PASSWORD"
	EnvToken    = "HUBMESH_TOKEN"
)

// adminPasswordFile is the name of the password file in a Process's
// directory.
const adminPasswordFile = "admin-password"

// newPassword returns a random password of 32 hex digits.
func newPassword(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random admin password: %v", err)
	}
	return hex.EncodeToString(b)
}

// Admin returns the user name and password of the cluster's site
// administrator, as the harness set them with --admin-password-file. The
// password is "" when the node was started with NoAdminPassword.
func (p *Process) Admin() (user, password string) {
	return AdminUser, p.opts.AdminPassword
}

// Env returns the environment of a hubmesh CLI run against this node as
// the administrator: HUBMESH_SERVER, HUBMESH_USERNAME and HUBMESH_PASSWORD.
// The server is read at the call, so call Env again after a Restart.
func (p *Process) Env() []string {
	user, pw := p.Admin()
	return []string{"HUBMESH_SERVER=" + p.URL(), EnvUsername + "=" + user, EnvPassword + "=" + pw}
}

// writeAdminPassword writes the password file the node is started with
// (mode 0600, like any secret) and returns its path.
func (p *Process) writeAdminPassword() string {
	p.t.Helper()
	path := filepath.Join(p.dir, adminPasswordFile)
	if err := os.WriteFile(path, []byte(p.opts.AdminPassword+"\n"), 0o600); err != nil {
		p.t.Fatalf("write admin password file: %v", err)
	}
	return path
}

// DockerConfig writes a Docker client configuration directory holding
// config.json with Basic credentials of user for each host (host:port, as
// a reference names the registry), and returns the directory. Point
// DOCKER_CONFIG at it for the docker CLI, crane, regctl and oras; skopeo
// takes the file itself: --authfile <dir>/config.json (or
// REGISTRY_AUTH_FILE). The directory is removed when the test ends.
func DockerConfig(t testing.TB, hosts []string, user, password string) string {
	t.Helper()
	type entry struct {
		Auth string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]entry `json:"auths"`
	}{Auths: map[string]entry{}}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	for _, h := range hosts {
		cfg.Auths[h] = entry{Auth: auth}
	}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatalf("write docker config: %v", err)
	}
	return dir
}

// running maps the HTTP address of every running Process of the test
// binary to it, so that CLI can find the node a --server flag names.
var running struct {
	mu    sync.Mutex
	procs map[string]*Process
}

func registerRunning(addr string, p *Process) {
	running.mu.Lock()
	defer running.mu.Unlock()
	if running.procs == nil {
		running.procs = map[string]*Process{}
	}
	running.procs[addr] = p
}

func unregisterRunning(addr string, p *Process) {
	running.mu.Lock()
	defer running.mu.Unlock()
	if running.procs[addr] == p {
		delete(running.procs, addr)
	}
}

// processAt returns the running Process whose HTTP address server (a URL
// or host:port) names, or nil.
func processAt(server string) *Process {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil
	}
	running.mu.Lock()
	defer running.mu.Unlock()
	return running.procs[u.Host]
}

// withAdmin returns env plus the administrator's credentials of the node
// that args (--server) or env (HUBMESH_SERVER) name, when the harness runs
// that node and env carries no credentials of its own. Pass
// "HUBMESH_USERNAME=" in env to run a command anonymously.
func withAdmin(env, args []string) []string {
	server := ""
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case EnvUsername, EnvPassword, EnvToken:
			return env
		case "HUBMESH_SERVER":
			server = v
		}
	}
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--server="); ok {
			server = v
		} else if a == "--server" && i+1 < len(args) {
			server = args[i+1]
		}
	}
	if server == "" {
		return env
	}
	p := processAt(server)
	if p == nil || p.opts.AdminPassword == "" {
		return env
	}
	user, pw := p.Admin()
	return append(append([]string(nil), env...), EnvUsername+"="+user, EnvPassword+"="+pw)
}
