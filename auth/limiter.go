package auth

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

const (
	// maxLimiterKeys bounds the keys a Limiter tracks; past it the key
	// whose window started first is forgotten.
	maxLimiterKeys = 100_000
	// maxLimiterKeyLen: longer keys are stored as their SHA-256, so a
	// client cannot fill memory with long made-up user names.
	maxLimiterKeyLen = 128
)

// Limiter counts failed logins per key (an account, a client address) in
// fixed windows: the first failure opens a window of the given length,
// and once max failures fall in it, Allow refuses the key until the
// window ends. It lives in memory on one node, tracks at most 100 000
// keys, and is safe for concurrent use. A nil Limiter, or one made with
// max or window <= 0, allows everything.
type Limiter struct {
	max    int
	window time.Duration

	mu      sync.Mutex
	entries map[string]*list.Element // of *limiterEntry
	order   list.List                // by window start, oldest first
}

type limiterEntry struct {
	key      string
	start    time.Time
	failures int
}

// NewLimiter returns a limiter that refuses a key after maxFailures failures
// within window (e.g. 10 per 5 minutes).
func NewLimiter(maxFailures int, window time.Duration) *Limiter {
	return &Limiter{max: maxFailures, window: window, entries: map[string]*list.Element{}}
}

func (l *Limiter) disabled() bool { return l == nil || l.max <= 0 || l.window <= 0 }

// Allow reports whether key may try again at now. When it may not,
// retryAfter is the time until its window ends, rounded up to a whole
// second (at least one), ready for a Retry-After header.
func (l *Limiter) Allow(key string, now time.Time) (retryAfter time.Duration, ok bool) {
	if l.disabled() {
		return 0, true
	}
	key = limiterKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	el := l.entries[key]
	if el == nil {
		return 0, true
	}
	e := el.Value.(*limiterEntry)
	end := e.start.Add(l.window)
	if !now.Before(end) {
		l.remove(el)
		return 0, true
	}
	if e.failures < l.max {
		return 0, true
	}
	d := end.Sub(now)
	return max(time.Second, (d + time.Second - 1).Truncate(time.Second)), false
}

// Fail records a failure of key at now.
func (l *Limiter) Fail(key string, now time.Time) {
	if l.disabled() {
		return
	}
	key = limiterKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if el := l.entries[key]; el != nil {
		e := el.Value.(*limiterEntry)
		if now.Before(e.start.Add(l.window)) {
			e.failures++
			return
		}
		l.remove(el)
	}
	// Forget windows that have ended, then the oldest ones past the bound.
	for front := l.order.Front(); front != nil; front = l.order.Front() {
		e := front.Value.(*limiterEntry)
		if now.Before(e.start.Add(l.window)) && l.order.Len() < maxLimiterKeys {
			break
		}
		l.remove(front)
	}
	l.entries[key] = l.order.PushBack(&limiterEntry{key: key, start: now, failures: 1})
}

// Reset forgets the failures of key (after a successful login).
func (l *Limiter) Reset(key string) {
	if l.disabled() {
		return
	}
	key = limiterKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if el := l.entries[key]; el != nil {
		l.remove(el)
	}
}

func (l *Limiter) remove(el *list.Element) {
	delete(l.entries, el.Value.(*limiterEntry).key)
	l.order.Remove(el)
}

func limiterKey(k string) string {
	if len(k) <= maxLimiterKeyLen {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// keys reports how many keys l tracks (tests).
func (l *Limiter) keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
