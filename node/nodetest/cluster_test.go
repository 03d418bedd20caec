package nodetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func startFake(t *testing.T) *Process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HUBMESH_BIN", self)
	return Start(t, Options{Env: []string{fakeEnv + "=1"}})
}

func TestPauseResume(t *testing.T) {
	p := startFake(t)
	p.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/runs", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		if err == nil {
			resp.Body.Close()
		}
		t.Fatalf("GET from a paused process: %v, want the deadline to pass", err)
	}
	if !p.Running() {
		t.Fatal("a paused process is not running")
	}
	p.Resume()
	if got := get(t, p.URL()+"/runs"); got != "x" {
		t.Fatalf("runs after Resume %q, want x", got)
	}
	p.Pause()
	p.Stop() // continues the paused process so that it handles SIGTERM
}

func TestStatusAndLeader(t *testing.T) {
	p := startFake(t)
	st, err := p.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m, ok := st.Member("fake")
	if !ok || !m.Leader || m.HTTP != p.Addr() || st.Count("voter", "alive") != 1 || st.Count("nonvoter", "") != 0 {
		t.Fatalf("status %+v", st)
	}
	if _, ok := st.Member("other"); ok {
		t.Fatal("Member found an unknown id")
	}
	if l := Leader(t, []*Process{p}, 10*time.Second); l != p {
		t.Fatalf("Leader = %v, want the fake", l)
	}
	WaitStatus(t, p, 10*time.Second, "one member", func(s Status) bool { return len(s.Members) == 1 })
}

func TestAdminPassword(t *testing.T) {
	p := startFake(t)
	user, pw := p.Admin()
	if user != "admin" || len(pw) != 32 {
		t.Fatalf("Admin() = %q, %q; want admin and a random password", user, pw)
	}
	if got := get(t, p.URL()+"/admin-password"); got != pw+"\n" {
		t.Fatalf("the node read password %q from its file, want %q", got, pw)
	}
	p.Restart() // the file is passed again
	if got := get(t, p.URL()+"/admin-password"); got != pw+"\n" {
		t.Fatalf("after restart the node read %q, want %q", got, pw)
	}
	other := startFake(t)
	if _, opw := other.Admin(); opw == pw {
		t.Fatal("two nodes started separately share a password")
	}
	joined := Join(t, p, "token", Options{Env: []string{fakeEnv + "=1"}})
	if _, jpw := joined.Admin(); jpw != pw {
		t.Fatalf("a joined node's Admin password %q, want its cluster's %q", jpw, pw)
	}
	fixed := Start(t, Options{Env: []string{fakeEnv + "=1"}, AdminPassword: "s3cret"})
	if got := get(t, fixed.URL()+"/admin-password"); got != "s3cret\n" {
		t.Fatalf("Options.AdminPassword: the node read %q", got)
	}
	none := Start(t, Options{Env: []string{fakeEnv + "=1"}, NoAdminPassword: true})
	if _, npw := none.Admin(); npw != "" {
		t.Fatalf("NoAdminPassword: Admin password %q, want none", npw)
	}
	resp, err := http.Get(none.URL() + "/admin-password")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("NoAdminPassword: the node got a password file (%s)", resp.Status)
	}
	env := p.Env()
	if !slices.Contains(env, "HUBMESH_USERNAME=admin") || !slices.Contains(env, "HUBMESH_PASSWORD="+pw) || !slices.Contains(env, "HUBMESH_SERVER="+p.URL()) {
		t.Fatalf("Env() = %q", env)
	}
}

func TestCLICredentials(t *testing.T) {
	p := startFake(t)
	_, pw := p.Admin()
	fake := []string{fakeCLIEnv + "=1"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"--server of a running node", fake, []string{"x", "--server", p.URL()}, "HUBMESH_USERNAME=admin\nHUBMESH_PASSWORD=" + pw + "\n"},
		{"--server=host:port", fake, []string{"x", "--server=" + p.Addr()}, "HUBMESH_USERNAME=admin\nHUBMESH_PASSWORD=" + pw + "\n"},
		{"HUBMESH_SERVER", append(slices.Clone(fake), "HUBMESH_SERVER="+p.URL()+"/"), []string{"x"}, "HUBMESH_USERNAME=admin\nHUBMESH_PASSWORD=" + pw + "\n"},
		{"own credentials win", append(slices.Clone(fake), "HUBMESH_TOKEN=tok"), []string{"x", "--server", p.URL()}, "HUBMESH_USERNAME=\nHUBMESH_PASSWORD=\nHUBMESH_TOKEN=tok\n"},
		{"anonymous on request", append(slices.Clone(fake), "HUBMESH_USERNAME="), []string{"x", "--server", p.URL()}, "HUBMESH_USERNAME=\nHUBMESH_PASSWORD=\n"},
		{"unknown server", fake, []string{"x", "--server", "http://127.0.0.1:1"}, "HUBMESH_USERNAME=\nHUBMESH_PASSWORD=\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := CLI(t, 0, tc.env, tc.args...)
			if res.Code != 0 || !strings.HasPrefix(res.Stdout, tc.want) {
				t.Fatalf("%s; want stdout starting %q", res, tc.want)
			}
		})
	}
	// A stopped node is forgotten.
	addr := p.Addr()
	p.Stop()
	if res := CLI(t, 0, fake, "x", "--server", addr); !strings.HasPrefix(res.Stdout, "HUBMESH_USERNAME=\n") {
		t.Fatalf("CLI against a stopped node: %s; want no credentials", res)
	}
}

func TestDockerConfig(t *testing.T) {
	dir := DockerConfig(t, []string{"127.0.0.1:5000", "node1:5000"}, "alice", "pa:ss")
	fi, err := os.Stat(filepath.Join(dir, "config.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config.json: %v, mode %v; want 0600", err, fi.Mode())
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	want := base64.StdEncoding.EncodeToString([]byte("alice:pa:ss"))
	if len(cfg.Auths) != 2 || cfg.Auths["127.0.0.1:5000"].Auth != want || cfg.Auths["node1:5000"].Auth != want {
		t.Fatalf("config.json %s", b)
	}
}
