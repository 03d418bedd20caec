package registryapi

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// holdHashSlots takes every password hashing slot of e until the test
// ends (or release is called), and makes a request wait only briefly for
// one: the hook that stands for that many hashes running at once.
func holdHashSlots(e *authEnv) (release func()) {
	e.a.hashWait = 20 * time.Millisecond
	for range cap(e.a.hashSlots) {
		e.a.hashSlots <- struct{}{}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for range cap(e.a.hashSlots) {
				<-e.a.hashSlots
			}
		})
	}
	e.t.Cleanup(release)
	return release
}

func TestPasswordChecksBounded(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	if n := cap(e.a.hashSlots); n < 2 {
		t.Fatalf("%d hashing slots, want at least 2", n)
	}
	release := holdHashSlots(e)

	results := make([]result, cap(e.a.hashSlots)+2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = e.do("GET", "/v2/", basic("alice", "wrong"), nil) })
	}
	wg.Wait()
	for i, r := range results {
		e.expect(r, http.StatusTooManyRequests, "TOOMANYREQUESTS")
		if got := r.hdr.Get("Retry-After"); got != "1" {
			t.Fatalf("request %d: Retry-After %q, want 1", i, got)
		}
	}
	// An unknown user waits for a slot too (the dummy check hashes).
	e.expect(e.do("GET", "/v2/", basic("nobody", "wrong"), nil), http.StatusTooManyRequests, "TOOMANYREQUESTS")

	// Refusals for want of a slot are not failed logins.
	release()
	e.expect(e.do("GET", "/v2/", basic("alice", "wrong"), nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect(e.do("GET", "/v2/", basic("alice", testPassword), nil), http.StatusOK, "")
	if n := len(e.a.hashSlots); n != 0 {
		t.Fatalf("%d hashing slots still taken after the requests", n)
	}
}

func TestClientLimitKey(t *testing.T) {
	tests := []struct {
		client, want string
	}{
		{"192.0.2.7", "client:192.0.2.7"},
		{"::ffff:192.0.2.7", "client:192.0.2.7"},
		{"2001:db8:1:2::1", "client:2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:fffe", "client:2001:db8:1:2::/64"},
		{"fe80::1%eth0", "client:fe80::/64"},
		{"2001:db8:1:3::1", "client:2001:db8:1:3::/64"},
		{"not an address", "client:not an address"},
	}
	for _, tt := range tests {
		if got := clientLimitKey(tt.client); got != tt.want {
			t.Errorf("clientLimitKey(%q) = %q, want %q", tt.client, got, tt.want)
		}
	}
}

func TestLoginLimiterIPv6Prefix(t *testing.T) {
	e := newAuthEnv(t) // 5 failures a minute
	e.addUser("bob", false)
	ctx := t.Context()
	// Five failures for five names, from five addresses of one /64.
	for _, c := range []string{"2001:db8:0:7::1", "2001:db8:0:7::2", "2001:db8:0:7:1::3", "2001:db8:0:7:ffff::4", "2001:db8:0:7::5"} {
		if _, err := e.a.login(ctx, "u-"+c, "wrong", c, "test"); toAPIError(err).code != codeUnauthorized {
			t.Fatalf("login from %s: %v, want unauthorized", c, err)
		}
	}
	if _, err := e.a.login(ctx, "bob", testPassword, "2001:db8:0:7:abcd::9", "test"); toAPIError(err).code != codeTooManyRequests {
		t.Fatalf("login from the same /64: %v, want too many requests", err)
	}
	if _, err := e.a.login(ctx, "bob", testPassword, "2001:db8:0:8::1", "test"); err != nil {
		t.Fatalf("login from another /64: %v", err)
	}
}

func TestSignupOfTakenNameDoesNotHash(t *testing.T) {
	e := newAuthEnv(t)
	e.addUser("alice", false)
	e.addOrg("acme", "alice")
	admin := e.session("admin", testPassword)
	e.expect(e.json("PATCH", "/api/v1/settings", admin, map[string]bool{"open_signup": true}), http.StatusOK, "")
	holdHashSlots(e)

	// With every hashing slot taken, a signup that would hash gets 429;
	// taken names are refused before hashing, so they get 409.
	tests := []struct {
		name   string
		status int
	}{
		{"alice", http.StatusConflict},
		{"acme", http.StatusConflict},
		{"carol", http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		r := e.json("POST", "/api/v1/users", "", map[string]any{"username": tt.name, "password": "a-long-password", "email": tt.name + "@example.com"})
		if r.status != tt.status {
			t.Fatalf("signup %s: %d %s, want %d", tt.name, r.status, r.body, tt.status)
		}
	}
}
