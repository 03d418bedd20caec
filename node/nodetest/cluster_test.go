package nodetest

import (
	"context"
	"errors"
	"net/http"
	"os"
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
