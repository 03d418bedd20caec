package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hubmesh/hubmesh"
)

// request sends one request with Basic credentials user:password.
func request(t *testing.T, method, url, user, password string, body any) (int, []byte) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// TestAdminBootstrapAndAudit: the first node creates admin from the
// password file, once; a restart keeps the account; a failed and a good
// login reach the audit log through the node's batched flush.
func TestAdminBootstrapAndAudit(t *testing.T) {
	dir := t.TempDir()
	base, stop := startNode(t, dir)

	if code, b := request(t, http.MethodGet, base+"/api/v1/user", adminUser, testAdminPassword, nil); code != http.StatusOK {
		t.Fatalf("admin with the password file: %d %s", code, b)
	}
	if code, _ := request(t, http.MethodGet, base+"/api/v1/user", adminUser, "wrong", nil); code != http.StatusUnauthorized {
		t.Fatalf("admin with a wrong password: %d, want 401", code)
	}
	if code, b := request(t, http.MethodPost, base+"/api/v1/users/login", "", "",
		map[string]string{"username": adminUser, "password": testAdminPassword}); code != http.StatusOK {
		t.Fatalf("login: %d %s", code, b)
	}

	// The audit log shows the failed login once the buffer has flushed.
	waitFor(t, "failed login in the audit log", 10*time.Second, func() bool {
		code, b := request(t, http.MethodGet, base+"/api/v1/audit", adminUser, testAdminPassword, nil)
		return code == http.StatusOK && strings.Contains(string(b), "login.failed")
	})

	stop()
	// A restart with another password file changes nothing: the account
	// exists already.
	base, _ = startNode(t, dir, func(c *Config) { c.AdminPasswordFile = writeTemp(t, "another-password") })
	if code, b := request(t, http.MethodGet, base+"/api/v1/user", adminUser, testAdminPassword, nil); code != http.StatusOK {
		t.Fatalf("admin after restart: %d %s", code, b)
	}
}

// TestGeneratedAdminPasswordLoggedOnce: without a password file the node
// logs a generated password, and it works.
func TestGeneratedAdminPasswordLoggedOnce(t *testing.T) {
	var logs lockedBuffer
	n := &Node{log: newTextLogger(&logs)}
	meta := &fakeBootstrap{}
	if err := n.bootstrapAccounts(t.Context(), meta, ""); err != nil {
		t.Fatal(err)
	}
	if err := n.bootstrapAccounts(t.Context(), meta, ""); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(logs.String(), "password="); got != 1 {
		t.Fatalf("password logged %d times, want once:\n%s", got, logs.String())
	}
	if meta.admin.Name != adminUser || !meta.admin.Admin || meta.admin.PasswordHash == "" {
		t.Fatalf("admin = %+v", meta.admin)
	}
}

type fakeBootstrap struct {
	admin hubmesh.User
	keys  []hubmesh.SigningKey
}

func (f *fakeBootstrap) Bootstrap(_ context.Context, admin hubmesh.User, key hubmesh.SigningKey) error {
	if len(f.keys) > 0 {
		return hubmesh.ErrExists
	}
	f.admin, f.keys = admin, []hubmesh.SigningKey{key}
	return nil
}

func (f *fakeBootstrap) SigningKeys(context.Context) ([]hubmesh.SigningKey, error) {
	return f.keys, nil
}

// TestEventBufferRetries: events a failed flush carried are proposed again,
// in order, and token use keeps the latest time.
func TestEventBufferRetries(t *testing.T) {
	sink := &flakySink{fail: true}
	b := newEventBuffer(sink, "12D3KooWnode", newTextLogger(&lockedBuffer{}))
	b.Audit(hubmesh.AuditEvent{Action: "login"})
	b.Audit(hubmesh.AuditEvent{Action: "login.failed"})
	t0 := time.Unix(100, 0)
	b.TokenUsed("tok", t0)
	b.TokenUsed("tok", t0.Add(-time.Second))
	b.flushAudit(t.Context())
	b.flushTouch(t.Context())
	if len(sink.events) != 0 {
		t.Fatalf("stored %d events through a failing sink", len(sink.events))
	}
	sink.fail = false
	b.flushAudit(t.Context())
	b.flushTouch(t.Context())
	if len(sink.events) != 2 || sink.events[0].Action != "login" || sink.events[1].Action != "login.failed" {
		t.Fatalf("events = %+v", sink.events)
	}
	if sink.events[0].ID >= sink.events[1].ID || sink.events[0].Node == "" {
		t.Fatalf("ids not ordered or node missing: %+v", sink.events)
	}
	if !sink.used["tok"].Equal(t0) {
		t.Fatalf("token last used %v, want %v", sink.used["tok"], t0)
	}
}

type flakySink struct {
	fail   bool
	events []hubmesh.AuditEvent
	used   map[string]time.Time
}

func (s *flakySink) AppendAudit(_ context.Context, evs []hubmesh.AuditEvent) error {
	if s.fail {
		return errors.New("no quorum")
	}
	s.events = append(s.events, evs...)
	return nil
}

func (s *flakySink) TouchTokens(_ context.Context, used map[string]time.Time) error {
	if s.fail {
		return errors.New("no quorum")
	}
	s.used = used
	return nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTextLogger(w *lockedBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
