package auth

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	const window = 5 * time.Minute
	l := NewLimiter(3, window)
	now := t0

	allow := func(key string, at time.Time, wantOK bool, wantRetry time.Duration) {
		t.Helper()
		d, ok := l.Allow(key, at)
		if ok != wantOK || d != wantRetry {
			t.Fatalf("Allow(%q, t0+%v) = %v, %v; want %v, %v", key, at.Sub(t0), d, ok, wantRetry, wantOK)
		}
	}
	allow("alice", now, true, 0)
	l.Fail("alice", now)
	l.Fail("alice", now.Add(time.Minute))
	allow("alice", now.Add(time.Minute), true, 0)
	l.Fail("alice", now.Add(2*time.Minute))
	// Three failures in the window opened at t0: refused until t0+5m.
	allow("alice", now.Add(2*time.Minute), false, 3*time.Minute)
	allow("alice", now.Add(2*time.Minute+500*time.Millisecond), false, 3*time.Minute) // rounded up
	allow("alice", now.Add(window-time.Millisecond), false, time.Second)              // at least 1 s
	allow("bob", now.Add(2*time.Minute), true, 0)                                     // keys are independent
	// The window ends: allowed again, and the count starts over.
	allow("alice", now.Add(window), true, 0)
	l.Fail("alice", now.Add(window))
	allow("alice", now.Add(window), true, 0)

	// Reset clears a key (a successful login).
	for range 3 {
		l.Fail("carol", now)
	}
	allow("carol", now, false, window)
	l.Reset("carol")
	allow("carol", now, true, 0)
	l.Reset("nobody")

	// Failures after the window restart the count rather than adding up.
	l.Fail("dave", now)
	l.Fail("dave", now.Add(time.Minute))
	l.Fail("dave", now.Add(window+time.Minute))
	l.Fail("dave", now.Add(window+2*time.Minute))
	allow("dave", now.Add(window+2*time.Minute), true, 0)
	l.Fail("dave", now.Add(window+3*time.Minute))
	allow("dave", now.Add(window+3*time.Minute), false, 3*time.Minute)
}

func TestLimiterDisabled(t *testing.T) {
	t.Parallel()
	for _, l := range []*Limiter{nil, NewLimiter(0, time.Minute), NewLimiter(-1, time.Minute), NewLimiter(3, 0)} {
		for range 10 {
			l.Fail("k", t0)
		}
		if d, ok := l.Allow("k", t0); !ok || d != 0 {
			t.Fatalf("disabled limiter %+v refused: %v", l, d)
		}
		l.Reset("k")
	}
}

func TestLimiterLongKeys(t *testing.T) {
	t.Parallel()
	l := NewLimiter(1, time.Minute)
	a := strings.Repeat("a", 10_000)
	l.Fail(a, t0)
	if _, ok := l.Allow(a, t0); ok {
		t.Fatal("long key not limited")
	}
	if _, ok := l.Allow(a+"b", t0); !ok {
		t.Fatal("another long key limited")
	}
	l.mu.Lock()
	for k := range l.entries {
		if len(k) > maxLimiterKeyLen {
			t.Errorf("stored key of %d bytes", len(k))
		}
	}
	l.mu.Unlock()
}

func TestLimiterBound(t *testing.T) {
	t.Parallel()
	l := NewLimiter(1, time.Hour)
	for i := range maxLimiterKeys + 10 {
		l.Fail(fmt.Sprint("k", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := l.keys(); n != maxLimiterKeys {
		t.Fatalf("%d keys tracked, want %d", n, maxLimiterKeys)
	}
	now := t0.Add(time.Minute)
	// The oldest were forgotten, the newest are still limited.
	if _, ok := l.Allow("k0", now); !ok {
		t.Error("oldest key still limited")
	}
	if _, ok := l.Allow(fmt.Sprint("k", maxLimiterKeys+9), now); ok {
		t.Error("newest key forgotten")
	}
	// Ended windows are dropped as new failures arrive.
	later := t0.Add(2 * time.Hour)
	l.Fail("fresh", later)
	if n := l.keys(); n != 1 {
		t.Fatalf("%d keys after every window ended, want 1", n)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	t.Parallel()
	l := NewLimiter(50, time.Minute)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprint("k", i%10)
				l.Fail(key, t0)
				l.Allow(key, t0)
				if i%50 == g {
					l.Reset(key)
				}
			}
		})
	}
	wg.Wait()
	if n := l.keys(); n > 10 {
		t.Fatalf("%d keys", n)
	}
}
