package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// offlineServer serves refuseWritesOffline around a handler that answers
// 204, on a node that has served and has had no leader for longer than
// offlineGrace when offline is set (and has a leader otherwise).
func offlineServer(t *testing.T, offline bool, h2 bool) *httptest.Server {
	t.Helper()
	start := time.Now()
	var calls atomic.Int64
	n := &Node{leaders: &leaderWatch{
		leader: func() string {
			if offline {
				return ""
			}
			return "n1"
		},
		// Each look is a grace period later than the one before, so the
		// second look (the request's) sees the node offline for long
		// enough.
		now: func() time.Time { return start.Add(time.Duration(calls.Add(1)) * offlineGrace) },
	}}
	n.ready.Store(true)
	n.leaders.check() // the leader is lost from here
	srv := httptest.NewUnstartedServer(n.refuseWritesOffline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func checkOfflineBody(t *testing.T, body []byte) {
	t.Helper()
	var got struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &got); err != nil || len(got.Errors) != 1 ||
		got.Errors[0].Code != "UNAVAILABLE" || got.Errors[0].Message != offlineReason {
		t.Fatalf("body %q (%v), want one UNAVAILABLE error with the offline reason", body, err)
	}
}

// TestOfflineStatusLine checks the raw response to a write on an offline
// node: the reason is in the status line (the docker CLI shows only that
// for a 5xx), the headers and JSON body are complete, and the connection
// is closed after it.
func TestOfflineStatusLine(t *testing.T) {
	t.Parallel()
	srv := offlineServer(t, true, false)
	conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "POST /v2/alice/app/blobs/uploads/ HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if want := "HTTP/1.1 503 Offline (" + offlineReason + ")\r\n"; err != nil || line != want {
		t.Fatalf("status line %q (%v), want %q", line, err, want)
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	checkOfflineBody(t, body)
	for k, want := range map[string]string{
		"Content-Type": "application/json", "Retry-After": "5",
		"Docker-Distribution-Api-Version": "registry/2.0",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !resp.Close { // Connection: close (ReadResponse consumes the header)
		t.Error("response does not close the connection")
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the response: %q, %v; want EOF", rest, err)
	}
}

// TestOfflineRefusesWrites checks, through a Go HTTP client as the docker
// CLI uses, which requests are refused and what status they see: the
// reason phrase on HTTP/1.1 (even with a request body the node does not
// read), the standard one on HTTP/2 where the connection cannot be
// hijacked.
func TestOfflineRefusesWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		offline  bool
		h2       bool
		method   string
		body     []byte
		status   string // "" for 204, passed through
		protoMaj int
	}{
		{name: "write offline", offline: true, method: http.MethodPost, status: "503 Offline (" + offlineReason + ")", protoMaj: 1},
		{name: "write with body offline", offline: true, method: http.MethodPatch, body: bytes.Repeat([]byte("x"), 64<<10), status: "503 Offline (" + offlineReason + ")", protoMaj: 1},
		{name: "write offline over HTTP/2", offline: true, h2: true, method: http.MethodPut, status: "503 Service Unavailable", protoMaj: 2},
		{name: "read offline", offline: true, method: http.MethodGet, protoMaj: 1},
		{name: "write online", method: http.MethodPost, protoMaj: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := offlineServer(t, tc.offline, tc.h2)
			req, err := http.NewRequest(tc.method, srv.URL+"/v2/alice/app/blobs/uploads/", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			c := srv.Client()
			c.Timeout = 10 * time.Second
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != tc.protoMaj {
				t.Errorf("protocol %s, want major %d", resp.Proto, tc.protoMaj)
			}
			if tc.status == "" {
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("status %s, want the handler's 204", resp.Status)
				}
				return
			}
			if resp.Status != tc.status || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %q, want %q", resp.Status, tc.status)
			}
			if resp.Header.Get("Retry-After") != "5" {
				t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
			}
			checkOfflineBody(t, body)
		})
	}
}
