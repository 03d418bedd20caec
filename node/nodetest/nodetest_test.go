package nodetest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeEnv makes the test binary act as a stand-in `hubmesh serve`, so the
// harness is tested without building the real node.
const fakeEnv = "NODETEST_FAKE_SERVE"

// fakeCLIEnv makes the test binary act as a stand-in hubmesh CLI that
// prints the credential variables it was given.
const fakeCLIEnv = "NODETEST_FAKE_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		os.Exit(fakeServe(os.Args[1:]))
	}
	if os.Getenv(fakeCLIEnv) == "1" {
		for _, k := range []string{EnvUsername, EnvPassword, EnvToken} {
			fmt.Printf("%s=%s\n", k, os.Getenv(k))
		}
		os.Exit(0)
	}
	Main(m)
}

// fakeServe implements the serve contract the harness relies on: listen,
// write the addr file atomically, answer /readyz, exit 0 on SIGTERM.
func fakeServe(args []string) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(os.Stderr, "fake: want serve")
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "")
	httpAddr := fs.String("http-addr", "", "")
	fs.String("p2p-addr", "", "")
	addrFile := fs.String("addr-file", "", "")
	fs.String("log-format", "", "")
	pwFile := fs.String("admin-password-file", "", "")
	fs.String("join", "", "")
	fs.String("join-token", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.Marshal(Addrs{HTTP: ln.Addr().String(), P2P: []string{"/ip4/127.0.0.1/tcp/1/p2p/fake"}, PeerID: "fake"})
	tmp := *addrFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil || os.Rename(tmp, *addrFile) != nil {
		fmt.Fprintln(os.Stderr, "fake: addr file:", err)
		return 1
	}
	runs, _ := os.ReadFile(filepath.Join(*dataDir, "runs"))
	_ = os.WriteFile(filepath.Join(*dataDir, "runs"), append(runs, 'x'), 0o644)
	fmt.Println("fake: serving on", ln.Addr())
	fmt.Print("fake: a last line without newline")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/runs" {
			b, _ := os.ReadFile(filepath.Join(*dataDir, "runs"))
			_, _ = w.Write(b)
			return
		}
		if r.URL.Path == "/admin-password" {
			if *pwFile == "" {
				http.NotFound(w, r)
				return
			}
			fi, err := os.Stat(*pwFile)
			b, _ := os.ReadFile(*pwFile)
			if err != nil || fi.Mode().Perm() != 0o600 {
				http.Error(w, fmt.Sprintf("password file %s: %v, mode %v", *pwFile, err, fi.Mode()), http.StatusInternalServerError)
				return
			}
			_, _ = w.Write(b)
			return
		}
		if r.URL.Path == "/api/v1/cluster/status" {
			_, _ = fmt.Fprintf(w, `{"id":"fake","leader":"fake","members":[{"id":"fake","role":"voter","leader":true,"http":%q,"state":"alive"}]}`, ln.Addr().String())
			return
		}
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
		}
	})}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return 1
	}
	return 0
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestProcessLifecycle(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HUBMESH_BIN", self)
	p := Start(t, Options{Env: []string{fakeEnv + "=1"}})
	if p.PeerID() != "fake" || len(p.P2PAddrs()) != 1 || !strings.HasPrefix(p.URL(), "http://127.0.0.1:") {
		t.Fatalf("addrs: url %s peer %s p2p %v", p.URL(), p.PeerID(), p.P2PAddrs())
	}
	if got := get(t, p.URL()+"/runs"); got != "x" {
		t.Fatalf("runs %q, want x", got)
	}

	p.Kill()
	if p.Running() || p.ExitCode() != -1 {
		t.Fatalf("after Kill: running %v, exit code %d", p.Running(), p.ExitCode())
	}
	p.Restart() // same data dir
	if got := get(t, p.URL()+"/runs"); got != "xx" {
		t.Fatalf("runs after restart %q, want xx", got)
	}
	p.Restart() // stops the running node first (SIGTERM, exit 0)
	if got := get(t, p.URL()+"/runs"); got != "xxx" {
		t.Fatalf("runs after second restart %q, want xxx", got)
	}
	p.Stop()
	if p.ExitCode() != 0 {
		t.Fatalf("exit code %d after Stop", p.ExitCode())
	}
}

func TestDeclares(t *testing.T) {
	for _, tc := range []struct {
		gomod string
		want  bool
	}{
		{"module github.com/hubmesh/hubmesh\n\ngo 1.26\n", true},
		{"// comment\nmodule \"github.com/hubmesh/hubmesh\"\n", true},
		{"module github.com/hubmesh/hubmesh/v2\n", false},
		{"module example.com/other\n", false},
		{"", false},
	} {
		if got := declares([]byte(tc.gomod), modulePath); got != tc.want {
			t.Errorf("declares(%q) = %v, want %v", tc.gomod, got, tc.want)
		}
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "node", "nodetest")); err != nil {
		t.Fatalf("ModuleRoot %s does not hold node/nodetest: %v", root, err)
	}
}

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "true": true, "1": true, "yes": true} {
		t.Setenv("CI", v)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}
